"""The command line: python -m utils.export MODEL --onnx OUT.onnx [--views all|plain].

The file is checked before it is written: read back as ``utils.predict --onnx`` reads it
(metadata, checksum), run by onnxruntime on faces of the built-in sample, its probabilities held
against ``utils.evaluation.inference``'s; then written under a temporary name and renamed into
place, so OUT is a whole, checked file or is not touched. Every failure is one sentence on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loaders.sources import DatasetError
from utils.evaluation.inference import InferenceModel
from utils.evaluation.onnx_model import OnnxModel, OnnxModelError
from utils.experiments.records import code_version
from utils.export.check import check_faces, compare, tolerance
from utils.export.converter import VIEWS, convert
from utils.export.views import UnknownVariant
from utils.models.model_io import ModelFileError
from utils.support.safe_files import atomic_write

EXIT_UNUSABLE = 2


class ExportError(ValueError):
    """An export that cannot be made (one sentence: what, why, what to do)."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m utils.export",
        description="Export a saved model as an ONNX file that onnxruntime, OpenCV's dnn "
                    "module and onnxruntime-web run without this framework: faces float32 "
                    "[N, 48, 48, 1] in [0, 1] in, the probabilities [N, classes] out, the "
                    "test-time views inside the graph.")
    parser.add_argument("model", type=Path,
                        help="a model.msgpack saved by run_experiment.py, or its folder")
    parser.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx",
                        help="the ONNX file to write")
    parser.add_argument("--views", choices=VIEWS, default="all",
                        help="all (default): the softmax of the outputs averaged over the "
                             "model's test-time views, as utils.predict computes it; plain: "
                             "the centre view alone (utils.predict --no-augment)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return parser.parse_args(argv)


def _converted(model: InferenceModel, views: str) -> bytes:
    try:
        proto = convert(model, views, code_version())
    except ImportError as err:
        raise ExportError(f"exporting needs jax2onnx, onnx, onnxruntime and onnxslim ({err}); "
                          f"install them with pip install 'fer-jax[export]'") from None
    except UnknownVariant as err:
        raise ExportError(f"{model.path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a converter failure on a user's own layers
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ExportError(f"{model.path}: jax2onnx cannot convert network "
                          f"{model.network.name} ({type(err).__name__}: {first_line[:300]}); "
                          f"its layers must be jax.numpy/jax.lax operations that ONNX has "
                          f"(the layer contract's built-in layers all are)") from None
    return proto.SerializeToString()


def export(model_path: Path, out: Path, views: str = "all", overwrite: bool = False) -> list:
    """Export, check and write; the summary's lines."""
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (--overwrite replaces it)")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the file to write, e.g. {out}/model.onnx")
    model = InferenceModel(model_path)
    data = _converted(model, views)
    exported = OnnxModel(out, data)
    faces = check_faces()
    difference, disagreements = compare(exported, model, faces)
    allowed = tolerance(model.variant.name)
    if difference > allowed or disagreements:
        raise ExportError(f"{model.path}: the exported graph's probabilities differ from the "
                          f"framework's by up to {difference:.2g} (allowed {allowed:g}) and "
                          f"their argmax on {disagreements} of {len(faces)} sample faces, so "
                          f"{out} was not written; please report this with the model")
    atomic_write(out, data)
    return [f"wrote {out} ({len(data) / 1e6:.1f} MB): network {model.network.name}, "
            f"{len(exported.class_names)} classes ({', '.join(exported.class_names)}), "
            f"{exported.n_views} view{'s' * (exported.n_views > 1)} ({views})",
            f"checked: onnxruntime's probabilities on {len(faces)} sample faces within "
            f"{difference:.1e} of the framework's, the same argmax"]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        lines = export(args.model, args.onnx, args.views, args.overwrite)
    except (ExportError, ModelFileError, OnnxModelError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as err:
        print(f"error: {err.filename or args.onnx}: {err.strerror or err}; nothing was "
              f"written (an existing file is unchanged)", file=sys.stderr)
        return EXIT_UNUSABLE
    print("\n".join(lines))
    return 0
