"""What the app reads: images, folders of them and videos, as items (an image or a frame with its
faces cropped) or problems (a folder's file that cannot be read)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from loaders.sources import IMAGE_SIZE
from utils.predict.faces import FaceDetector, crop_faces
from utils.predict.model import EmotionModel

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".m4v")
# Faces gathered from consecutive images or frames before the network runs on them, and the
# most images or frames held meanwhile.
FACES_PER_RUN = 32
ITEMS_PER_RUN = 16


class PredictError(ValueError):
    """An input that cannot be used at all (missing, unreadable, a video that will not open)."""


@dataclass
class Item:
    """One image or video frame, its faces and (once classified) their probabilities."""
    source: str  # file name (relative to the input folder) or the video's name
    frame: int | None  # video frame number, from 0
    time: float | None  # seconds into the video
    image: np.ndarray  # BGR, as read
    boxes: np.ndarray  # int [N, 4]: x, y, w, h
    faces: np.ndarray  # uint8 [N, 48, 48]
    probabilities: np.ndarray | None = None


@dataclass
class Problem:
    source: str
    reason: str


def read_image(path: Path) -> np.ndarray | None:
    """BGR uint8, or None if OpenCV cannot decode the file (imdecode: any file name works)."""
    data = np.fromfile(path, np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def input_kind(path: Path) -> str:
    if not path.exists():
        raise PredictError(f"{path}: no such file or folder")
    if path.is_dir():
        return "folder"
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def folder_files(folder: Path) -> list[Path]:
    """Every non-hidden file under the folder, in sorted order."""
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(folder).parts))
    if not files:
        raise PredictError(f"{folder}: the folder holds no files")
    return files


def open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise PredictError(f"{path}: OpenCV cannot open this video")
    return capture


class Analyser:
    """Faces found (or, with detect=False, each whole image taken as one face) and cropped."""

    def __init__(self, detector: FaceDetector | None):
        self.detector = detector

    def item(self, source, image, frame=None, time=None) -> Item:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.detector is None:
            boxes = np.array([[0, 0, gray.shape[1], gray.shape[0]]])
        else:
            boxes = self.detector.detect(gray)
        return Item(source, frame, time, image, boxes, crop_faces(gray, boxes, IMAGE_SIZE))

    def images(self, paths: Iterable[Path], root: Path | None) -> Iterator[Item | Problem]:
        for path in paths:
            name = str(path.relative_to(root)) if root else path.name
            try:
                image = read_image(path)
            except OSError as err:
                yield Problem(name, f"cannot be read ({err.strerror or err})")
                continue
            if image is None:
                yield Problem(name, "not an image OpenCV can read")
                continue
            yield self.item(name, image)

    def frames(self, capture: cv2.VideoCapture, name: str, every: int) -> Iterator[Item]:
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        frame = 0
        while True:
            ok, image = capture.read()
            if not ok:
                return
            if frame % every == 0:
                yield self.item(name, image, frame, frame / fps if fps else None)
            frame += 1


def classified(items: Iterable[Item | Problem], model: EmotionModel,
               augment: bool) -> Iterator[Item | Problem]:
    """The items in order, each with its faces' probabilities; the network runs on the faces
    of several consecutive items at once."""
    pending: list[Item | Problem] = []

    def flush():
        analysed = [item for item in pending if isinstance(item, Item)]
        if analysed:
            probabilities = model.probabilities(
                np.concatenate([item.faces for item in analysed]), augment)
            ends = np.cumsum([len(item.faces) for item in analysed])[:-1]
            for item, rows in zip(analysed, np.split(probabilities, ends)):
                item.probabilities = rows
        yield from pending
        pending.clear()

    n_faces = 0
    for item in items:
        pending.append(item)
        n_faces += len(item.faces) if isinstance(item, Item) else 0
        # Frames are held until classified: bound them too, not only the faces.
        if n_faces >= FACES_PER_RUN or len(pending) >= ITEMS_PER_RUN:
            yield from flush()
            n_faces = 0
    yield from flush()
