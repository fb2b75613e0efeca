"""The built-in sample: real subsets of FER2013 committed in datasets/, for a fresh clone (which
has no full data) to run the README's main job and the tests.

- ``fer2013_sample.csv.gz``: 80 Training and 20 PublicTest images of each class (700); the
  tests' sample.
- ``fer2013_sample_more.csv.bz2``: 140 more Training and 20 more PublicTest images of each
  class (1,120); with the first, the main job's extended sample (1,820), enough for a small
  network to visibly learn within minutes.

    from loaders.sample import ensure_sample_dataset
    path = ensure_sample_dataset("mirror")                  # the tests' sample_mirror.h5
    path = ensure_sample_dataset("mirror", extended=True)   # the main job's

Both files were made, once, from the full shared data by ``python -m loaders.sample --make``
and ``--make-more`` (see datasets/README.md); the same commands with the same data rewrite
identical bytes.
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from loaders.build_dataset import build_dataset
from loaders.hdf5 import FORMAT_VERSION, atomic_output, dataset_info
from loaders.sources import CLASS_NAMES, CSV_COLUMNS, DatasetError, file_sha256, read_csv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FOLDER = PROJECT_ROOT / "datasets"
SAMPLE_CSV = SAMPLE_FOLDER / "fer2013_sample.csv.gz"
MORE_CSV = SAMPLE_FOLDER / "fer2013_sample_more.csv.bz2"
# Where the full data lies beside the project checkout (absent from a user's clone).
FULL_FER2013 = PROJECT_ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"

TRAINING_PER_CLASS = 80
TEST_PER_CLASS = 20
SAMPLE_SEED = 0
MORE_TRAINING_PER_CLASS = 140
MORE_TEST_PER_CLASS = 20
MORE_SEED = 1
# Root-mean-square grey-level difference below which two images count as copies: the shared
# data's rows that come from the JPEG distribution differ from the originals by 1-2 levels,
# and FER2013 holds some images twice; different faces are tens of levels apart.
COPY_DISTANCE = 5.0


def make_sample(source: str | os.PathLike = FULL_FER2013, out: str | os.PathLike = SAMPLE_CSV, *,
                training_per_class: int = TRAINING_PER_CLASS,
                test_per_class: int = TEST_PER_CLASS, seed: int = SAMPLE_SEED) -> Path:
    """Write a Kaggle-format CSV.gz of `training_per_class` Training and `test_per_class` test
    rows of each class (fewer where a class has fewer), chosen with default_rng(seed) and kept
    in source order. Pixels are written unquoted as in Kaggle's original file; the gzip header
    carries no name or time, so the bytes depend on the data and the arguments only."""
    data = read_csv(source)
    rows = _choose(data, training_per_class, test_per_class, seed, excluded=set())
    out = Path(out)
    with atomic_output(out, overwrite=True) as temporary, open(temporary, "wb") as file, \
            gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0,
                          compresslevel=9) as compressed:
        compressed.write(_csv_text(data, rows))
    return out


def make_more(source: str | os.PathLike = FULL_FER2013, out: str | os.PathLike = MORE_CSV, *,
              first: str | os.PathLike = SAMPLE_CSV,
              training_per_class: int = MORE_TRAINING_PER_CLASS,
              test_per_class: int = MORE_TEST_PER_CLASS, seed: int = MORE_SEED) -> Path:
    """Write, bzip2-compressed, more Training and test rows of each class, none a copy of an
    image of the ``first`` sample, chosen with default_rng(seed), in source order."""
    data, kept = read_csv(source), read_csv(first)
    copies = set(np.flatnonzero((rms_distances(data.images, kept.images)
                                 < COPY_DISTANCE).any(axis=1)).tolist())
    rows = _choose(data, training_per_class, test_per_class, seed, excluded=copies)
    out = Path(out)
    with atomic_output(out, overwrite=True) as temporary:
        temporary.write_bytes(bz2.compress(_csv_text(data, rows), 9))
    return out


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] root-mean-square pixel differences between two sets of images, from
    |x - y|^2 = |x|^2 + |y|^2 - 2 x.y (one matrix product, in float64 for exactness)."""
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.sqrt(np.maximum(squared, 0) / x.shape[1])


def _choose(data, training_per_class: int, test_per_class: int, seed: int,
            excluded: set) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for is_training, per_class in ((True, training_per_class), (False, test_per_class)):
        for label in range(len(CLASS_NAMES)):
            in_usage = (data.usage == "Training") == is_training
            rows = [r for r in np.flatnonzero((data.labels == label) & in_usage)
                    if r not in excluded]
            chosen.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def _csv_text(data, rows) -> bytes:
    lines = [",".join(CSV_COLUMNS)]
    for row in rows:
        pixels = " ".join(map(str, data.images[row].ravel().tolist()))
        lines.append(f"{data.labels[row]},{pixels},{data.usage[row]}")
    return ("\n".join(lines) + "\n").encode()


def extended_csv_text() -> bytes:
    """The main job's sample as one CSV: the first sample's rows, then the more file's (each
    file is a CSV of its own; the second's header is dropped)."""
    more = bz2.decompress(MORE_CSV.read_bytes())
    return gzip.decompress(SAMPLE_CSV.read_bytes()) + more[more.index(b"\n") + 1:]


def ensure_sample_dataset(variant: str = "mirror", folder: str | os.PathLike | None = None, *,
                          extended: bool = False) -> Path:
    """The path of `sample_<variant>.h5` (the tests' sample) or, ``extended``,
    `sample_extended_<variant>.h5` (the main job's), built when missing or built otherwise
    (another sample, format version or options). folder: where it goes (default: the
    project's datasets/ folder, whatever the working directory)."""
    folder = SAMPLE_FOLDER if folder is None else Path(folder)
    out = folder / f"sample_{'extended_' if extended else ''}{variant}.h5"
    for committed in (SAMPLE_CSV, MORE_CSV) if extended else (SAMPLE_CSV,):
        if not committed.is_file():
            raise DatasetError(f"{committed}: the built-in sample is missing from this checkout")
    if not extended:
        if not (out.is_file() and _is_current(out, variant, file_sha256(SAMPLE_CSV))):
            # overwrite=True: a concurrent builder may have finished first: the same data.
            build_dataset(SAMPLE_CSV, variant, out, overwrite=True)
        return out
    text = extended_csv_text()
    if out.is_file() and _is_current(out, variant, hashlib.sha256(text).hexdigest()):
        return out
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".sample-") as temporary:
        source = Path(temporary) / "fer2013_sample_extended.csv"
        source.write_bytes(text)
        return build_dataset(source, variant, out, overwrite=True)


def _is_current(path: Path, variant: str, source_sha256: str) -> bool:
    """Whether `path` was built from this source with this format and the default options."""
    try:
        info = dataset_info(path)
    except DatasetError:
        return False
    expected = {"format_version": FORMAT_VERSION, "source_sha256": source_sha256,
                "variant": variant, "seed": 0, "val_sources_rule": "thesis count scaled",
                "drop_blank": False}
    return all(info.get(key) == value for key, value in expected.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.sample",
                                     description="Make the built-in FER2013 sample CSVs.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--make", action="store_true",
                      help=f"write the tests' sample ({SAMPLE_CSV.name}) from the full data")
    what.add_argument("--make-more", action="store_true",
                      help=f"write the main job's further rows ({MORE_CSV.name}), none a copy "
                           f"of the first sample's")
    parser.add_argument("--source", default=str(FULL_FER2013), help="the full fer2013.csv(.gz)")
    parser.add_argument("--out", default=None, help="default: the committed file's path")
    parser.add_argument("--training-per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    make, defaults = ((make_more, (MORE_CSV, MORE_TRAINING_PER_CLASS, MORE_TEST_PER_CLASS,
                                   MORE_SEED)) if args.make_more else
                      (make_sample, (SAMPLE_CSV, TRAINING_PER_CLASS, TEST_PER_CLASS,
                                     SAMPLE_SEED)))
    given = (args.out, args.training_per_class, args.test_per_class, args.seed)
    out, training, test, seed = (d if g is None else g for g, d in zip(given, defaults))
    try:
        out = make(args.source, out, training_per_class=training, test_per_class=test,
                   seed=seed)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{out}: {out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
