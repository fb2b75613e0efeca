"""The built-in sample: a small real subset of FER2013, committed as datasets/fer2013_sample.csv.gz.

It lets a fresh clone (which has no full data) run the README's main job and the tests:
    from loaders.sample import ensure_sample_dataset
    path = ensure_sample_dataset("mirror")      # builds datasets/sample_mirror.h5 if needed
The sample itself was made, once, from the full shared data by
    python -m loaders.sample --make
(see datasets/README.md); the same command with the same data rewrites identical bytes.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np

from loaders.build_dataset import build_dataset
from loaders.hdf5 import FORMAT_VERSION, atomic_output, dataset_info
from loaders.sources import CLASS_NAMES, CSV_COLUMNS, DatasetError, file_sha256, read_csv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FOLDER = PROJECT_ROOT / "datasets"
SAMPLE_CSV = SAMPLE_FOLDER / "fer2013_sample.csv.gz"
# Where the full data lies beside the project checkout (absent from a user's clone).
FULL_FER2013 = PROJECT_ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"

TRAINING_PER_CLASS = 80
TEST_PER_CLASS = 20
SAMPLE_SEED = 0


def make_sample(source: str | os.PathLike = FULL_FER2013, out: str | os.PathLike = SAMPLE_CSV, *,
                training_per_class: int = TRAINING_PER_CLASS,
                test_per_class: int = TEST_PER_CLASS, seed: int = SAMPLE_SEED) -> Path:
    """Write a Kaggle-format CSV.gz of `training_per_class` Training and `test_per_class` test
    rows of each class (fewer where a class has fewer), chosen with default_rng(seed) and kept
    in source order. Pixels are written unquoted as in Kaggle's original file; the gzip header
    carries no name or time, so the bytes depend on the data and the arguments only."""
    data = read_csv(source)
    rng = np.random.default_rng(seed)
    chosen = []
    for is_training, per_class in ((True, training_per_class), (False, test_per_class)):
        for label in range(len(CLASS_NAMES)):
            in_usage = (data.usage == "Training") == is_training
            rows = np.flatnonzero((data.labels == label) & in_usage)
            chosen.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    lines = [",".join(CSV_COLUMNS)]
    for row in np.sort(np.concatenate(chosen)):
        pixels = " ".join(map(str, data.images[row].ravel().tolist()))
        lines.append(f"{data.labels[row]},{pixels},{data.usage[row]}")
    out = Path(out)
    with atomic_output(out, overwrite=True) as temporary, open(temporary, "wb") as file, \
            gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0,
                          compresslevel=9) as compressed:
        compressed.write(("\n".join(lines) + "\n").encode())
    return out


def ensure_sample_dataset(variant: str = "mirror", folder: str | os.PathLike | None = None) -> Path:
    """The path of `sample_<variant>.h5` built from the committed sample CSV, building it when
    it is missing or was built otherwise (another sample, format version or options).
    folder: where it goes (default: the project's datasets/ folder, whatever the working
    directory)."""
    folder = SAMPLE_FOLDER if folder is None else Path(folder)
    out = folder / f"sample_{variant}.h5"
    if not SAMPLE_CSV.is_file():
        raise DatasetError(f"{SAMPLE_CSV}: the built-in sample is missing from this checkout")
    if out.is_file() and _is_current(out, variant):
        return out
    # overwrite=True: a concurrent builder may have finished first; both write the same data.
    return build_dataset(SAMPLE_CSV, variant, out, overwrite=True)


def _is_current(path: Path, variant: str) -> bool:
    """Whether `path` was built from this sample with this format and the default options."""
    try:
        info = dataset_info(path)
    except DatasetError:
        return False
    expected = {"format_version": FORMAT_VERSION, "source_sha256": file_sha256(SAMPLE_CSV),
                "variant": variant, "seed": 0, "val_sources_rule": "thesis count scaled",
                "drop_blank": False}
    return all(info.get(key) == value for key, value in expected.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.sample",
                                     description="Make the built-in FER2013 sample CSV.")
    parser.add_argument("--make", action="store_true", required=True,
                        help="write the sample from the full data")
    parser.add_argument("--source", default=str(FULL_FER2013), help="the full fer2013.csv(.gz)")
    parser.add_argument("--out", default=str(SAMPLE_CSV))
    parser.add_argument("--training-per-class", type=int, default=TRAINING_PER_CLASS)
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)
    try:
        out = make_sample(args.source, args.out, training_per_class=args.training_per_class,
                          test_per_class=args.test_per_class, seed=args.seed)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{out}: {out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
