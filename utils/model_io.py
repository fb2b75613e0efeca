"""Saved models and checkpoints: msgpack files written atomically, read back with checks.

A model file holds the parameters, the BN statistics and a JSON header (the full launcher
configuration, the history, the results, the code version) so that it rebuilds its own network.
A checkpoint additionally holds the whole ``TrainState`` (optimiser state, step, RNG) and the
launcher's progress, so an interrupted run goes on exactly where it stopped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from flax import serialization

from utils.network import Network
from utils.networks import get_network
from utils.parallel import host_copy

MODEL_FORMAT = "fer-jax model"
CHECKPOINT_FORMAT = "fer-jax checkpoint"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used (names the file and the reason)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def to_host(tree):
    return jax.tree_util.tree_map(host_copy, serialization.to_state_dict(tree))


def save(path: Path, kind: str, header: dict, trees: dict) -> None:
    payload = {"format": kind, "format_version": FORMAT_VERSION,
               "header": json.dumps(header, default=str)}
    payload.update({name: to_host(tree) for name, tree in trees.items()})
    atomic_write(path, serialization.msgpack_serialize(payload))


def load(path: Path, kind: str) -> tuple[dict, dict]:
    """(header, raw trees) of a file of the given kind, or a ModelFileError saying why not."""
    path = Path(path)
    if path.is_dir():
        path = path / ("model.msgpack" if kind == MODEL_FORMAT else "checkpoint.msgpack")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise ModelFileError(f"{path}: not a {kind} file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ModelFileError(f"{path}: not a {kind} file (format {found!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: {kind} format version {payload.get('format_version')} "
                             f"but this code reads version {FORMAT_VERSION}; retrain or use "
                             f"the matching code version")
    header = json.loads(payload.pop("header"))
    return header, payload


def restore_into(target, raw, path, what: str):
    """``raw`` (a state dict) as the structure of ``target``, refusing any shape mismatch."""
    target_leaves = jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(target))[0]
    try:
        raw_leaves = jax.tree_util.tree_flatten_with_path(raw)[0]
    except Exception:  # noqa: BLE001 - anything unflattenable is a foreign file
        raw_leaves = []
    found = {jax.tree_util.keystr(p): np.shape(v) for p, v in raw_leaves}
    for key_path, leaf in target_leaves:
        name = jax.tree_util.keystr(key_path)
        if name not in found:
            raise ModelFileError(f"{path}: {what} has no {name}: it was saved for a different "
                                 f"architecture")
        if tuple(found[name]) != tuple(np.shape(leaf)):
            raise ModelFileError(f"{path}: {what}{name} has shape {tuple(found[name])} but the "
                                 f"network expects {tuple(np.shape(leaf))}: a different "
                                 f"architecture or configuration")
    if len(found) != len(target_leaves):
        raise ModelFileError(f"{path}: {what} has {len(found)} arrays, the network "
                             f"{len(target_leaves)}: a different architecture")
    return serialization.from_state_dict(target, raw)


class LoadedModel(NamedTuple):
    network: Network
    params: object
    bn_state: object
    header: dict  # config, network options, class names, history, results, code version


def load_model(path) -> LoadedModel:
    """A saved model (a model.msgpack or its run folder) with the network it was trained as."""
    header, trees = load(path, MODEL_FORMAT)
    try:
        network = get_network(header["config"]["network"], **header["network_options"])
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{path}: cannot rebuild its network ({err})") from None
    params, bn_state = jax.eval_shape(network.init, jax.random.key(0))
    params = restore_into(params, trees.get("params", {}), path, "params")
    bn_state = restore_into(bn_state, trees.get("bn_state", {}), path, "bn_state")
    return LoadedModel(network, params, bn_state, header)
