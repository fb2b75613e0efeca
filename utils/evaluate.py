"""Accuracy of saved models, alone and as an ensemble, on a dataset's test images.

    python -m utils.evaluate trained_models/default --dataset datasets/fer2013_mirror.h5
    python -m utils.evaluate MODEL_A MODEL_B --dataset fer2013.csv --out results/
    python -m utils.evaluate trained_models/ferplus --dataset datasets/ferplus_majority.h5

For each model and for the ensemble of all of them (the mean of their softmax outputs): the
accuracy of the plain test and of the test with the model's test-time views
(``utils.training.views``: its variant's versions of each image, in the online views it was trained
for, outputs summed), over all test images and per split (PublicTest, PrivateTest; a split a file
lacks shows '-'). A dataset file (``loaders.build_dataset``) gives its test split and its
``/test_aug`` versions; a FER2013 CSV gives its PublicTest/PrivateTest rows, from which each model
makes its own views. FER+ files hold the majority label on their test split: the FER+ paper's
accuracy. Writes the ensemble's (or the single model's) confusion matrix with views,
``confusion.png``, and ``results.json`` into ``--out`` (default evaluations/<dataset name>/).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from loaders.hdf5 import open_dataset, read_split, read_test_aug_source_index, read_usage, \
    split_group
from loaders.sources import CLASS_NAMES, IMAGE_SIZE, TEST_USAGES, DatasetError, read_source
from utils.evaluation.results import TEST_SPLITS, confusion_matrix
from utils.evaluation.inference import InferenceModel, ensemble_probabilities
from utils.models.model_io import ModelFileError, atomic_write
from utils.experiments.records import plot_confusion


class EvaluationImages(NamedTuple):
    labels: np.ndarray  # int [N]
    usage: np.ndarray  # str [N]: PublicTest or PrivateTest
    class_names: list[str]
    plain: object  # model -> uint8 [N, S, S]
    versions: object  # model -> uint8 [N, V, S, S]


def _grouped_versions(path: Path, n_test: int) -> np.ndarray:
    """/test_aug as [N, V, S, S] (every test image has the same number of versions)."""
    images, _ = read_split(path, "test_aug")
    source = read_test_aug_source_index(path)
    order = np.argsort(source, kind="stable")
    return images[order].reshape(n_test, len(images) // n_test, *images.shape[1:])


def file_test_images(path: Path) -> EvaluationImages:
    with open_dataset(path) as file:
        class_names = [str(name) for name in file.attrs["class_names"]]
        has_versions = "test_aug" in file
        split_group(file, "test")
    images, labels = read_split(path, "test")
    versions = (_grouped_versions(path, len(labels)) if has_versions else images[:, None])
    return EvaluationImages(labels, read_usage(path, "test"), class_names,
                      lambda model: images, lambda model: versions)


def csv_test_images(path: Path) -> EvaluationImages:
    data = read_source(path)
    test = np.isin(data.usage, TEST_USAGES)
    if not test.any():
        raise DatasetError(f"{path}: no PublicTest or PrivateTest rows to evaluate on")
    faces = data.images[test]
    if faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{path}: expected {IMAGE_SIZE}x{IMAGE_SIZE} faces")
    return EvaluationImages(data.labels[test], data.usage[test], list(CLASS_NAMES),
                      lambda model: model.test_view(faces),
                      lambda model: model.versions(faces))


def load_test_images(path: Path) -> EvaluationImages:
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file")
    if path.suffix in (".h5", ".hdf5"):
        return file_test_images(path)
    return csv_test_images(path)


def accuracies(probabilities: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> dict:
    """Accuracy over all images and per test split (None where a split has no images)."""
    right = probabilities.argmax(axis=1) == labels
    out = {"all": float(right.mean())}
    for split in TEST_SPLITS:
        mask = usage == split
        out[split] = float(right[mask].mean()) if mask.any() else None
    return out


def evaluate(model_paths: list, dataset: Path, views: bool = True) -> dict:
    """{"models": [{"model", "plain", "views"}...], "ensemble": {...} or None, ...} plus the
    probabilities behind the confusion matrix."""
    data = load_test_images(Path(dataset))
    models = [InferenceModel(path) for path in model_paths]
    rows, plain_all, views_all = [], [], []
    for model in models:
        if model.class_names != data.class_names:
            raise ModelFileError(f"{model.path} classifies {len(model.class_names)} classes "
                                 f"({', '.join(model.class_names)}); {dataset} has "
                                 f"{len(data.class_names)} ({', '.join(data.class_names)})")
        plain = model.plain(data.plain(model)).probabilities()
        plain_all.append(plain)
        row = {"model": str(model.path), "network": model.network.name,
               "n_views": model.n_views, "plain": accuracies(plain, data.labels, data.usage)}
        if views:
            views_all.append(model.views(data.versions(model)).probabilities())
            row["views"] = accuracies(views_all[-1], data.labels, data.usage)
        rows.append(row)
    result = {"dataset": str(dataset), "n_test": int(len(data.labels)),
              "n_per_split": {s: int((data.usage == s).sum()) for s in TEST_SPLITS},
              "models": rows, "ensemble": None}
    if len(models) > 1:
        result["ensemble"] = {"plain": accuracies(ensemble_probabilities(plain_all),
                                                  data.labels, data.usage)}
        if views:
            result["ensemble"]["views"] = accuracies(ensemble_probabilities(views_all),
                                                     data.labels, data.usage)
    best = ensemble_probabilities(views_all or plain_all)
    result["confusion"] = confusion_matrix(data.labels, best.argmax(axis=1),
                                           len(data.class_names)).tolist()
    result["class_names"] = data.class_names
    return result


def _percent(value) -> str:
    return "     -  " if value is None else f"{100 * value:6.2f} %"


def report(result: dict) -> list[str]:
    splits = result["n_per_split"]
    lines = [f"test images: {result['n_test']:,} in {result['dataset']} ("
             + ", ".join(f"{s} {n:,}" for s, n in splits.items()) + ")",
             f"{'model':44} {'views':>6} {'all':>9} {'PublicTest':>11} {'PrivateTest':>11}"]

    def add(name, views_label, figures):
        lines.append(f"{name:44} {views_label:>6} {_percent(figures['all'])} "
                     f"{_percent(figures['PublicTest']):>11} "
                     f"{_percent(figures['PrivateTest']):>11}")

    for row in result["models"]:
        add(f"{row['model']} ({row['network']})", "plain", row["plain"])
        if "views" in row:
            add("", str(row["n_views"]), row["views"])
    if result["ensemble"]:
        name = f"ensemble of {len(result['models'])} (mean of softmax)"
        add(name, "plain", result["ensemble"]["plain"])
        if "views" in result["ensemble"]:
            add("", "views", result["ensemble"]["views"])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.evaluate", description=__doc__
                                     .splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path,
                        help="model.msgpack files saved by run_experiment.py, or their folders")
    parser.add_argument("--dataset", type=Path, required=True,
                        help="a dataset file from loaders.build_dataset, or a FER2013 CSV")
    parser.add_argument("--out", type=Path, default=None,
                        help="where confusion.png and results.json go "
                             "(default: evaluations/<dataset name>/)")
    parser.add_argument("--no-views", action="store_true", help="the plain test only")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.models, args.dataset, views=not args.no_views)
        out = args.out or Path("evaluations") / args.dataset.name.split(".")[0]
        title = ("ensemble" if len(args.models) > 1 else args.models[0].name) + \
            ("" if args.no_views else ", with test-time views")
        plot_confusion(out / "confusion.png", np.asarray(result["confusion"]),
                       result["class_names"], f"{title} on {args.dataset.name}")
        atomic_write(out / "results.json", json.dumps(result, indent=2).encode())
    except (DatasetError, ModelFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(result) + [f"confusion matrix and results in {out}/"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
