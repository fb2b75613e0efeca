"""Saved models ready to classify faces, and ensembles of several models.

A model sees exactly what its dataset's `test` split held (the 48x48 face, or its centre crop
for `crop5`/`variant14` models, or the centre window for a model trained on ``crop_to``
windows). With ``augment`` each face's pre-softmax outputs are averaged over the model's
test-time views (``utils.training.views``: its variant's versions, each in the online views it was
trained with): the argmax is the launcher's augmented test, the probabilities the softmax of
the average. An ensemble averages its models' probabilities. Loading, checks, views and the
fixed-shape batches are ``utils.evaluation.inference``'s.
"""
from __future__ import annotations


import numpy as np

from utils.evaluation.batching import images_per_batch
from utils.evaluation.inference import InferenceModel, Pending, ensemble_probabilities
from utils.models.model_io import ModelFileError
from utils.predict.shipped import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "EmotionModel", "Ensemble", "load_models"]



class EmotionModel(InferenceModel):
    """A saved model, checked on load (a clear ModelFileError naming the file otherwise)."""

    def describe(self, augment: bool) -> str:
        size = self.variant.image_size
        views = (f"outputs averaged over {self.describe_views()}" if augment
                 else "plain view only")
        return (f"model {self.path} (network {self.network.name}, trained on the "
                f"{self.variant.name} variant, {size}x{size}); {views}")

    def batch_faces(self, augment: bool) -> int:
        """Faces in one of the network's large batches (its plain view, or every view)."""
        return images_per_batch(self.online.n_views if augment else 1)

    def start(self, faces: np.ndarray, augment: bool) -> Pending:
        """Start the network on uint8 48x48 faces [N, 48, 48] and return at once (JAX runs it
        in its own threads): the plain view, or with ``augment`` every test-time view."""
        return (self.views(self.versions(faces)) if augment
                else self.plain(self.test_view(faces)))

    def logits(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        """float64 [N, classes]: the plain view's outputs, or with ``augment`` their mean over
        the test-time views."""
        return self.start(faces, augment).logits()

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return self.start(faces, augment).probabilities()


class Ensemble:
    """Several models classifying the same faces: their probabilities (softmax outputs)
    averaged. One model is an ensemble of one."""

    def __init__(self, models: list[EmotionModel]):
        first = models[0]
        for model in models[1:]:
            if model.class_names != first.class_names:
                raise ModelFileError(f"{model.path}: its classes ({', '.join(model.class_names)})"
                                     f" differ from those of {first.path} "
                                     f"({', '.join(first.class_names)}); an ensemble needs "
                                     f"models of the same classes")
        self.models = models
        self.class_names = first.class_names

    def describe(self, augment: bool) -> str:
        if len(self.models) == 1:
            return self.models[0].describe(augment)
        return (f"ensemble of {len(self.models)} models, probabilities averaged: "
                + "; ".join(model.describe(augment) for model in self.models))

    def start(self, faces: np.ndarray, augment: bool) -> "PendingEnsemble":
        return PendingEnsemble([model.start(faces, augment) for model in self.models])

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return self.start(faces, augment).probabilities()


class PendingEnsemble:
    def __init__(self, pending: list[Pending]):
        self.pending = pending

    def probabilities(self) -> np.ndarray:
        return ensemble_probabilities([outputs.probabilities() for outputs in self.pending])


def load_models(paths) -> Ensemble:
    """The models of the given files (or run folders), as one ensemble."""
    return Ensemble([EmotionModel(path) for path in paths])
