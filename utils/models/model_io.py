"""Saved models and checkpoints: msgpack files written atomically, read back with checks.

A model file holds the parameters, the BN statistics and a JSON header (the full launcher
configuration, the history, the results, the code version) so that it rebuilds its own network.
A checkpoint additionally holds the whole ``TrainState`` (optimiser state, step, RNG) and the
launcher's progress, so an interrupted run goes on exactly where it stopped.

Format version 2 (written since checksums came in): a msgpack map of ``format``,
``format_version``, ``sha256`` and ``contents``: msgpack bytes of the header (JSON) and the
trees. The checksum covers the format, the version and the contents' bytes as stored, and is
checked on every load before the contents are unpacked, so a damaged file is refused, never
used, and the check does not depend on msgpack re-encoding anything the same way. Version 1
files (header and trees in the top-level map, no checksum: every model saved before then)
are still read as they always were.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import msgpack
import numpy as np
from flax import serialization

from utils.nn.network import Network
from utils.models.networks import get_network
from utils.support.parallel import host_copy
from utils.support.safe_files import atomic_write

MODEL_FORMAT = "fer-jax model"
CHECKPOINT_FORMAT = "fer-jax checkpoint"
FORMAT_VERSION = 2
UNCHECKED_VERSION = 1  # read as before: no checksum to verify


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used (names the file and the reason)."""


MISMATCH = ("damaged: its contents do not match the checksum saved with it (a bad disk block, "
            "an interrupted copy or an edit)")


class DamagedFile(ModelFileError):
    """A file that is damaged (or unreadable); it is never used, nor removed."""

    def __init__(self, path: Path, what: str = MISMATCH,
                 advice: str = "restore it from a copy or train it again"):
        super().__init__(f"{path}: {what}, so it is not used and is left as it is; {advice}")
        self.path, self.what = path, what


def to_host(tree):
    return jax.tree_util.tree_map(host_copy, serialization.to_state_dict(tree))


def _checksum(kind, version, contents: bytes) -> str:
    digest = hashlib.sha256(f"{kind}\0{version}\0".encode())
    digest.update(contents)
    return digest.hexdigest()


def save(path: Path, kind: str, header: dict, trees: dict, *,
         keep_previous: Path | None = None) -> None:
    """Write the file atomically; keep_previous: the name the file it replaces moves to."""
    contents = serialization.msgpack_serialize(
        {"header": json.dumps(header, default=str),
         **{name: to_host(tree) for name, tree in trees.items()}})
    payload = {"format": kind, "format_version": FORMAT_VERSION,
               "sha256": _checksum(kind, FORMAT_VERSION, contents), "contents": contents}
    # Plain msgpack keeps this order (flax's would sort the keys): the small map comes first.
    atomic_write(path, msgpack.packb(payload), keep_previous=keep_previous)


def _read_payload(path: Path, kind: str) -> dict:
    """The file's top-level map, its contents verified and unpacked when it has a checksum."""
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise DamagedFile(path, f"not a {kind} file, or a damaged one ({type(err).__name__}: "
                                f"{err})") from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path}: not a {kind} file")
    if "contents" not in payload and "sha256" not in payload:
        if payload.get("format_version") == FORMAT_VERSION:
            raise DamagedFile(path)  # a version-2 file whose checksum or contents are gone
        return payload  # version 1 (or another version, which load() names)
    contents = payload.get("contents")
    if not (isinstance(contents, bytes) and payload.get("sha256") == _checksum(
            payload.get("format"), payload.get("format_version"), contents)):
        raise DamagedFile(path)  # checked before a byte of the contents is believed
    return {k: v for k, v in payload.items() if k not in ("sha256", "contents")} | \
        serialization.msgpack_restore(contents)


def file_of(path, kind: str = MODEL_FORMAT) -> Path:
    """The file a path names: itself, or in a run folder its model (or checkpoint)."""
    path = Path(path)
    if path.is_dir():
        return path / ("model.msgpack" if kind == MODEL_FORMAT else "checkpoint.msgpack")
    return path


def load(path: Path, kind: str) -> tuple[dict, dict]:
    """(header, raw trees) of a file of the given kind, or a ModelFileError saying why not."""
    path = file_of(path, kind)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    payload = _read_payload(path, kind)
    if payload.get("format") != kind:
        raise ModelFileError(f"{path}: not a {kind} file (format {payload.get('format')!r})")
    if payload.get("format_version") not in (FORMAT_VERSION, UNCHECKED_VERSION):
        raise ModelFileError(f"{path}: {kind} format version {payload.get('format_version')} "
                             f"but this code reads versions {UNCHECKED_VERSION} and "
                             f"{FORMAT_VERSION}; retrain or use the matching code version")
    header = json.loads(payload.pop("header"))
    del payload["format"], payload["format_version"]
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
