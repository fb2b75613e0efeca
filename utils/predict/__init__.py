"""Emotions of the faces in a photo, a folder of photos, a video or a live camera, with a
trained model (or an ensemble of several).

    python -m utils.predict photo.jpg                    # the shipped default model
    python -m utils.predict photos/ --model trained_models/A_mirror --out results/
    python -m utils.predict news.mp4 --every 5
    python -m utils.predict --camera 0                   # live, in a window

The package, by responsibility: ``faces`` (YuNet or Haar detection, FER framing, alignment,
crops; ``yunet_onnx``: YuNet in onnxruntime), ``model`` (saved models compiled for fixed batch
shapes, ensembles; imported when first used, so ``--onnx`` runs without JAX), ``loading`` (a
model loaded in a thread while the first images are read), ``onnx_model`` (an exported file,
``--onnx``), ``inputs`` (images, folders, videos, cameras), ``pipeline`` (threads, batches,
the run), ``report`` and ``drawing`` (everything written), ``output`` (the output folder,
replaced only when complete), ``camera`` (the live window), ``cli`` (the command line);
``benchmark`` and ``alignment`` measure the speed and the alignment (docs/predict.md).
"""
from utils.predict.camera import LabelSmoother, run_camera
from utils.predict.cli import main, parse_arguments
from utils.predict.errors import Interrupted, PredictError
from utils.predict.faces import (DetectorSettings, Detections, FaceDetectorError, HaarDetector,
                                 YuNetDetector, crop_faces, cut_faces, face_regions,
                                 make_detector)
from utils.predict.inputs import FaceFinder
from utils.predict.onnx_model import ExportedModel
from utils.predict.pipeline import predict

_MODEL_NAMES = ("DEFAULT_MODEL", "EmotionModel", "Ensemble", "load_models")


def __getattr__(name: str):
    # utils.predict.model imports JAX: loaded on first use, never by the --onnx path.
    if name in _MODEL_NAMES:
        from utils.predict import model
        return getattr(model, name)
    raise AttributeError(f"module 'utils.predict' has no attribute {name!r}")


__all__ = ["DEFAULT_MODEL", "Detections", "DetectorSettings", "EmotionModel", "Ensemble",
           "ExportedModel", "FaceDetectorError", "FaceFinder", "HaarDetector", "Interrupted", "LabelSmoother",
           "PredictError", "YuNetDetector", "crop_faces", "cut_faces", "face_regions",
           "load_models", "main", "make_detector", "parse_arguments", "predict", "run_camera"]
