"""What the launcher tests share: small real datasets and a quick configuration."""
from __future__ import annotations

import gzip
from pathlib import Path

import jax.numpy as jnp

import run_experiment as launcher
from loaders.build_dataset import build_dataset
from loaders.sample import SAMPLE_CSV

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parent


def quick_config(tmp_path: Path, dataset: Path, **overrides) -> dict:
    """The tiny network on a sample dataset: a few seconds per run on 2 cores."""
    config = dict(network="tiny_net:tiny", dataset=str(dataset), savename=str(tmp_path / "run"),
                  registry=str(tmp_path / "experiments.csv"), batch_size=50, n_hidden=[8],
                  n_epochs=2, anneal_epochs=1, bn_batches=3, learning_rate=0.05,
                  progress=False)
    config.update(overrides)
    return config


def train_teacher(folder: Path, dataset: Path, **overrides) -> Path:
    """A small trained model to distil from (its run folder): the tiny network on random
    40x40 windows, so on the mirror variant it sees ten views of an image (the centre and
    four corner windows of the image and of its mirror)."""
    settings = dict(val=False, n_epochs=2, anneal_epochs=0, augment="crop_to:40")
    launcher.run_experiment(**quick_config(folder, dataset, **{**settings, **overrides}))
    return folder / "run"


def build_public_private_dataset(folder: Path) -> Path:
    """The sample with every other PublicTest row relabelled PrivateTest, as mirror."""
    header, *rows = gzip.decompress(SAMPLE_CSV.read_bytes()).decode().splitlines()
    public_seen = 0
    relabelled = []
    for row in rows:
        if row.endswith(",PublicTest"):
            public_seen += 1
            if public_seen % 2 == 0:
                row = row[: -len("PublicTest")] + "PrivateTest"
        relabelled.append(row)
    csv = folder / "public_private.csv"
    csv.write_text("\n".join([header, *relabelled]) + "\n")
    return build_dataset(csv, "mirror", folder / "public_private_mirror.h5")


def sabotage_train_step(experiment, at_call: int, sabotage) -> None:
    """Replace the experiment's compiled train step by one that behaves until call number
    ``at_call`` (counting from 1), where ``sabotage(real_train, state, x, y, targets)`` runs in
    its place: a failure, a poisoned cost, a stop request."""
    real_train, calls = experiment.steps.train, [0]

    def train(state, x, y, targets=None):
        calls[0] += 1
        if calls[0] == at_call:
            return sabotage(real_train, state, x, y, targets)
        return real_train(state, x, y, targets)

    experiment.steps.train = train


def nan_cost(real_train, *arguments):
    state, metrics = real_train(*arguments)
    return state, {**metrics, "cost": jnp.asarray(jnp.nan)}
