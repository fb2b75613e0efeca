"""Test results from a model's outputs: cost and error for all test images and per split
(PublicTest, PrivateTest), the augmented test, and the confusion matrix.

Model selection never reads these: they are computed once training is over (and, printed only,
after every epoch with ``test_each_epoch``).
"""
from __future__ import annotations

import numpy as np

from utils.nn.losses import cost_and_error
from utils.training.views import summed_view_logits

TEST_SPLITS = ("PublicTest", "PrivateTest")


def split_errors(prefix: str, logits: np.ndarray, labels: np.ndarray,
                 usage: np.ndarray) -> dict:
    """{prefix}_cost and _error over all rows, and _error_<split>, _n_<split> per test split
    (None where the split has no rows)."""
    out = {}
    out[f"{prefix}_cost"], out[f"{prefix}_error"] = cost_and_error(logits, labels)
    for name in TEST_SPLITS:
        mask = usage == name
        out[f"{prefix}_error_{name}"] = (cost_and_error(logits[mask], labels[mask])[1]
                                        if mask.any() else None)
        out[f"{prefix}_n_{name}"] = int(mask.sum())
    return out


def per_class_recall(labels: np.ndarray, predictions: np.ndarray, usage: np.ndarray,
                     class_names: list[str]) -> dict:
    """{"all", "PublicTest", "PrivateTest": {class name: recall}}: the fraction of each class's
    test images predicted as that class (None for a class without images there); a split
    without images is None."""
    out = {}
    for name, mask in [("all", np.ones(len(labels), bool))] + [(s, usage == s)
                                                               for s in TEST_SPLITS]:
        if not mask.any():
            out[name] = None
            continue
        n = np.bincount(labels[mask], minlength=len(class_names))
        right = np.bincount(labels[mask][predictions[mask] == labels[mask]],
                            minlength=len(class_names))
        out[name] = {c: (float(right[k] / n[k]) if n[k] else None)
                     for k, c in enumerate(class_names)}
    return out


def results_on_test(logits: np.ndarray, labels: np.ndarray, usage: np.ndarray,
                 view_logits: np.ndarray | None = None,
                 view_source_index: np.ndarray | None = None,
                 class_names: list[str] | None = None) -> tuple[dict, np.ndarray]:
    """(results, predictions): the plain test, and the augmented test when each test image's
    views are given (their pre-softmax outputs summed per image, the thesis's rule). The
    predictions are the augmented test's when there is one. With ``class_names``, each
    test's recall per class and split too: results["per_class_recall"]["test" | "aug_test"]."""
    results = split_errors("test", logits, labels, usage)
    predictions = logits.argmax(axis=1)
    recall = {"test": predictions}
    if view_logits is not None:
        summed = summed_view_logits(view_logits, view_source_index, len(labels))
        results.update(split_errors("aug_test", summed, labels, usage))
        predictions = recall["aug_test"] = summed.argmax(axis=1)
    if class_names is not None:
        results["per_class_recall"] = {test: per_class_recall(labels, predicted, usage,
                                                              class_names)
                                       for test, predicted in recall.items()}
    return results, predictions


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [true class, predicted class] counts."""
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
