"""An exported file against the framework on a test set: python -m utils.export.check.

    python -m utils.export.check default.onnx --model trained_models/default \\
        --dataset ../shared/data/fer2013/fer2013.csv.gz [--limit 200] [--opencv]

Runs the file through onnxruntime (and with ``--opencv`` through ``cv2.dnn``) and the saved
model through ``utils.evaluation.inference`` on the same faces, and prints the largest
difference between their probabilities, the faces whose predicted class differs, and each
path's accuracy per test split. The dataset: a FER2013 CSV or image folder (its PublicTest and
PrivateTest faces), or a dataset file whose test split holds the 48x48 faces (raw and mirror
variants; FER+ files: the majority labels). Writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from loaders.hdf5 import open_dataset, read_split, read_usage
from loaders.sample import SAMPLE_CSV
from loaders.sources import IMAGE_SIZE, TEST_USAGES, DatasetError, read_csv, read_source
from utils.evaluation.inference import InferenceModel
from utils.evaluation.onnx_model import OnnxModel, OnnxModelError, as_input
from utils.evaluation.results import TEST_SPLITS
from utils.models.model_io import ModelFileError

CHECK_FACES = 16  # the built-in sample's faces every export is checked on (one small batch)
# Largest difference allowed between exported and framework probabilities: float rounding,
# except where variant14's cubic resizes round a pixel or two differently (utils.export.views).
TOLERANCE, VARIANT14_TOLERANCE = 1e-5, 1e-3


def tolerance(variant: str) -> float:
    return VARIANT14_TOLERANCE if variant == "variant14" else TOLERANCE


def check_faces() -> np.ndarray:
    """uint8 [CHECK_FACES, 48, 48]: the built-in sample's first PublicTest faces."""
    data = read_csv(SAMPLE_CSV)
    return data.images[data.usage == "PublicTest"][:CHECK_FACES]


def framework_probabilities(model: InferenceModel, faces: np.ndarray, views: str):
    """What utils.predict computes for uint8 faces: all views, or the plain one."""
    if views == "plain":
        return model.plain(model.test_view(faces)).probabilities()
    return model.views(model.versions(faces)).probabilities()


def compare(exported: OnnxModel, model: InferenceModel, faces: np.ndarray):
    """(largest absolute difference, faces whose argmax differs) on uint8 faces."""
    theirs = exported.probabilities(as_input(faces))
    ours = framework_probabilities(model, faces, exported.views)
    return (float(np.abs(theirs - ours).max(initial=0.0)),
            int((theirs.argmax(axis=1) != ours.argmax(axis=1)).sum()))


def opencv_probabilities(path: Path, faces: np.ndarray) -> np.ndarray:
    """The file run by OpenCV's dnn module on uint8 faces."""
    outputs = []
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
        for start in range(0, len(faces), 256):
            net.setInput(as_input(faces[start:start + 256]))
            outputs.append(net.forward())
    except cv2.error as err:
        last = (str(err).strip().splitlines() or ["cv2.error"])[-1]
        raise OnnxModelError(f"OpenCV's dnn module cannot run {path} ({last.strip()})") from None
    return np.concatenate(outputs)


def dataset_faces(dataset: Path):
    """(uint8 faces [N, 48, 48], labels, usage) of a dataset's test images."""
    if not dataset.exists():
        raise DatasetError(f"{dataset}: no such dataset")
    if dataset.suffix in (".h5", ".hdf5"):
        open_dataset(dataset).close()  # a clear error for a file that is not one
        faces, labels = read_split(dataset, "test")
        usage = read_usage(dataset, "test")
    else:
        data = read_source(dataset)
        test = np.isin(data.usage, TEST_USAGES)
        faces, labels, usage = data.images[test], data.labels[test], data.usage[test]
    if faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or not len(faces):
        raise DatasetError(f"{dataset}: its test split holds {list(faces.shape[1:])} images; "
                           f"the check needs the {IMAGE_SIZE}x{IMAGE_SIZE} faces (a FER2013 "
                           f"CSV, or a raw or mirror dataset file)")
    return faces, labels, np.asarray(usage)


def _accuracies(probabilities, labels, usage) -> str:
    right = probabilities.argmax(axis=1) == labels
    parts = [f"all {right.mean():.2%} ({right.sum()}/{len(right)})"]
    for split in TEST_SPLITS:
        mask = usage == split
        if mask.any():
            parts.append(f"{split} {right[mask].mean():.2%} ({right[mask].sum()}/{mask.sum()})")
    return ", ".join(parts)


def report(exported: OnnxModel, model: InferenceModel, dataset: Path, limit: int | None,
           opencv: bool) -> list[str]:
    if exported.class_names != model.class_names:
        raise OnnxModelError(f"{exported.path} classifies {', '.join(exported.class_names)}; "
                             f"{model.path} {', '.join(model.class_names)}: not its export")
    faces, labels, usage = (array[:limit] for array in dataset_faces(dataset))
    ours = framework_probabilities(model, faces, exported.views)
    paths = {"onnxruntime": exported.probabilities(as_input(faces))}
    if opencv:
        paths["cv2.dnn"] = opencv_probabilities(exported.path, faces)
    lines = [f"{len(faces)} test faces of {dataset}, {exported.views} views",
             f"  framework (utils.evaluation.inference): {_accuracies(ours, labels, usage)}"]
    for name, theirs in paths.items():
        differ = int((theirs.argmax(axis=1) != ours.argmax(axis=1)).sum())
        lines += [f"  {name}: {_accuracies(theirs, labels, usage)}",
                  f"    largest probability difference {np.abs(theirs - ours).max():.2e}, "
                  f"predicted class differs on {differ} faces"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.export.check",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("onnx", type=Path, help="the exported file")
    parser.add_argument("--model", type=Path, required=True, help="the model it was exported from")
    parser.add_argument("--dataset", type=Path, required=True, help="a FER2013 CSV or folder, or "
                        "a raw or mirror dataset file")
    parser.add_argument("--limit", type=int, default=None, help="the first N test faces only")
    parser.add_argument("--opencv", action="store_true", help="also run it with cv2.dnn")
    args = parser.parse_args(argv)
    try:
        lines = report(OnnxModel(args.onnx), InferenceModel(args.model), args.dataset,
                       args.limit, args.opencv)
    except (OnnxModelError, ModelFileError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
