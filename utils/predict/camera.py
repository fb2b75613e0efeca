"""The live camera: `python -m utils.predict --camera 0` shows the annotated stream in a window
(each face's emotion and probability, and its label smoothed over its last frames) and, when
the window is closed (q, Esc, or its close button) or Ctrl-C is pressed, writes faces.csv,
the frequency table and the summary as for a video. Any video file can stand in for the
camera (`--camera clip.mp4`): its frames are shown as fast as they are analysed.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from utils.predict.drawing import annotate, label_text
from utils.predict.errors import PredictError, ctrl_c_stops_gracefully
from utils.predict.inputs import FaceFinder, Item, VideoReader
from utils.predict.output import OutputFolder, check_output_folder
from utils.predict.pipeline import ordered_map, run
from utils.predict.report import Report

SMOOTHING_FRAMES = 10
# A face belongs to the track whose last region it overlaps this much (intersection over union).
SAME_FACE_IOU = 0.3
_QUIT_KEYS = {ord("q"), ord("Q"), 27}  # 27: Esc


class WindowDisplay:
    """The annotated stream in an OpenCV window; q, Esc or the window's close button stop it."""
    TITLE = "utils.predict (q or Esc: stop)"

    def __init__(self):
        # Without a screen, OpenCV's Qt backend aborts the whole process on the first frame:
        # say so before anything starts.
        if sys.platform.startswith("linux") and not any(
                os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY",
                                                  "QT_QPA_PLATFORM")):
            raise PredictError("--camera shows the stream in a window, but this session has no "
                               "screen (DISPLAY is not set); nothing was read; run it in a "
                               "desktop session, or analyse a recording with "
                               "`python -m utils.predict VIDEO`")
        self.opened = False

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False once the user asked to stop."""
        if self.opened and cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            return False  # closed with its button
        cv2.imshow(self.TITLE, image)
        self.opened = True
        return (cv2.waitKey(1) & 0xFF) not in _QUIT_KEYS

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.TITLE)
            cv2.waitKey(1)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    overlap = np.prod(np.clip(np.minimum(a[:2] + a[2:], b[:2] + b[2:])
                              - np.maximum(a[:2], b[:2]), 0, None))
    return float(overlap / (np.prod(a[2:]) + np.prod(b[2:]) - overlap))


class LabelSmoother:
    """Each face followed from frame to frame (its box overlapping its box of the frame before),
    and its probabilities averaged over its last ``frames`` frames: a label that does not
    flicker with every frame's small changes."""

    def __init__(self, frames: int = SMOOTHING_FRAMES):
        self.frames = frames
        self.tracks: list[tuple[np.ndarray, deque]] = []  # (last box, recent probabilities)

    def update(self, boxes: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """float [N, classes]: each face's probabilities averaged over its track's frames."""
        unmatched = list(range(len(self.tracks)))
        tracks, smoothed = [], []
        for box, face_probabilities in zip(boxes, probabilities):
            overlaps = [box_iou(box, self.tracks[t][0]) for t in unmatched]
            if overlaps and max(overlaps) >= SAME_FACE_IOU:
                history = self.tracks[unmatched.pop(int(np.argmax(overlaps)))][1]
            else:
                history = deque(maxlen=self.frames)
            history.append(face_probabilities)
            tracks.append((box, history))
            smoothed.append(np.mean(history, axis=0))
        self.tracks = tracks  # a face missing from a frame starts again
        return np.array(smoothed).reshape(len(boxes), probabilities.shape[-1])


def camera_source(text: str) -> int | Path:
    """A device index (digits) or a video file standing in for the camera."""
    return int(text) if text.isdigit() else Path(text)


def run_camera(source: int | Path, model, out: Path | None = None, *, finder: FaceFinder,
               augment: bool = True, smooth_frames: int = SMOOTHING_FRAMES,
               overwrite: bool = False, display=None) -> list[str]:
    """Show the analysed stream until it ends or the display is closed, then write the
    outputs and return the summary's lines (Interrupted after writing them on Ctrl-C)."""
    if smooth_frames < 1:
        raise PredictError(f"--smooth must be at least 1 frame, got {smooth_frames}")
    if isinstance(source, Path) and not source.is_file():
        raise PredictError(f"{source}: no such video file (--camera takes a device number "
                           f"or a video file)")
    out = Path(out) if out is not None else Path("predictions") / (
        f"camera{source}" if isinstance(source, int) else source.stem)
    check_output_folder(out, overwrite)
    display = display if display is not None else WindowDisplay()
    reader = VideoReader(source)
    try:
        report = Report(OutputFolder(out, overwrite), "camera", reader.name, model,
                        face_charts=False, fps=reader.fps)
        smoother = LabelSmoother(smooth_frames)

        def show(item: Item) -> bool:
            smoothed = smoother.update(item.boxes, item.probabilities)
            texts = [f"{label_text(p, model.class_names)} | {model.class_names[s.argmax()]}"
                     for p, s in zip(item.probabilities, smoothed)]
            return display.show(annotate(item.image, item.regions, smoothed,
                                         model.class_names, texts))

        def notes() -> list[str]:
            if report.n_items == 0:
                raise PredictError(f"{reader.name}: no frame could be read; check the camera "
                                   f"or the video file")
            return []

        # One frame is read and its faces found while the one before is classified and shown.
        with ctrl_c_stops_gracefully(), ThreadPoolExecutor(
                1, thread_name_prefix="predict-camera") as pool:
            items = ordered_map(pool, lambda frame: finder.item(reader.name, frame[2],
                                                                *frame[:2]),
                                reader.frames(), window=2)
            return run(report, items, model, augment, total=None, notes=notes, on_item=show,
                       faces_per_run=1, items_per_run=1)
    finally:
        reader.release()
        display.close()
