"""How fast the prediction app runs here: the network alone, a folder of face crops and a video,
timed as a user runs them (the command in a fresh process, start-up included).

    python -m utils.predict.benchmark                  # 2,000 crops, a 30 s 640x480 video
    python -m utils.predict.benchmark --crops 500 --video-seconds 5

Inputs are generated under a temporary folder from the built-in sample's real faces: 48x48
crops as PNG files (classified with --no-detect), and an mp4 video at 25 fps whose frames show
two upscaled sample faces drifting over a textured background (the default detector finds
them). The machine's load average is printed with the figures: on a shared machine they vary.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from loaders.sample import SAMPLE_CSV
from loaders.sources import read_csv
from utils.predict.model import BATCH_VIEWS, DEFAULT_MODEL, EmotionModel

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VIDEO_SIZE = (640, 480)
VIDEO_FPS = 25
FACE_SIDE = 160  # pixels of a face in the video: a person a metre or two from the camera


def write_crops(folder: Path, faces: np.ndarray, count: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        cv2.imwrite(str(folder / f"face{index:05d}.png"), faces[index % len(faces)])


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


def network_speed(model, faces: np.ndarray, seconds: float = 5.0) -> tuple[float, float]:
    """(views/s of one compiled batch of BATCH_VIEWS, faces/s with all the model's test
    views)."""
    batch = np.resize(faces, (BATCH_VIEWS, *faces.shape[1:]))
    model.logits(batch, augment=False)  # compiles
    start, views = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model.logits(batch, augment=False)
        views += len(batch)
    views_per_second = views / (time.perf_counter() - start)
    model.logits(batch, augment=True)
    start = time.perf_counter()
    model.logits(np.resize(faces, (4 * BATCH_VIEWS, *faces.shape[1:])), augment=True)
    return views_per_second, 4 * BATCH_VIEWS / (time.perf_counter() - start)


def timed_command(*arguments: str) -> tuple[float, str]:
    """Wall-clock seconds of `python -m utils.predict ARGUMENTS` and its summary line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "utils.predict", *arguments],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the command failed: {done.stderr.strip()}")
    throughput = [line for line in done.stdout.splitlines() if line.startswith("analysed in")]
    return seconds, throughput[0] if throughput else ""


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def run(crops: int, video_seconds: float, folder: Path) -> list[str]:
    faces = read_csv(SAMPLE_CSV).images
    lines = [f"{os.cpu_count()} CPUs, {load_average()} before"]
    model = EmotionModel(DEFAULT_MODEL)
    views, faces_per_second = network_speed(model, faces)
    lines.append(f"network alone (default model, batches of {BATCH_VIEWS}): {views:.0f} views/s; "
                 f"{faces_per_second:.0f} faces/s with its {model.describe_views()}")
    if crops:
        write_crops(folder / "crops", faces, crops)
        seconds, summary = timed_command(str(folder / "crops"), "--no-detect", "--out",
                                         str(folder / "crops_out"))
        lines.append(f"folder of {crops} 48x48 crops (--no-detect): {seconds:.1f} s with "
                     f"start-up ({summary}); {load_average()}")
    if video_seconds:
        n_frames = write_video(folder / "video.mp4", faces, video_seconds)
        seconds, summary = timed_command(str(folder / "video.mp4"), "--out",
                                         str(folder / "video_out"))
        lines.append(f"{video_seconds:g} s {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} video at {VIDEO_FPS} "
                     f"fps ({n_frames} frames, 2 faces each): {seconds:.1f} s with start-up "
                     f"({summary}); {load_average()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.predict.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=2000, help="face crops in the folder")
    parser.add_argument("--video-seconds", type=float, default=30.0,
                        help="length of the video in seconds")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated inputs and outputs (their folder is printed)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="predict-benchmark-"))
    try:
        for line in run(args.crops, args.video_seconds, folder):
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
