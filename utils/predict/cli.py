"""The command line: python -m utils.predict INPUT [options]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.model_io import ModelFileError
from utils.predict.faces import DetectorSettings, FaceDetector, FaceDetectorError
from utils.predict.inputs import VIDEO_EXTENSIONS, PredictError, input_kind
from utils.predict.model import DEFAULT_MODEL, EmotionModel
from utils.predict.pipeline import predict


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = DetectorSettings()
    parser = argparse.ArgumentParser(
        prog="python -m utils.predict",
        description="Find the faces in a photo, a folder of photos or a video, classify each "
                    "one's expression with a trained model, and write annotated images, "
                    "probability bar charts, a CSV of every face and, for folders and videos, "
                    "the frequency of each emotion.")
    parser.add_argument("input", type=Path, help="an image, a folder of images, or a video "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="a model.msgpack saved by run_experiment.py, or its folder "
                             "(default: the shipped trained_models/default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: predictions/<input name>/)")
    parser.add_argument("--no-detect", action="store_true",
                        help="the inputs are face crops already: take each whole image as "
                             "one face")
    parser.add_argument("--no-augment", action="store_true",
                        help="classify the plain view only, not the average over the model's "
                             "test-time views (image + mirror, or its variant's versions)")
    parser.add_argument("--scale-factor", type=float, default=defaults.scale_factor,
                        help="Haar cascade: size step between detection scales "
                             f"(default {defaults.scale_factor})")
    parser.add_argument("--min-neighbors", type=int, default=defaults.min_neighbors,
                        help="Haar cascade: overlapping detections a face needs; more: fewer "
                             f"false faces (default {defaults.min_neighbors})")
    parser.add_argument("--min-size", type=int, default=defaults.min_size,
                        help=f"smallest face side in pixels (default {defaults.min_size})")
    parser.add_argument("--every", type=int, default=1,
                        help="video: analyse every N-th frame (default 1: all)")
    parser.add_argument("--face-charts", action=argparse.BooleanOptionalAction, default=None,
                        help="one probability bar chart per face (default: yes for images and "
                             "folders, no for videos)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        settings = DetectorSettings(args.scale_factor, args.min_neighbors, args.min_size)
        input_kind(args.input)  # a missing input is reported before the model is loaded
        detector = None if args.no_detect else FaceDetector(settings)
        model = EmotionModel(args.model)
        lines = predict(args.input, model, args.out, detector=detector,
                        augment=not args.no_augment, every=args.every,
                        face_charts=args.face_charts)
    except (PredictError, ModelFileError, FaceDetectorError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
