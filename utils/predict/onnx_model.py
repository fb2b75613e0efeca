"""An exported model (``python -m utils.export``) classifying faces for ``utils.predict --onnx``.

The same face of the app as ``model.EmotionModel``: ``start(faces, augment)`` returns at once
(onnxruntime runs in a thread of its own, the pipeline reads the next images meanwhile) and
its ``probabilities()`` waits; ``class_names``; ``describe``. The views are the file's own,
made inside its graph: a file exported with its test-time views cannot give the plain view
(``--no-augment`` is refused with it), a file of the plain view gives only that. No JAX.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from utils.evaluation.onnx_model import OnnxModel, as_input
from utils.predict.errors import PredictError


class PendingExported:
    def __init__(self, future: Future):
        self._future = future

    def probabilities(self) -> np.ndarray:
        return self._future.result()


class ExportedModel:
    """An exported file, checked on load (a clear OnnxModelError naming the file otherwise)."""

    def __init__(self, path: Path):
        self.model = OnnxModel(path)
        self.path, self.class_names = self.model.path, self.model.class_names
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")

    def describe(self, augment: bool) -> str:
        views = (f"outputs averaged over its {self.model.n_views} test-time views"
                 if self.model.views == "all" else "plain view only")
        return (f"exported model {self.path} (network {self.model.network}, "
                f"{len(self.class_names)} classes) through onnxruntime; {views}, made in "
                f"the file's graph")

    def start(self, faces: np.ndarray, augment: bool) -> PendingExported:
        if not augment and self.model.views == "all":
            raise PredictError(f"{self.path} was exported with the model's test-time views, "
                               f"so it cannot give the plain view: drop --no-augment, or "
                               f"export the model again with --views plain")
        return PendingExported(self._runner.submit(self.model.probabilities, as_input(faces)))

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return self.start(faces, augment).probabilities()
