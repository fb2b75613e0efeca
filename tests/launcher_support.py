"""What the launcher tests share: small real datasets and a quick configuration."""
from __future__ import annotations

import gzip
from pathlib import Path

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
