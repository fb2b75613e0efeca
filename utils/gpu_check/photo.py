"""The prediction app on a photo, with the shipped default model, on JAX's default backend.

The photo is a collage of real faces of the built-in sample (one of each class, then a second
happy one), each upscaled 4x on a plain background. ``utils.predict.predict`` finds the faces
(YuNet), classifies them with the default model over its test-time views and writes its
outputs; the check reads back the probabilities it wrote (faces.csv) and compares them with
the same faces classified on the CPU backend. Where the default backend is the CPU the
comparison is with itself, and only the app's path and its files are checked.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import jax
import numpy as np

from loaders.sample import SAMPLE_CSV
from loaders.sources import read_csv
from utils.gpu_check.primitives import Result
from utils.predict import (DEFAULT_MODEL, DetectorSettings, FaceFinder, load_models,
                           make_detector, predict)

COLLAGE_ROWS = (123, 13, 20, 14, 11, 3, 107, 34)  # rows of the sample: one face per class, then
# a second happy face; each found alone, as one face, in the predict tests
SCALE, MARGIN, BACKGROUND, PER_ROW = 4, 20, 200, 4
# Probabilities may differ across backends by the rounding of their products (TF32 on recent
# NVIDIA GPUs: about 3 significant digits on the logits); a wrong computation differs by far more.
PROBABILITY_LIMIT = 0.01


def collage(faces: np.ndarray) -> np.ndarray:
    """BGR photo of the 48x48 faces, upscaled, PER_ROW a row, each with MARGIN around it."""
    tiles = [np.pad(cv2.resize(face, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC),
                    MARGIN, constant_values=BACKGROUND) for face in faces]
    tiles += [np.full_like(tiles[0], BACKGROUND)] * (-len(tiles) % PER_ROW)
    rows = [np.hstack(tiles[i:i + PER_ROW]) for i in range(0, len(tiles), PER_ROW)]
    return cv2.cvtColor(np.vstack(rows), cv2.COLOR_GRAY2BGR)


def app_probabilities(out: Path, class_names: list[str]) -> np.ndarray:
    with open(out / "faces.csv", newline="") as handle:
        return np.array([[float(row[f"p_{name}"]) for name in class_names]
                         for row in csv.DictReader(handle)]).reshape(-1, len(class_names))


def on_the_cpu(ensemble):
    """The ensemble with its models' arrays on the CPU backend, where they then compute."""
    cpu = jax.devices("cpu")[0]
    for model in ensemble.models:
        model.params, model.bn_state = jax.device_put((model.params, model.bn_state), cpu)
    return ensemble


def run_check(work: Path) -> list[Result]:
    faces = read_csv(SAMPLE_CSV).images[list(COLLAGE_ROWS)]
    photo = work / "collage.png"
    cv2.imwrite(str(photo), collage(faces))
    finder = FaceFinder(make_detector(DetectorSettings()))
    model = load_models([DEFAULT_MODEL])
    predict(photo, model, work / "predicted", finder=finder, face_charts=False)
    got = app_probabilities(work / "predicted", model.class_names)
    sums = np.abs(got.sum(axis=1) - 1).max() if len(got) else np.inf
    found = Result("predict: faces found in a collage, probabilities written",
                   len(got) == len(faces) and sums < 1e-5,
                   f"{len(got)} of {len(faces)} faces, each row's sum within {sums:.0e} of 1")
    backend = jax.default_backend()
    on_cpu = on_the_cpu(model).probabilities(  # the same model, once the app is done
        finder.image_file(photo, photo.name).faces, augment=True)
    if on_cpu.shape != got.shape:
        return [found]
    difference = float(np.abs(got - on_cpu).max())
    same_labels = int(np.sum(got.argmax(axis=1) == on_cpu.argmax(axis=1)))
    versus = "the CPU backend" if backend != "cpu" else "the CPU backend (itself here)"
    return [found, Result(
        f"predict: the default model's probabilities on {backend} vs {versus}",
        difference <= PROBABILITY_LIMIT,
        f"largest difference {difference:.1e} (limit {PROBABILITY_LIMIT:g}), the same label "
        f"for {same_labels} of {len(got)} faces")]
