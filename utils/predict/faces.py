"""Faces in photos: detection (YuNet by default, or OpenCV's Haar cascade), and 48x48 crops
framed as FER2013's faces are, turned so that the eyes are level.

    detector = make_detector(DetectorSettings())       # YuNet; DetectorSettings("haar")
    found = detector.detect(image)                     # Detections: boxes, landmarks, scores
    regions = face_regions(found, align=True)          # [N, 5]: centre x, y, w, h, angle
    faces = cut_faces(gray, regions)                   # uint8 [N, 48, 48]

YuNet (``models/``, run by onnxruntime, ``yunet_onnx``, or by ``cv2.FaceDetectorYN``: the
same faces within float rounding; ``yunet_runtime`` says which) finds turned and tilted faces
the frontal cascade misses, and gives five landmarks per face. FER2013's faces were registered
by a detector of their own, so a crop must be framed like them: on FER2013's faces (upscaled, as
``python -m utils.predict.alignment --fit-framing`` measures) YuNet's box is centred on the
48x48 image (within 1 % of its height) and its height is ``BOX_HEIGHT_TO_FER_SIDE`` times the
image's side. So each face is cut as that square around its box, turned by the angle of its eye
line: the crop has the eyes level, where FER2013's faces have them on average. (Fitting the
landmarks to their mean FER2013 positions instead framed turned heads too tightly, and
classified 1-2 points fewer faces right.) Without alignment the same square is cut upright. The
cascade has no landmarks: its box is the square (on upscaled FER2013 faces it covers the 48x48
image almost exactly: median 97.9 % of its side, centred within 1 %).
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from loaders.sources import IMAGE_SIZE
from utils.support.host_tuning import cpu_vendor

YUNET_FILE = Path(__file__).resolve().parent / "models" / "face_detection_yunet_2026may.onnx"
# alt2 rather than frontalface_default: on the sample's faces it finds as many (76 % at
# min_neighbors=5) with twenty times fewer double detections (0.1 % against 2 %).
CASCADE_FILE = "haarcascade_frontalface_alt2.xml"
DETECTORS = ("yunet", "haar")
# The side of FER2013's 48x48 frame over the height of YuNet's box on its faces (the median over
# 1,000 Training faces upscaled 4x: `python -m utils.predict.alignment --fit-framing`).
BOX_HEIGHT_TO_FER_SIDE = 0.956
_NMS_THRESHOLD = 0.3  # opencv_zoo's YuNet demo value
_TOP_K = 5000
# What runs YuNet's network: onnxruntime (utils.predict.yunet_onnx, OpenCV's faces within float
# rounding) or OpenCV's FaceDetectorYN. onnxruntime took 14 ms of CPU a 640x480 frame against
# OpenCV's 25-28 ms on a 2-core AMD EPYC (Zen 3); elsewhere OpenCV until measured (`python -m
# utils.predict.benchmark` prints both). FER_YUNET_RUNTIME=onnxruntime|opencv chooses.
YUNET_RUNTIMES = ("onnxruntime", "opencv")
ONNXRUNTIME_MEASURED_VENDORS = ("AuthenticAMD",)


class FaceDetectorError(ValueError):
    """A detector that cannot work: invalid settings, or a model or cascade file OpenCV cannot
    load."""


@dataclass(frozen=True)
class DetectorSettings:
    """Which detector and its knobs. Both: faces smaller than ``min_size`` pixels are ignored.
    YuNet: faces scoring below ``min_score`` are dropped; images larger than ``detect_size``
    (longest side) are scaled down to it for detection (YuNet finds faces of about 10 to 300
    pixels; the time grows with the pixels). Cascade: finer ``scale_factor`` steps and fewer
    ``min_neighbors`` find more faces and more false ones."""
    detector: str = "yunet"
    min_size: int = 30
    min_score: float = 0.6
    detect_size: int = 640
    scale_factor: float = 1.1
    min_neighbors: int = 5
    yunet_runtime: str | None = None  # None: yunet_runtime()'s choice for this machine

    def __post_init__(self):
        checks = [
            (self.detector in DETECTORS, f"unknown detector {self.detector!r} (choose one of "
                                         f"{', '.join(DETECTORS)})"),
            (self.scale_factor > 1.0, "scale factor must be > 1 (each detection scale is this "
                                      f"much larger than the previous), got {self.scale_factor}"),
            (self.min_neighbors >= 0, f"min neighbours must be >= 0, got {self.min_neighbors}"),
            (self.min_size >= 1, f"min size must be >= 1 pixel, got {self.min_size}"),
            (0.0 < self.min_score < 1.0, f"min score must be between 0 and 1, got "
                                         f"{self.min_score}"),
            (self.detect_size >= 32, f"detect size must be >= 32 pixels, got "
                                     f"{self.detect_size}"),
            (self.yunet_runtime in (None, *YUNET_RUNTIMES),
             f"unknown YuNet runtime {self.yunet_runtime!r} (choose one of "
             f"{', '.join(YUNET_RUNTIMES)})"),
        ]
        for ok, message in checks:
            if not ok:
                raise FaceDetectorError(message)


class Detections(NamedTuple):
    """What a detector found in one image, in reading order."""
    boxes: np.ndarray  # float [N, 4]: x, y, w, h as the detector gave them
    landmarks: np.ndarray  # float [N, 5, 2] (NaN for the cascade, which has none)
    scores: np.ndarray  # float [N] (NaN for the cascade)

    def in_reading_order(self) -> Detections:
        order = reading_order(self.boxes)
        return Detections(self.boxes[order], self.landmarks[order], self.scores[order])


class _PerThread:
    """One OpenCV detector object per thread: their detect() calls are not thread-safe."""

    def __init__(self, settings: DetectorSettings = DetectorSettings()):
        self.settings = settings
        self._local = threading.local()
        self.detect(np.zeros((64, 64, 3), np.uint8))  # a file OpenCV cannot load fails now

    def _instance(self):
        if not hasattr(self._local, "instance"):
            self._local.instance = self._create()
        return self._local.instance


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def yunet_runtime() -> str:
    """What runs YuNet on this machine: $FER_YUNET_RUNTIME, else onnxruntime where it was
    measured faster and is installed, else OpenCV."""
    chosen = os.environ.get("FER_YUNET_RUNTIME")
    if chosen:
        if chosen not in YUNET_RUNTIMES:
            raise FaceDetectorError(f"FER_YUNET_RUNTIME={chosen!r} is not a YuNet runtime "
                                    f"(choose one of {', '.join(YUNET_RUNTIMES)}, or unset it)")
        return chosen
    if cpu_vendor() in ONNXRUNTIME_MEASURED_VENDORS and onnxruntime_installed():
        return "onnxruntime"
    return "opencv"


class YuNetDetector(_PerThread):
    def __init__(self, settings: DetectorSettings = DetectorSettings()):
        self.runtime = settings.yunet_runtime or yunet_runtime()
        self._shared = None  # onnxruntime's session serves every thread
        if self.runtime == "onnxruntime":
            from utils.predict.yunet_onnx import OnnxYuNet

            if not onnxruntime_installed():
                raise FaceDetectorError("YuNet through onnxruntime was asked for, but "
                                        "onnxruntime is not installed: pip install "
                                        "onnxruntime, or set FER_YUNET_RUNTIME=opencv")
            try:
                self._shared = OnnxYuNet(YUNET_FILE, settings.min_score, _NMS_THRESHOLD, _TOP_K)
            except Exception as err:  # onnxruntime's own error types, one per failure
                raise FaceDetectorError(f"{YUNET_FILE}: onnxruntime cannot load this "
                                        f"face-detection model ({str(err).strip()[:200]})"
                                        ) from None
        super().__init__(settings)

    def _create(self):
        try:
            return cv2.FaceDetectorYN.create(str(YUNET_FILE), "", (320, 320),
                                             self.settings.min_score, _NMS_THRESHOLD, _TOP_K)
        except cv2.error as err:
            raise FaceDetectorError(f"{YUNET_FILE}: OpenCV cannot load this face-detection "
                                    f"model ({str(err).strip().splitlines()[-1]})") from None

    def _found(self, image: np.ndarray) -> np.ndarray | None:
        """YuNet's raw output for a BGR image: float32 [N, 15], or None for no face."""
        if self._shared is not None:
            return self._shared.detect(image)
        detector = self._instance()
        detector.setInputSize((image.shape[1], image.shape[0]))
        return detector.detect(image)[1]

    def detect(self, image: np.ndarray) -> Detections:
        """The faces in a BGR (or grayscale) uint8 image."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        scale = min(1.0, self.settings.detect_size / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self._found(image)
        found = np.zeros((0, 15), np.float32) if found is None else found.astype(np.float64)
        found[:, :14] /= scale
        keep = found[:, 2:4].min(axis=1) >= self.settings.min_size
        found = found[keep]
        return Detections(found[:, :4], found[:, 4:14].reshape(-1, 5, 2),
                          found[:, 14]).in_reading_order()


class HaarDetector(_PerThread):
    def _create(self):
        path = cv2.data.haarcascades + CASCADE_FILE
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise FaceDetectorError(f"{path}: OpenCV cannot load this cascade file")
        return cascade

    def detect(self, image: np.ndarray) -> Detections:
        """The faces in a BGR or grayscale uint8 image."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        s = self.settings
        found = self._instance().detectMultiScale(gray, scaleFactor=s.scale_factor,
                                                  minNeighbors=s.min_neighbors,
                                                  minSize=(s.min_size, s.min_size))
        boxes = np.asarray(found, np.float64).reshape(-1, 4)
        return Detections(boxes, np.full((len(boxes), 5, 2), np.nan),
                          np.full(len(boxes), np.nan)).in_reading_order()


def make_detector(settings: DetectorSettings = DetectorSettings()) -> YuNetDetector | HaarDetector:
    return (YuNetDetector if settings.detector == "yunet" else HaarDetector)(settings)


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """The order that sorts boxes into rows (top to bottom), each row left to right (rows:
    boxes whose tops differ by less than half the smaller height)."""
    by_top = np.argsort(boxes[:, 1], kind="stable")
    rows: list[list[int]] = []
    for index in by_top:
        first = rows[-1][0] if rows else None
        if first is not None and boxes[index, 1] - boxes[first, 1] < min(
                boxes[index, 3], boxes[first, 3]) / 2:
            rows[-1].append(index)
        else:
            rows.append([index])
    return np.array([i for row in rows for i in sorted(row, key=lambda i: boxes[i, 0])], int)


# ---------------------------------------------------------------------------------- framing
def face_regions(found: Detections, align: bool = True) -> np.ndarray:
    """float [N, 5]: the region each face is cut from, as FER2013 frames faces: centre x,
    centre y, width, height, and angle in degrees (clockwise on screen: the tilt of the eye
    line, which the crop turns back). With landmarks (YuNet), the FER square around the box,
    turned by the eye line's angle (upright with ``align=False``); without (cascade, whole
    image), the box itself, upright."""
    x, y, w, h = found.boxes.T
    regions = np.stack([x + w / 2, y + h / 2, w, h, np.zeros_like(x)], axis=1)
    framed = ~np.isnan(found.landmarks).any(axis=(1, 2))
    regions[framed, 2:4] = BOX_HEIGHT_TO_FER_SIDE * h[framed, None]
    if align:
        eyes = found.landmarks[framed, 1] - found.landmarks[framed, 0]
        regions[framed, 4] = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    return regions


def region_boxes(regions: np.ndarray) -> np.ndarray:
    """int [N, 4]: x, y, w, h of each region before its turn (the CSV's box)."""
    top_left = regions[:, :2] - regions[:, 2:4] / 2
    return np.round(np.concatenate([top_left, regions[:, 2:4]], axis=1)).astype(np.int64)


def region_corners(regions: np.ndarray) -> np.ndarray:
    """float [N, 4, 2]: each turned region's corners, clockwise from its top-left."""
    angle = np.radians(regions[:, 4])
    across = np.stack([np.cos(angle), np.sin(angle)], axis=1) * regions[:, 2:3] / 2
    down = np.stack([-np.sin(angle), np.cos(angle)], axis=1) * regions[:, 3:4] / 2
    centre = regions[:, :2]
    return np.stack([centre - across - down, centre + across - down,
                     centre + across + down, centre - across + down], axis=1)


# ---------------------------------------------------------------------------------- crops
def cut_faces(gray: np.ndarray, regions: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [N, size, size]: each region cut out of a grayscale image, turned upright and
    resized. An upright region on whole pixels inside the image is resized as a box
    (``crop_faces``); any other (a square: YuNet's frame) is sampled, edge pixels repeated
    beyond the image."""
    faces = np.empty((len(regions), size, size), np.uint8)
    for index, region in enumerate(regions):
        box = region_boxes(region[None])[0]
        x, y, w, h = box
        on_pixels = np.allclose(region[:4], [x + w / 2, y + h / 2, w, h], atol=1e-6)
        inside = x >= 0 and y >= 0 and x + w <= gray.shape[1] and y + h <= gray.shape[0]
        if region[4] == 0 and on_pixels and inside:
            faces[index] = crop_faces(gray, box[None], size)[0]
        else:
            faces[index] = _sampled_face(gray, region, size)
    return faces


def _sampled_face(gray: np.ndarray, region: np.ndarray, size: int) -> np.ndarray:
    centre_x, centre_y, side, _, angle = region
    if size / side < 0.5:
        # Bilinear sampling of a much larger face would alias: first shrink the face's
        # neighbourhood by area averaging to twice the crop's size.
        reach = side * 0.75  # beyond the half-diagonal, so the turned square stays inside
        left, top = max(0, int(centre_x - reach)), max(0, int(centre_y - reach))
        right = min(gray.shape[1], int(np.ceil(centre_x + reach)))
        bottom = min(gray.shape[0], int(np.ceil(centre_y + reach)))
        factor = 2 * size / side
        width = max(1, round((right - left) * factor))
        height = max(1, round((bottom - top) * factor))
        gray = cv2.resize(gray[top:bottom, left:right], (width, height),
                          interpolation=cv2.INTER_AREA)
        centre_x = (centre_x - left) * width / (right - left)
        centre_y = (centre_y - top) * height / (bottom - top)
        side = 2 * size
    # OpenCV's pixel centres are at whole coordinates, a region's edges at whole ones too.
    matrix = cv2.getRotationMatrix2D((centre_x - 0.5, centre_y - 0.5), angle, size / side)
    matrix[:, 2] += (size / 2 - centre_x, size / 2 - centre_y)
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def crop_faces(gray: np.ndarray, boxes: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [N, size, size]: each box (inside the image, as the cascade gives them) cut out
    and resized."""
    faces = np.empty((len(boxes), size, size), np.uint8)
    for index, (x, y, w, h) in enumerate(np.asarray(boxes, np.int64)):
        # INTER_AREA averages the pixels a shrunk pixel covers (no aliasing); cubic to enlarge.
        interpolation = cv2.INTER_AREA if w >= size else cv2.INTER_CUBIC
        faces[index] = cv2.resize(gray[y:y + h, x:x + w], (size, size),
                                  interpolation=interpolation)
    return faces
