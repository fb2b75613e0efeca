"""How fast the prediction app runs here: the network alone, a folder of face crops and a video,
timed as a user runs them (the command in a fresh process, start-up included), for each model.

    python -m utils.predict.benchmark                          # default and fast, 2,000 crops, 30 s video
    python -m utils.predict.benchmark --crops 14000 --video-seconds 30
    python -m utils.predict.benchmark --models fast --test ../shared/data/fer2013/fer2013.csv.gz
    python -m utils.predict.benchmark --models fast --crops 14000 --again 5   # median of 5

Inputs are generated under a temporary folder from the built-in sample's real faces: 48x48
crops as PNG files (classified with --no-detect), and an mp4 video at 25 fps whose frames show
two upscaled sample faces drifting over a textured background (the default detector finds
them). Each model runs with the views it is used with (``utils.predict.shipped``: the default
model's ten-crop, the fast model's plain view). ``--test`` also writes a dataset's test faces
(a FER2013 CSV, or a folder of train/ and test/ class folders) as a folder of crops
``test/<class>/``, runs the command on it and scores the labels it wrote against the folders'
classes: the model's accuracy through the app, PublicTest and PrivateTest apart. The crops and the
video run twice, each input with a compilation cache of its own that starts empty: the first
run compiles the network's batch shapes (seconds each on 2 cores), as a user's first run on a
machine does; the second loads them, as every later run does. The machine's load average is
printed with the figures: on a shared machine they vary.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from loaders.sample import SAMPLE_CSV
from loaders.sources import TEST_USAGES, read_csv, read_source
from utils.predict.faces import (YUNET_RUNTIMES, DetectorSettings, FaceDetectorError,
                                 YuNetDetector, yunet_runtime)
from utils.predict.model import EmotionModel
from utils.predict.shipped import model_path, views_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VIDEO_SIZE = (640, 480)
VIDEO_FPS = 25
FACE_SIDE = 160  # pixels of a face in the video: a person a metre or two from the camera


def write_crops(folder: Path, faces: np.ndarray, count: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        cv2.imwrite(str(folder / f"face{index:05d}.png"), faces[index % len(faces)])


def write_test_folder(folder: Path, dataset: Path, class_names: list[str]) -> int:
    """The dataset's test faces as PNG crops test/<class>/<usage>_<index>.png; their count."""
    data = read_source(dataset)
    test = np.isin(data.usage, TEST_USAGES)
    for index, (face, label, usage) in enumerate(zip(data.images[test], data.labels[test],
                                                     data.usage[test])):
        class_folder = folder / "test" / class_names[label]
        class_folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(class_folder / f"{usage}_{index:05d}.png"), face)
    return int(test.sum())


def test_accuracy(faces_csv: Path) -> dict[str, tuple[int, int]]:
    """{usage: (right, total)} of a run on write_test_folder's folder, from its faces.csv."""
    counts: dict[str, list[int]] = {}
    with open(faces_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            truth, name = Path(row["source"]).parts[-2:]
            usage = name.split("_")[0]
            right_total = counts.setdefault(usage, [0, 0])
            right_total[0] += row["label"] == truth
            right_total[1] += 1
    return {usage: (right, total) for usage, (right, total) in sorted(counts.items())}


def write_video(path: Path, faces: np.ndarray, seconds: float) -> int:
    """Two faces drifting over a fixed textured background; a new pair every second."""
    width, height = VIDEO_SIZE
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (height, width), np.uint8), (0, 0), 6)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS,
                             (width, height))
    n_frames = round(seconds * VIDEO_FPS)
    for frame in range(n_frames):
        image = background.copy()
        pair = frame // VIDEO_FPS
        drift = int(40 * np.sin(frame / 20))
        for slot in range(2):
            face = faces[(2 * pair + slot) % len(faces)]
            x, y = 80 + slot * 300 + drift, 150 + drift // 2
            image[y:y + FACE_SIDE, x:x + FACE_SIDE] = cv2.resize(
                face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
        writer.write(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    writer.release()
    return n_frames


def network_speed(model: EmotionModel, faces: np.ndarray, augment: bool,
                  seconds: float = 5.0) -> tuple[float, float]:
    """(views/s, faces/s) of the compiled network on the app's large batches, with every
    test-time view of each face (``augment``) or its plain view."""
    per_face = model.n_views if augment else 1
    batch = np.resize(faces, (model.batch_faces(augment), *faces.shape[1:]))
    model.logits(batch, augment)  # compiles
    start, n_faces = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model.logits(batch, augment)
        n_faces += len(batch)
    faces_per_second = n_faces / (time.perf_counter() - start)
    return faces_per_second * per_face, faces_per_second


def timed_command(*arguments: str, compiled: Path) -> tuple[float, str]:
    """Wall-clock seconds of `python -m utils.predict ARGUMENTS` and its summary line, with
    the app's compilation cache in the folder ``compiled``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "utils.predict", *arguments],
                          cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "FER_JAX_CACHE": str(compiled)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the command failed: {done.stderr.strip()}")
    throughput = [line for line in done.stdout.splitlines() if line.startswith("analysed in")]
    return seconds, throughput[0] if throughput else ""


def detector_line(video: Path, frames: int = 50) -> str:
    """YuNet's time a frame of the video on one thread through each runtime installed, and the
    one this machine uses (faces.yunet_runtime): the figures that choose it per CPU kind."""
    capture = cv2.VideoCapture(str(video))
    images = [image for ok, image in (capture.read() for _ in range(frames)) if ok]
    capture.release()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's detector would use every core; onnxruntime's uses one
    try:
        times = []
        for runtime in YUNET_RUNTIMES:
            try:
                detector = YuNetDetector(DetectorSettings(yunet_runtime=runtime))
            except FaceDetectorError as err:  # onnxruntime not installed
                times.append(f"{runtime} unavailable ({err})")
                continue
            detector.detect(images[0])
            start = time.perf_counter()
            for image in images:
                detector.detect(image)
            times.append(f"{runtime} {(time.perf_counter() - start) / len(images) * 1e3:.1f} ms")
    finally:
        cv2.setNumThreads(threads)
    height, width = images[0].shape[:2]
    return (f"YuNet on a {width}x{height} frame, one thread: {', '.join(times)}; this machine "
            f"uses {yunet_runtime()} (FER_YUNET_RUNTIME chooses)")


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


# The crops and the video run as a first run (compiling) and again (compiled code loaded from
# the cache); the test faces once, for their accuracy.
TIMED_AGAIN = ("crops", "video")
FIRST_RUN, AGAIN = "first run (compiles)", "again (compiled code cached)"


class Input(NamedTuple):
    path: Path
    description: str
    options: tuple[str, ...]  # the command's options for it


def model_lines(name: str, folder: Path, inputs: dict[str, Input],
                faces: np.ndarray, again: int = 1) -> list[str]:
    """The figures of one model (a shipped name or a path) on the generated inputs."""
    views = views_for([Path(name)], None)
    model = EmotionModel(model_path(Path(name)))
    augment = views == "model"
    view_text = model.describe_views() if augment else "its plain view"
    views_per_second, faces_per_second = network_speed(model, faces, augment)
    lines = [f"model {name} (network {model.network.name}, {view_text}):",
             f"  network alone, batches of {model.batch_faces(augment)} faces: "
             f"{views_per_second:,.0f} "
             f"views/s, {faces_per_second:,.0f} faces/s"]
    return lines + timed_lines(name, views, folder, inputs, again)


def timed_lines(name: str, views: str, folder: Path, inputs: dict[str, Input],
                again: int = 1) -> list[str]:
    """The app's command on each input, timed (the crops and the video as a first run, then
    ``again`` more times with the compiled code cached: on a machine whose speed drifts, the
    median of several runs says more than one), and the test faces' accuracy through it."""
    lines, out = [], folder / f"out_{Path(name).name}"
    for kind, given in inputs.items():
        # A cache of this model and input's own, empty at first: the first run compiles the
        # batch shapes as a first run on a new machine does; the later ones load them, as
        # every later run does.
        compiled = folder / f"compiled_{Path(name).name}_{kind}"
        n_again = again if kind in TIMED_AGAIN else 0
        seconds_again = []
        for index in range(n_again + 1):
            run = (FIRST_RUN if index == 0 else AGAIN if n_again == 1
                   else f"{AGAIN}, run {index} of {n_again}")
            seconds, summary = timed_command(str(given.path), *given.options, "--model", name,
                                             "--views", views, "--out",
                                             str(out / (f"{kind}_again{index}" if index else kind)),
                                             compiled=compiled)
            if index:
                seconds_again.append(seconds)
            lines.append(f"  {given.description}, {run}: {seconds:.1f} s with start-up "
                         f"({summary}); {load_average()}")
        if len(seconds_again) > 1:
            lines.append(f"  {given.description}, again: median {np.median(seconds_again):.1f} "
                         f"s, best {min(seconds_again):.1f} s of {len(seconds_again)} runs")
        if kind == "test":
            lines += [f"    {usage}: {right / total:.2%} ({right}/{total})" for usage,
                      (right, total) in test_accuracy(out / kind / "faces.csv").items()]
    return lines


def make_inputs(folder: Path, faces: np.ndarray, crops: int, video_seconds: float,
                test: Path | None, class_names: list[str]) -> dict[str, Input]:
    inputs = {}
    if crops:
        write_crops(folder / "crops", faces, crops)
        inputs["crops"] = Input(folder / "crops", f"folder of {crops:,} 48x48 crops "
                                f"(--no-detect)", ("--no-detect",))
    if video_seconds:
        n_frames = write_video(folder / "video.mp4", faces, video_seconds)
        inputs["video"] = Input(folder / "video.mp4", f"{video_seconds:g} s {VIDEO_SIZE[0]}x"
                                f"{VIDEO_SIZE[1]} video at {VIDEO_FPS} fps ({n_frames} "
                                f"frames, 2 faces each, detected)", ())
    if test is not None:
        n_test = write_test_folder(folder / "test", test, class_names)
        inputs["test"] = Input(folder / "test", f"{n_test:,} test faces of {test} as crops "
                               f"(--no-detect)", ("--no-detect",))
    return inputs


def run(models: list[str], crops: int, video_seconds: float, test: Path | None,
        folder: Path, again: int = 1) -> list[str]:
    faces = read_csv(SAMPLE_CSV).images
    lines = [f"{os.cpu_count()} CPUs, {load_average()} before"]
    class_names = EmotionModel(model_path(Path(models[0]))).class_names
    inputs = make_inputs(folder, faces, crops, video_seconds, test, class_names)
    if "video" in inputs:
        lines.append(detector_line(inputs["video"].path))
    for name in models:
        lines += model_lines(name, folder, inputs, faces, again)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.predict.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["default", "fast"],
                        help="shipped model names or model files (default: default fast)")
    parser.add_argument("--crops", type=int, default=2000, help="face crops in the folder")
    parser.add_argument("--video-seconds", type=float, default=30.0,
                        help="length of the video in seconds")
    parser.add_argument("--test", type=Path, default=None, metavar="DATASET",
                        help="also classify this dataset's test faces as a folder of crops "
                             "and print each model's accuracy through the app")
    parser.add_argument("--again", type=int, default=1, metavar="N",
                        help="run the crops and the video N times with the compiled code "
                             "cached, after the first run, and print their median (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated inputs and outputs (their folder is printed)")
    args = parser.parse_args(argv)
    if args.again < 1:
        parser.error(f"--again must be at least 1, got {args.again}")
    folder = Path(tempfile.mkdtemp(prefix="predict-benchmark-"))
    try:
        for line in run(args.models, args.crops, args.video_seconds, args.test, folder,
                        args.again):
            print(line, flush=True)
    finally:
        if args.keep:
            print(f"inputs and outputs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from utils.support import host_tuning

    host_tuning.apply()  # as the command applies it: the network's speed is measured the same
    sys.exit(main())
