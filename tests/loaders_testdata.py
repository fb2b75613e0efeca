"""Real test data for the loaders tests: the committed FER2013 sample and files made from it."""
from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import h5py
import numpy as np

from loaders.sources import CLASS_NAMES, SourceData

SAMPLE_CSV = Path(__file__).resolve().parent.parent / "datasets" / "fer2013_sample.csv.gz"
FULL_CSV = Path(__file__).resolve().parent.parent.parent / "shared/data/fer2013/fer2013.csv.gz"


def sample_lines() -> tuple[str, list[str]]:
    """The sample CSV's header line and its data lines, as text without line ends."""
    header, *rows = gzip.decompress(SAMPLE_CSV.read_bytes()).decode().splitlines()
    return header, rows


def write_csv(path: Path, header: str, rows: list[str], *, compress: bool = False,
              line_end: str = "\n") -> Path:
    text = "".join(line + line_end for line in [header, *rows]).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


def write_image_folder(root: Path, data: SourceData) -> Path:
    """The images as PNG files in the public distribution's layout: train/<class>/Training_<i>.png
    and test/<class>/<Usage>_<i>.png, i counting the images of that usage in source order."""
    counters: dict[str, int] = {}
    for image, label, usage in zip(data.images, data.labels, data.usage):
        number = counters[usage] = counters.get(usage, -1) + 1
        folder = root / ("train" if usage == "Training" else "test") / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"{usage}_{number}.png"), image)
    return root


def read_everything(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every dataset of an HDF5 file by its full name, and every attribute by 'object:name'."""
    arrays, attributes = {}, {}
    with h5py.File(path, "r") as file:
        def visit(name, node):
            for key, value in node.attrs.items():
                attributes[f"{name}:{key}"] = np.asarray(value).tolist()
            if isinstance(node, h5py.Dataset):
                arrays[name] = node[...]
        visit("/", file)
        file.visititems(visit)
    return arrays, attributes
