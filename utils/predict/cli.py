"""The command line: python -m utils.predict INPUT [options], or --camera SOURCE.

Every failure ends in one sentence on stderr (what happened, what is safe, what to do) and an
exit status: 2 for an input, output, option or model that cannot be used, 130 for Ctrl-C
(after writing the outputs of what was analysed). With ``--onnx`` an exported file classifies
the faces through onnxruntime, and JAX is never imported.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from utils.evaluation.onnx_model import OnnxModelError
from utils.predict.camera import SMOOTHING_FRAMES, camera_source, run_camera
from utils.predict.errors import Interrupted, PredictError, ctrl_c_stops_gracefully
from utils.predict.faces import DETECTORS, DetectorSettings, FaceDetectorError, make_detector
from utils.predict.inputs import VIDEO_EXTENSIONS, FaceFinder
from utils.predict.loading import LoadingModel
from utils.predict.onnx_model import ExportedModel
from utils.predict.pipeline import predict
from utils.predict.shipped import SHIPPED, VIEW_CHOICES, model_path, views_for

EXIT_UNUSABLE, EXIT_INTERRUPTED = 2, 130


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m utils.predict",
        description="Find the faces in a photo, a folder of photos, a video or a live camera, "
                    "classify each one's expression with a trained model, and write annotated "
                    "images, probability bar charts, a CSV of every face and, for folders, "
                    "videos and the camera, the frequency of each emotion.")
    parser.add_argument("input", type=Path, nargs="?", help="an image, a folder of images, "
                        f"or a video ({', '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--camera", metavar="SOURCE", default=None,
                        help="instead of INPUT: show a camera's analysed stream live (a device "
                             "number, 0 for the first camera, or a video file standing in)")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="a model.msgpack saved by run_experiment.py, or its folder, or a "
                             f"shipped model's name ({', '.join(SHIPPED)}; default: default); "
                             "give it several times for an ensemble (probabilities averaged)")
    parser.add_argument("--onnx", type=Path, default=None, metavar="FILE.onnx",
                        help="instead of --model: a file written by python -m utils.export, "
                             "run by onnxruntime (no JAX needed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: predictions/<input name>/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out")
    _face_options(parser.add_argument_group("faces"))
    _run_options(parser.add_argument_group("classification and outputs"))
    args = parser.parse_args(argv)
    if (args.input is None) == (args.camera is None):
        parser.error("give either INPUT or --camera SOURCE")
    if args.onnx is not None and args.model:
        parser.error("give --model or --onnx, not both")
    if args.no_augment:
        if args.views == "model":
            parser.error("--no-augment is --views plain: give one of them")
        args.views = "plain"
    if args.onnx is None:  # an exported file has its views in its graph
        args.views = views_for(args.model, args.views)
    return args


def load_model(args: argparse.Namespace):
    """The exported file of --onnx, or the --model files (the default model) as an ensemble."""
    if args.onnx is not None:
        return ExportedModel(args.onnx)
    from utils.predict.model import DEFAULT_MODEL, load_models  # JAX: only on this path
    from utils.support import compile_cache

    compile_cache.enable()  # before the models' first compilation: a second run loads it
    return load_models([model_path(path) for path in args.model or []] or [DEFAULT_MODEL])


def unusable() -> tuple[type, ...]:
    """The errors that end in one sentence; the framework's model errors where its models were
    loaded (the --onnx path never imports them, nor JAX)."""
    model_io = sys.modules.get("utils.models.model_io")
    return (PredictError, FaceDetectorError, OnnxModelError) + (
        (model_io.ModelFileError,) if model_io else ())


def _face_options(group) -> None:
    defaults = DetectorSettings()
    group.add_argument("--detector", choices=DETECTORS, default=defaults.detector,
                       help="yunet (default): finds turned faces, gives landmarks for "
                            "alignment; haar: OpenCV's frontal Haar cascade")
    group.add_argument("--no-detect", action="store_true",
                       help="the inputs are face crops already: take each whole image as one "
                            "face")
    group.add_argument("--no-align", action="store_true",
                       help="cut faces upright instead of turning them eyes-level (yunet)")
    group.add_argument("--min-size", type=int, default=defaults.min_size,
                       help=f"smallest face side in pixels (default {defaults.min_size})")
    group.add_argument("--min-score", type=float, default=defaults.min_score,
                       help="yunet: lowest detection score kept; lower finds more faces and "
                            f"more false ones (default {defaults.min_score})")
    group.add_argument("--detect-size", type=int, default=defaults.detect_size,
                       help="yunet: larger images are scaled down to this longest side for "
                            f"detection (default {defaults.detect_size}; larger finds smaller "
                            "faces, slower)")
    group.add_argument("--scale-factor", type=float, default=defaults.scale_factor,
                       help="haar: size step between detection scales "
                            f"(default {defaults.scale_factor})")
    group.add_argument("--min-neighbors", type=int, default=defaults.min_neighbors,
                       help="haar: overlapping detections a face needs; more: fewer false "
                            f"faces (default {defaults.min_neighbors})")


def _run_options(group) -> None:
    group.add_argument("--views", choices=VIEW_CHOICES, default=None,
                       help="model: the outputs averaged over the model's test-time views "
                            "(the default model's ten-crop); plain: its plain view only, "
                            "faster (default: plain for the shipped fast model, else model)")
    group.add_argument("--no-augment", action="store_true",
                       help="the same as --views plain")
    group.add_argument("--every", type=int, default=1,
                       help="video: analyse every N-th frame (default 1: all)")
    group.add_argument("--face-charts", action=argparse.BooleanOptionalAction, default=None,
                       help="one probability bar chart per face (default: yes for a single "
                            "image, no for folders and videos)")
    group.add_argument("--annotated", action=argparse.BooleanOptionalAction, default=None,
                       help="an annotated copy of each image in annotated/ (default: yes, "
                            "except for a folder with --no-detect: crops, whose faces.csv says "
                            "it all)")
    group.add_argument("--smooth", type=int, default=SMOOTHING_FRAMES,
                       help="camera: frames a face's shown label is averaged over "
                            f"(default {SMOOTHING_FRAMES})")
    group.add_argument("--workers", type=int, default=None,
                       help="threads decoding images, finding faces and writing outputs "
                            f"(default: the CPU count, {os.cpu_count()})")


def run(args: argparse.Namespace) -> list[str]:
    settings = DetectorSettings(args.detector, args.min_size, args.min_score, args.detect_size,
                                args.scale_factor, args.min_neighbors)
    if args.workers is not None and args.workers < 1:
        raise PredictError(f"--workers must be at least 1, got {args.workers}")
    finder = FaceFinder(None if args.no_detect else make_detector(settings),
                        align=not args.no_align)
    if args.camera is not None:
        return run_camera(camera_source(args.camera), load_model(args), args.out,
                          finder=finder, augment=args.views != "plain",
                          smooth_frames=args.smooth, overwrite=args.overwrite)
    # The model loads once predict has found the input and the output folder usable (a refused
    # run ends at once), while the first images are read and their faces found.
    model = LoadingModel(lambda: load_model(args))
    return predict(args.input, model, args.out, finder=finder, augment=args.views != "plain",
                   every=args.every, face_charts=args.face_charts, annotated=args.annotated,
                   overwrite=args.overwrite, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        with ctrl_c_stops_gracefully():  # also while the model loads: checked when a run starts
            lines = run(args)
    except unusable() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except Interrupted as stopped:
        print("\n".join(stopped.lines))
        print(f"interrupted: the outputs of what was analysed until then are complete in "
              f"{stopped.out}; run the command again (with --overwrite) to analyse everything",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # writing the outputs failed (a full disk, a folder removed)
        print(f"error: {err.filename or 'the outputs'}: {err.strerror or err}; the run stopped "
              f"and nothing was written (an earlier run's outputs are unchanged); free some "
              f"space or give another --out", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("interrupted before the outputs were complete: nothing was written (an earlier "
              "run's outputs are unchanged); run the command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n".join(lines))
    for line in lines:
        if line.startswith("warning: "):
            print(line, file=sys.stderr)
    return 0
