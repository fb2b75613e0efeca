"""The HDF5 dataset format: writing it safely and reading it back.

Layout (the README's Datasets section and docs/datasets.md describe it in full):
    /train        images uint8 [N,H,W], labels int32, source_index int32, variant_index int32
    /train_noval  the first rows of /train (every variant of the non-validation sources)
    /val          the remaining rows of /train (every variant of the validation sources)
    /test         images, labels, usage uint8 (codes into the attribute usage_names)
    /test_aug     images, labels, usage, source_index int32 (row of /test), variant_index int32
/train_noval and /val are HDF5 virtual datasets over /train, so their pixels are stored once and
h5py reads them like any dataset. /val is absent when the file has no validation sources, and
/test_aug is absent for the raw variant (it has one variant only). A file built with FER+ labels
(root attribute label_source = "ferplus") also has, in every split, votes uint8 [N,10] and
targets float32 [N,8] (loaders.ferplus).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from loaders.sources import TEST_USAGES, DatasetError

FORMAT_VERSION = 1
SPLITS = ("train", "train_noval", "val", "test", "test_aug")


# ---------------------------------------------------------------- writing

@contextmanager
def atomic_output(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary file beside `out` that replaces `out` only when the block succeeds.

    The checks that can fail cheaply (output exists, folder missing or unwritable) run before
    the caller does any work. On any exception, KeyboardInterrupt included, the temporary file
    is removed, so a failed build never leaves a partial output.
    """
    out = Path(out)
    if out.is_dir():
        raise DatasetError(f"{out}: is a folder, not an output file name")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: already exists (--overwrite / overwrite=True replaces it)")
    folder = out.parent
    if not folder.is_dir():
        raise DatasetError(f"{out}: cannot write, the folder {folder} does not exist")
    try:
        handle, temporary_name = tempfile.mkstemp(prefix=out.name + ".tmp", dir=folder)
    except OSError as error:
        raise DatasetError(f"{out}: cannot write ({error.strerror or error})") from None
    os.close(handle)
    temporary = Path(temporary_name)
    # mkstemp makes the file private (0600); the output gets the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        try:
            os.replace(temporary, out)
        except OSError as error:
            raise DatasetError(f"{out}: cannot write ({error.strerror or error})") from None
    finally:
        temporary.unlink(missing_ok=True)


def set_attributes(node: h5py.Group | h5py.Dataset, attributes: dict) -> None:
    for key, value in attributes.items():
        node.attrs[key] = value


def create_split(file: h5py.File, name: str, image_shape: tuple[int, int],
                 columns: dict[str, np.ndarray], description: str) -> h5py.Dataset:
    """A split group whose per-image columns (labels, ...) are written at once; its `images`
    dataset is returned empty, to be filled in blocks by the caller."""
    group = file.create_group(name)
    group.attrs["description"] = description
    n_images = len(columns["labels"])
    for key, values in columns.items():
        group.create_dataset(key, data=values, track_times=False)
    return group.create_dataset("images", shape=(n_images, *image_shape), dtype=np.uint8,
                                track_times=False)


def create_view_split(file: h5py.File, name: str, of: str, start: int, stop: int,
                      description: str) -> None:
    """A split made of rows start:stop of split `of`: a virtual dataset per array, no copy."""
    group = file.create_group(name)
    group.attrs.update({"description": description, "view_of": of, "start": start, "stop": stop})
    for key, dataset in file[of].items():
        layout = h5py.VirtualLayout(shape=(stop - start, *dataset.shape[1:]), dtype=dataset.dtype)
        # "." is HDF5's name for "this same file", which stays right when the file is renamed.
        layout[:] = h5py.VirtualSource(".", dataset.name, shape=dataset.shape)[start:stop]
        group.create_virtual_dataset(key, layout)


def usage_codes(usage: np.ndarray) -> np.ndarray:
    """uint8 codes of test usages: 0 = PublicTest, 1 = PrivateTest (the `usage_names` attribute)."""
    codes = np.empty(len(usage), np.uint8)
    for code, name in enumerate(TEST_USAGES):
        codes[usage == name] = code
    return codes


# ---------------------------------------------------------------- reading

def open_dataset(path: str | os.PathLike) -> h5py.File:
    """The dataset file opened for reading, with clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 dataset file ({error})") from None
    if "format_version" not in file.attrs:
        file.close()
        raise DatasetError(f"{path}: not a dataset built by loaders.build_dataset "
                           f"(no format_version attribute)")
    return file


def split_group(file: h5py.File, split: str) -> h5py.Group:
    if split not in file or not isinstance(file[split], h5py.Group):
        available = ", ".join(name for name in SPLITS if name in file)
        raise DatasetError(f"{file.filename}: no split {split!r} (this file has {available})")
    return file[split]


def read_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,H,W], labels int32 [N]) of a split, read whole."""
    with open_dataset(path) as file:
        group = split_group(file, split)
        return group["images"][...], group["labels"][...]


def read_usage(path: str | os.PathLike, split: str = "test") -> np.ndarray:
    """Each image's test split name (PublicTest or PrivateTest) for `test` or `test_aug`."""
    with open_dataset(path) as file:
        group = split_group(file, split)
        names = np.array([str(name) for name in group.attrs["usage_names"]])
        return names[group["usage"][...]]


def read_test_aug_source_index(path: str | os.PathLike) -> np.ndarray:
    """int32 [N_aug]: for each test_aug image, the row of /test it was made from."""
    with open_dataset(path) as file:
        return split_group(file, "test_aug")["source_index"][...]


def read_targets(path: str | os.PathLike, split: str) -> np.ndarray:
    """float32 [N, K]: each image's training target (FER+ files: its label mode's target)."""
    return _read_ferplus_column(path, split, "targets")


def class_frequencies(path: str | os.PathLike, split: str) -> np.ndarray:
    """float64 [K]: images per class in a split; where the split stores training targets
    (FER+), the sum of their distributions (a soft count)."""
    with open_dataset(path) as file:
        group = split_group(file, split)
        if "targets" in group:
            return group["targets"][...].astype(np.float64).sum(axis=0)
        n_classes = len(file.attrs["class_names"])
        return np.bincount(group["labels"][...], minlength=n_classes).astype(np.float64)


def read_votes(path: str | os.PathLike, split: str) -> np.ndarray:
    """uint8 [N, 10]: each image's raw FER+ votes (the 8 classes, unknown, not a face)."""
    return _read_ferplus_column(path, split, "votes")


def _read_ferplus_column(path: str | os.PathLike, split: str, name: str) -> np.ndarray:
    with open_dataset(path) as file:
        group = split_group(file, split)
        if name not in group:
            raise DatasetError(f"{path}: split {split!r} has no {name} (only files built with "
                               f"FER+ labels, --ferplus, store votes and targets)")
        return group[name][...]


def dataset_info(path: str | os.PathLike) -> dict:
    """The root attributes as plain Python values, plus `split_sizes` {split: n_images} and
    `n_classes` (the length of class_names: 7 for FER2013, 8 for FER+). A FER+ file's
    attributes include label_source, label_mode and the drop counts (loaders.ferplus)."""
    with open_dataset(path) as file:
        info = {key: _plain(value) for key, value in file.attrs.items()}
        info["split_sizes"] = {name: len(file[name]["labels"]) for name in SPLITS if name in file}
    info["n_classes"] = len(info["class_names"])
    return info


def _plain(value):
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
