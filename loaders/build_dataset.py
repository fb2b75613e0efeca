"""Build one of the thesis's offline-augmented FER2013 datasets as an HDF5 file.

    python -m loaders.build_dataset SOURCE --variant {raw,mirror,crop5,variant14} --out FILE.h5
        [--ferplus fer2013new.csv [--label-mode {majority,probability,crossentropy,multi_target}]]
        [--val-sources N] [--seed S] [--drop-blank] [--skip-bad-rows] [--overwrite] [--quiet]

SOURCE is a Kaggle fer2013.csv, the same gzip-compressed, or a folder with train/<class>/ and
test/<class>/ image folders. With --ferplus the images take Microsoft's FER+ labels instead of
FER2013's (8 classes; loaders.ferplus). Errors print `error: <message>` and exit with status 2;
the output is written to a temporary file and only renamed into place once complete.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
from tqdm import tqdm

from loaders import hdf5
from loaders.augment import VARIANTS, Variant, get_variant
from loaders.ferplus import LABEL_MODES, drop_summary, ferplus_labelling
from loaders.integrity import refuse_output_over_input
from loaders.sources import IMAGE_SIZE, TEST_USAGES, DatasetError, Labelling, SourceData, \
    read_source

THESIS_TRAINING_SOURCES = 28709
# The thesis's validation sources per variant (chapter 5.2): mirror 7,418 = 3709 x 2 images,
# crop5 30,000 = 3000 x 10, variant14 40,180 = 2870 x 14; raw follows mirror.
THESIS_VAL_SOURCES = {"raw": 3709, "mirror": 3709, "crop5": 3000, "variant14": 2870}
# Source images augmented per block: bounds memory (variant14: 1024 x 14 x 42 x 42 = 25 MB).
BLOCK_SOURCES = 1024

logger = logging.getLogger(__name__)


def default_val_sources(variant: str, n_training_sources: int) -> int:
    """The thesis's count for the variant, scaled to the number of training sources."""
    return round(THESIS_VAL_SOURCES[variant] * n_training_sources / THESIS_TRAINING_SOURCES)


def stratified_validation(labels: np.ndarray, n_val: int, seed: int) -> np.ndarray:
    """Sorted indices of `n_val` sources, chosen per class in proportion to class frequency.

    Each class gets floor(n_val * count / total) sources; the sources left over go one each to
    the classes with the largest remainders (ties to the lower class number). Within a class the
    choice is numpy's default_rng(seed).choice without replacement, classes in order 0, 1, ...
    up to the largest label (any number of classes: 7 for FER2013, 8 for FER+).
    """
    counts = np.bincount(labels)
    total = int(counts.sum())
    per_class, remainders = np.divmod(n_val * counts, total)
    per_class[np.argsort(-remainders, kind="stable")[:n_val - int(per_class.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=count, replace=False)
              for label, count in enumerate(per_class)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def is_blank(images: np.ndarray) -> np.ndarray:
    """True for images whose pixels all have one value (FER2013 has a dozen black frames)."""
    flat = images.reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def build_dataset(source: str | os.PathLike, variant: str, out: str | os.PathLike, *,
                  val_sources: int | None = None, seed: int = 0, drop_blank: bool = False,
                  overwrite: bool = False, skip_bad_rows: bool = False, progress: bool = False,
                  ferplus: str | os.PathLike | None = None,
                  label_mode: str | None = None) -> Path:
    """Build the `variant` dataset of `source` into the HDF5 file `out` and return its path.

    val_sources: training source images held out for validation (all their variants go to
    /val, none to /train_noval); None takes the thesis's count scaled to the source
    (`default_val_sources`), 0 builds no /val. drop_blank leaves out constant images from
    training and test alike. ferplus: FER+ labels (fer2013new.csv) for the rows of a CSV
    source, applied in `label_mode` (default majority; see loaders.ferplus). Raises
    DatasetError for any bad input or unwritable output; no file is left at `out` (nor a
    temporary one beside it) unless the build succeeds.
    """
    spec = get_variant(variant)
    _check_options(source, val_sources, seed, skip_bad_rows, ferplus, label_mode)
    out = Path(out)
    refuse_output_over_input(out, source)
    with hdf5.atomic_output(out, overwrite=overwrite) as temporary:
        data = read_source(source, skip_bad_rows=skip_bad_rows, progress=progress)
        if data.skipped:
            logger.warning("skipped %d bad rows or images; the first: %s",
                           len(data.skipped), data.skipped[0])
        labelling = (Labelling.of(data) if ferplus is None
                     else ferplus_labelling(ferplus, data, source, label_mode or "majority"))
        rows = _usable_rows(source, data, labelling.keep, drop_blank)
        n_val = _validation_count(variant, val_sources, len(rows.training))
        val_positions = stratified_validation(labelling.labels[rows.training], n_val, seed)
        attributes = _root_attributes(spec, data, labelling, rows, seed=seed, n_val=n_val,
                                      val_sources_given=val_sources is not None,
                                      drop_blank=drop_blank)
        try:
            with h5py.File(temporary, "w") as file:
                hdf5.set_attributes(file, attributes)
                _write_training(file, spec, data.images, labelling, rows, val_positions,
                                progress)
                _write_test(file, spec, data, labelling, rows.test, progress)
        except OSError as error:
            raise DatasetError(f"{out}: cannot write ({error})") from None
    return out


def _root_attributes(spec: Variant, data: SourceData, labelling: Labelling, rows: "_SourceRows",
                     *, seed: int, n_val: int, val_sources_given: bool, drop_blank: bool) -> dict:
    return {
        "format_version": hdf5.FORMAT_VERSION,
        "builder": "loaders.build_dataset",
        "variant": spec.name,
        "n_variants": spec.n_variants,
        "variant_names": list(spec.variant_names),
        "image_size": [spec.image_size, spec.image_size],
        "source_image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "class_names": list(labelling.class_names),
        "source_name": data.name,
        "source_kind": data.kind,
        "source_sha256": data.sha256,
        "seed": seed,
        "val_sources": n_val,
        "val_sources_rule": "given" if val_sources_given else "thesis count scaled",
        "n_training_sources": len(rows.training),
        "n_test_sources": len(rows.test),
        "drop_blank": drop_blank,
        "n_blank_dropped_training": rows.n_blank_training,
        "n_blank_dropped_test": rows.n_blank_test,
        "n_bad_rows_skipped": len(data.skipped),
        **labelling.attributes,
    }


def _check_options(source, val_sources, seed, skip_bad_rows, ferplus, label_mode) -> None:
    """The checks that need no data, so that a bad call fails before the source is read."""
    for name, value in (("val_sources", val_sources), ("seed", seed)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
            raise DatasetError(f"{name} must be a whole number >= 0, got {value!r}")
    if ferplus is None:
        if label_mode is not None:
            raise DatasetError("a label mode (--label-mode) applies to FER+ labels only; "
                               "give them with --ferplus FILE / ferplus=FILE")
        return
    if label_mode is not None and label_mode not in LABEL_MODES:
        raise DatasetError(f"unknown label mode {label_mode!r} (choose one of "
                           f"{', '.join(LABEL_MODES)})")
    if Path(source).is_dir():
        raise DatasetError(f"{source}: a folder of images has no row order, and FER+ labels "
                           f"belong to the rows of fer2013.csv by position; pass the Kaggle "
                           f"fer2013.csv (or .csv.gz) the labels were made for")
    if skip_bad_rows:
        raise DatasetError("--skip-bad-rows / skip_bad_rows=True cannot be used with FER+ "
                           "labels: leaving rows out would shift the FER2013 rows against "
                           "the FER+ rows; repair the source instead")


def _validation_count(variant: str, val_sources: int | None, n_training: int) -> int:
    n_val = default_val_sources(variant, n_training) if val_sources is None else int(val_sources)
    if n_val >= n_training:
        raise DatasetError(f"val_sources={n_val} leaves no training sources "
                           f"(the source has {n_training} usable Training images)")
    return n_val


class _SourceRows(NamedTuple):
    """The builder works on row indices into the source, so its pixels are never copied."""
    training: np.ndarray  # rows of the Training images used
    training_number: np.ndarray  # their positions among the source's Training images
    test: np.ndarray  # rows of the PublicTest and PrivateTest images used
    n_blank_training: int
    n_blank_test: int


def _usable_rows(source, data: SourceData, keep: np.ndarray, drop_blank: bool) -> _SourceRows:
    """The rows the labels keep, less the blank images if asked.

    Training numbers count the source's Training images before anything is dropped, so a
    source_index names the same image whatever the options and labels."""
    is_training = data.usage == "Training"
    training_number = np.cumsum(is_training) - 1
    usable = keep & ~is_blank(data.images) if drop_blank else keep
    blank = keep & ~usable
    rows = _SourceRows(np.flatnonzero(is_training & usable),
                       training_number[is_training & usable],
                       np.flatnonzero(~is_training & usable),
                       int((blank & is_training).sum()), int((blank & ~is_training).sum()))
    if len(rows.training) == 0:
        raise DatasetError(f"{source}: no usable Training images")
    if len(rows.test) == 0:
        logger.warning("%s has no test images (PublicTest or PrivateTest): /test is empty",
                       source)
    return rows


def _label_columns(labelling: Labelling, rows: np.ndarray, n_variants: int,
                   more: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """labels, `more`, then the labelling's own per-row arrays (FER+ votes and targets) of the
    source `rows`, each row repeated for the n_variants images made from it."""
    own = {name: np.repeat(values[rows], n_variants, axis=0)
           for name, values in labelling.columns.items()}
    return {"labels": np.repeat(labelling.labels[rows], n_variants), **more, **own}


def _write_training(file: h5py.File, spec: Variant, images: np.ndarray, labelling: Labelling,
                    rows: _SourceRows, val_positions: np.ndarray, progress: bool) -> None:
    """/train ordered noval sources then val sources, so /train_noval and /val are row ranges.

    val_positions index rows.training, the source rows of the training images."""
    is_val = np.zeros(len(rows.training), bool)
    is_val[val_positions] = True
    order = np.concatenate([np.flatnonzero(~is_val), val_positions])
    training_rows = rows.training[order]
    n_variants = spec.n_variants
    columns = _label_columns(labelling, training_rows, n_variants, {
        "source_index": np.repeat(rows.training_number[order], n_variants).astype(np.int32),
        "variant_index": np.tile(np.arange(n_variants, dtype=np.int32), len(order))})
    split_images = hdf5.create_split(
        file, "train", (spec.image_size, spec.image_size), columns,
        "every variant of every training source image; the train_noval rows, then the val rows")
    _write_augmented(split_images, spec, images, training_rows, progress, "train")
    n_noval_rows = (len(order) - len(val_positions)) * n_variants
    hdf5.create_view_split(file, "train_noval", "train", 0, n_noval_rows,
                           "rows of /train from the sources not held out for validation")
    if len(val_positions):
        hdf5.create_view_split(file, "val", "train", n_noval_rows, len(order) * n_variants,
                               "rows of /train from the validation sources")


def _write_test(file: h5py.File, spec: Variant, data: SourceData, labelling: Labelling,
                test_rows: np.ndarray, progress: bool) -> None:
    usage = hdf5.usage_codes(data.usage[test_rows])
    images = hdf5.create_split(
        file, "test", (spec.image_size, spec.image_size),
        _label_columns(labelling, test_rows, 1, {"usage": usage}),
        "each test image once, in the variant's plain view (variant 0)")
    images[...] = spec.test_view(data.images[test_rows])
    images.parent.attrs["usage_names"] = list(TEST_USAGES)
    if spec.n_variants == 1:
        return
    n_variants = spec.n_variants
    images = hdf5.create_split(
        file, "test_aug", (spec.image_size, spec.image_size),
        _label_columns(labelling, test_rows, n_variants, {
            "usage": np.repeat(usage, n_variants),
            "source_index": np.repeat(np.arange(len(test_rows), dtype=np.int32), n_variants),
            "variant_index": np.tile(np.arange(n_variants, dtype=np.int32), len(test_rows))}),
        "every variant of every test image; source_index is the image's row of /test")
    images.parent.attrs["usage_names"] = list(TEST_USAGES)
    _write_augmented(images, spec, data.images, test_rows, progress, "test_aug")


def _write_augmented(images: h5py.Dataset, spec: Variant, sources: np.ndarray,
                     rows: np.ndarray, progress: bool, split: str) -> None:
    """Fill `images` with the variants of sources[rows], a block of source images at a time."""
    n_variants = spec.n_variants
    with tqdm(total=len(rows), unit="img", desc=f"{spec.name} {split}", disable=not progress,
              leave=False) as bar:
        for start in range(0, len(rows), BLOCK_SOURCES):
            block = rows[start:start + BLOCK_SOURCES]
            augmented = spec.augment(sources[block])
            images[start * n_variants:(start + len(block)) * n_variants] = \
                augmented.reshape(-1, spec.image_size, spec.image_size)
            bar.update(len(block))


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loaders.build_dataset",
        description="Build an offline-augmented FER2013 dataset (HDF5) from a Kaggle CSV "
                    "(.csv or .csv.gz) or a folder with train/<class>/ and test/<class>/, "
                    "labelled by FER2013 or, with --ferplus, by FER+.")
    parser.add_argument("source", help="fer2013.csv, fer2013.csv.gz, or the images folder")
    parser.add_argument("--variant", required=True, choices=list(VARIANTS),
                        help="raw (1 per image), mirror (2), crop5 (10), variant14 (14)")
    parser.add_argument("--out", required=True, help="the HDF5 file to write")
    parser.add_argument("--ferplus", metavar="FILE",
                        help="FER+ labels (fer2013new.csv, row-aligned with a CSV SOURCE): "
                             "8 classes, the rows the label mode keeps; test splits hold the "
                             "images majority mode keeps, with their majority label")
    parser.add_argument("--label-mode", choices=list(LABEL_MODES), default=None,
                        help="with --ferplus: FERPlus's rule for the training targets and the "
                             "rows kept (default: majority)")
    parser.add_argument("--val-sources", type=int, default=None, metavar="N",
                        help="training source images held out for validation (default: the "
                             "thesis's count for the variant scaled to the source; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation choice")
    parser.add_argument("--drop-blank", action="store_true",
                        help="leave out constant (blank) images, training and test")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="leave out malformed rows or images and report how many")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (shown on a terminal only) and no summary")
    args = parser.parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    started = time.perf_counter()
    try:
        out = build_dataset(args.source, args.variant, args.out, val_sources=args.val_sources,
                            seed=args.seed, drop_blank=args.drop_blank,
                            overwrite=args.overwrite, skip_bad_rows=args.skip_bad_rows,
                            progress=not args.quiet and sys.stderr.isatty(),
                            ferplus=args.ferplus, label_mode=args.label_mode)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {args.out} not written", file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary(out, time.perf_counter() - started))
    return 0


def summary(path: Path, seconds: float) -> str:
    info = hdf5.dataset_info(path)
    sizes = ", ".join(f"{split} {count:,}" for split, count in info["split_sizes"].items())
    height, width = info["image_size"]
    line = (f"{path}: {info['variant']} ({info['n_variants']} per image, {height}x{width}), "
            f"{sizes}; {info['val_sources']} validation sources; "
            f"{path.stat().st_size / 2**20:.1f} MiB in {seconds:.1f} s")
    if info.get("label_source") != "ferplus":
        return line
    return "\n".join([line, *drop_summary(info)])


if __name__ == "__main__":
    sys.exit(main())
