"""A saved model ready to classify faces: its network compiled once, its test-time views.

The model sees exactly what its dataset's `test` split held (the 48x48 face, or its centre crop
for `crop5`/`variant14` models). With ``augment`` each face's pre-softmax outputs are averaged
over the model's test-time views (its variant's versions, or image + mirror for a model trained
on raw data): the argmax is the launcher's augmented test, the probabilities the softmax of the
average.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from loaders.augment import get_variant
from loaders.batches import scale_pixels
from loaders.sources import DatasetError
from utils.losses import softmax
from utils.model_io import ModelFileError, load_model
from utils.views import mean_view_logits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = PROJECT_ROOT / "trained_models" / "default" / "model.msgpack"
# Views per compiled call: every call has this shape, so the network compiles once.
BATCH_VIEWS = 64


class EmotionModel:
    """A saved model ready for faces: its network compiled once for BATCH_VIEWS images."""

    def __init__(self, path):
        self.path = Path(path)
        loaded = load_model(self.path)
        header = loaded.header
        try:
            self.class_names = list(header["class_names"])
            im_dim = list(header["config"]["im_dim"])
            self.variant = get_variant(header["dataset_variant"])
        except (KeyError, TypeError, DatasetError) as err:
            raise ModelFileError(f"{self.path}: its header does not say how its images were "
                                 f"made ({type(err).__name__}: {err})") from None
        if im_dim != [self.variant.image_size] * 2:
            raise ModelFileError(f"{self.path}: trained on {im_dim[0]}x{im_dim[1]} images, but "
                                 f"its dataset variant {self.variant.name!r} makes "
                                 f"{self.variant.image_size}x{self.variant.image_size} ones")
        # A raw-trained model has no test-time views of its own; the mirror is always valid.
        self.test_views = (self.variant if self.variant.n_variants > 1
                           else get_variant("mirror"))
        self.network_name = loaded.network.name
        self._params, self._bn_state = loaded.params, loaded.bn_state
        network = loaded.network
        self._apply = jax.jit(lambda params, bn_state, x:
                              network.apply(params, bn_state, x, train=False)[0])

    def describe(self, augment: bool) -> str:
        size = self.variant.image_size
        views = (f"outputs averaged over {self.test_views.n_variants} test-time views "
                 f"({'; '.join(self.test_views.variant_names)})" if augment
                 else "plain view only")
        return (f"model {self.path} (network {self.network_name}, trained on the "
                f"{self.variant.name} variant, {size}x{size}); {views}")

    def network_outputs(self, x) -> jax.Array:
        """The network's pre-softmax outputs for float images [B, S, S, 1] in [0, 1]."""
        return self._apply(self._params, self._bn_state, x)

    def logits(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        """float64 [N, classes] for uint8 48x48 faces [N, 48, 48]: the plain view's outputs,
        or with ``augment`` their mean over the test-time views."""
        views = (self.test_views.augment(faces) if augment
                 else self.variant.test_view(faces)[:, None])
        n_faces, n_views, height, width = views.shape
        flat = views.reshape(n_faces * n_views, height, width)
        padded = -(-len(flat) // BATCH_VIEWS) * BATCH_VIEWS
        flat = np.concatenate([flat, np.zeros((padded - len(flat), height, width), np.uint8)])
        outputs = [np.asarray(self.network_outputs(scale_pixels(flat[start:start + BATCH_VIEWS])))
                   for start in range(0, padded, BATCH_VIEWS)]
        n_classes = len(self.class_names)
        outputs = np.concatenate(outputs) if outputs else np.zeros((0, n_classes), np.float32)
        return mean_view_logits(outputs[:n_faces * n_views], n_views)

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return softmax(self.logits(faces, augment))
