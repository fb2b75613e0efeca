"""A run over an image, a folder or a video: items read, classified in batches, reported."""
from __future__ import annotations

from pathlib import Path

import cv2

from utils.predict.faces import FaceDetector
from utils.predict.inputs import (Analyser, PredictError, Problem, classified, folder_files,
                                  input_kind, open_video)
from utils.predict.model import EmotionModel
from utils.predict.report import Report


def predict(input_path: Path, model: EmotionModel, out: Path | None = None, *,
            detector: FaceDetector | None, augment: bool = True, every: int = 1,
            face_charts: bool | None = None) -> list[str]:
    """Analyse an image, a folder or a video, write the outputs into ``out`` (default
    predictions/<input name>/) and return the summary's lines. ``detector=None`` takes each
    image or frame as one face. Raises PredictError for an input that cannot be used at all;
    a folder's unreadable files are skipped and listed instead."""
    if every < 1:
        raise PredictError(f"--every must be at least 1, got {every}")
    input_path = Path(input_path)
    kind = input_kind(input_path)
    files = folder_files(input_path) if kind == "folder" else [input_path]
    input_name = input_path.name if kind == "folder" else input_path.stem
    report = Report(Path(out) if out is not None else Path("predictions") / input_name, kind,
                    input_path.name, model.class_names, every=every,
                    face_charts=face_charts if face_charts is not None else kind != "video")
    analyser = Analyser(detector)
    capture = None
    if kind == "video":
        capture = open_video(input_path)
        report.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        items = analyser.frames(capture, input_path.name, every)
    else:
        items = analyser.images(files, input_path if kind == "folder" else None)
        if kind == "image":
            items = list(items)
            if isinstance(items[0], Problem):
                raise PredictError(f"{input_path}: {items[0].reason}")
    try:
        for item in classified(items, model, augment):
            report.add(item)
    except BaseException:
        report.discard_video()
        raise
    finally:
        if capture is not None:
            capture.release()
    if kind == "video" and report.n_items == 0:
        raise PredictError(f"{input_path}: no frame could be read from this video")
    return report.finish(model.describe(augment))
