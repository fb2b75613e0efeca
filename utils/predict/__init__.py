"""Emotions of the faces in a photo, a folder of photos or a video, with a trained model.

    python -m utils.predict photo.jpg                    # the shipped default model
    python -m utils.predict photos/ --model trained_models/A_mirror --out results/
    python -m utils.predict news.mp4 --every 5

Faces are found (``faces``), cut out, made 48x48 grayscale and classified by the model's own
network (``model``); ``inputs`` reads images, folders and videos, ``pipeline`` runs them
through, ``report`` and ``drawing`` write the outputs, ``cli`` is the command line.
"""
from utils.predict.cli import main, parse_arguments
from utils.predict.faces import DetectorSettings, FaceDetector, FaceDetectorError, crop_faces
from utils.predict.inputs import PredictError
from utils.predict.model import DEFAULT_MODEL, EmotionModel
from utils.predict.pipeline import predict

__all__ = ["DEFAULT_MODEL", "DetectorSettings", "EmotionModel", "FaceDetector",
           "FaceDetectorError", "PredictError", "crop_faces", "main", "parse_arguments",
           "predict"]
