"""A dataset file checked before a run trusts it, and what makes it the same dataset.

``verify_dataset`` refuses, with the file and split named, a file whose splits lack their
images or labels, disagree in length, or hold a label outside the file's own classes (its
``class_names``: 7 for FER2013, 8 for FER+), and returns a checksum of each split's labels.
``dataset_identity`` is what a resumed run compares: every root attribute that defines the
data (source checksum, seed, variant, validation count, label mode...), the split sizes and
the label checksums, but not the file's path, nor attributes that only describe the build.
``refuse_output_over_input`` keeps a build from replacing its own source.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from loaders.hdf5 import SPLITS, open_dataset
from loaders.sources import DatasetError

# Root attributes that describe how or when a file was built, not what it holds: the same
# data built from a renamed copy of its source, or at another time, is the same dataset.
BUILD_DESCRIPTION = ("builder", "source_name", "ferplus_name")
BUILD_DESCRIPTION_SUFFIXES = ("_seconds", "_time", "_at")
REBUILD = "rebuild it with python -m loaders.build_dataset"


def _split_arrays(path: Path, group: h5py.Group, split: str) -> tuple[np.ndarray, int]:
    """(labels, number of images) of a split that has both, in equal numbers."""
    for name in ("images", "labels"):
        if not isinstance(group.get(name), h5py.Dataset):
            raise DatasetError(f"{path}: split {split!r} has no {name}: the file is incomplete "
                               f"or was not written by loaders.build_dataset; {REBUILD}")
    labels, n_images = group["labels"][...], len(group["images"])
    if len(labels) != n_images:
        raise DatasetError(f"{path}: split {split!r} has {n_images} images but {len(labels)} "
                           f"labels; {REBUILD}")
    return labels, n_images


def _check_labels(path: Path, split: str, labels: np.ndarray, class_names: list) -> None:
    n_classes = len(class_names)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        rows = "1 row is" if bad.size == 1 else f"{bad.size} rows are"
        raise DatasetError(f"{path}: split {split!r}, row {bad[0]}: label {labels[bad[0]]}, but "
                           f"the file's class_names has {n_classes} classes, so labels must be "
                           f"0-{n_classes - 1} ({rows} not); {REBUILD}")


def verify_dataset(path: str | os.PathLike) -> dict[str, str]:
    """{split: sha256 of its labels}, once every split is whole and every label valid."""
    path = Path(path)
    with open_dataset(path) as file:
        class_names = list(file.attrs.get("class_names", []))
        if not class_names:
            raise DatasetError(f"{path}: no class_names attribute, so its labels cannot be "
                               f"checked; {REBUILD}")
        digests = {}
        for split in SPLITS:
            if split not in file:
                continue
            if not isinstance(file[split], h5py.Group):
                raise DatasetError(f"{path}: {split!r} is not a split group; {REBUILD}")
            labels, _ = _split_arrays(path, file[split], split)
            _check_labels(path, split, labels, class_names)
            digests[split] = hashlib.sha256(labels.astype("<i8").tobytes()).hexdigest()
    return digests


def describes_the_build(attribute: str) -> bool:
    return attribute in BUILD_DESCRIPTION or attribute.endswith(BUILD_DESCRIPTION_SUFFIXES)


def dataset_identity(info: dict) -> dict:
    """What makes two files the same dataset: ``info`` is ``loaders.hdf5.dataset_info`` with
    ``labels_sha256`` (``verify_dataset``) added, as the launcher's run setup makes it."""
    return {k: v for k, v in info.items() if not describes_the_build(k)}


def refuse_output_over_input(out: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """A DatasetError when ``out`` is one of the build's own input files (same file, by any
    path or link): --overwrite would replace what it is built from."""
    out = Path(out)
    for source in inputs:
        if source is not None and out.exists() and Path(source).exists() \
                and os.path.samefile(out, source):
            raise DatasetError(f"{out}: is the build's own input {source}; writing it would "
                               f"replace what the dataset is built from; give --out another "
                               f"file name")
