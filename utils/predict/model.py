"""Saved models ready to classify faces: each network compiled for fixed batch shapes, its
test-time views, and ensembles of several models.

A model sees exactly what its dataset's `test` split held (the 48x48 face, or its centre crop
for `crop5`/`variant14` models). With ``augment`` each face's pre-softmax outputs are averaged
over the model's test-time views (its variant's versions, or image + mirror for a model trained
on raw data): the argmax is the launcher's augmented test, the probabilities the softmax of the
average. An ensemble averages its models' probabilities.
"""
from __future__ import annotations

import json
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
# Views per compiled call. Every call has one of these two shapes, so a network compiles at
# most twice: the small one for a photo's or a camera frame's few faces (a large padded batch
# would cost them time), the large one for folders and videos.
SMALL_BATCH_VIEWS = 16
BATCH_VIEWS = 256

# One compiled function per architecture, shared by every model of it (tests and ensembles
# load the same network several times; each would otherwise compile again).
_COMPILED: dict[str, object] = {}


def _compiled(network, inputs: str):
    """The network's inference function, jitted; ``inputs`` "pixels" takes uint8 images and
    scales them on the device, "floats" takes float32 images [B, S, S, 1] in [0, 1]."""
    key = json.dumps([network.name, network.options, inputs], sort_keys=True, default=str)
    if key not in _COMPILED:
        scale = scale_pixels if inputs == "pixels" else (lambda x: x)
        _COMPILED[key] = jax.jit(lambda params, bn_state, x: network.apply(
            params, bn_state, scale(x), train=False)[0])
    return _COMPILED[key]


class EmotionModel:
    """A saved model, checked on load (a clear ModelFileError naming the file otherwise)."""

    def __init__(self, path):
        self.path = Path(path)
        loaded = load_model(self.path)
        self.class_names, self.variant = _read_header(self.path, loaded.header)
        # A raw-trained model has no test-time views of its own; the mirror is always valid.
        self.test_views = (self.variant if self.variant.n_variants > 1
                           else get_variant("mirror"))
        self.network_name = loaded.network.name
        self._params, self._bn_state = loaded.params, loaded.bn_state
        _check_arrays(self.path, loaded)
        _check_outputs(self.path, loaded.network, self.variant.image_size, len(self.class_names))
        self._on_pixels = _compiled(loaded.network, "pixels")
        self._on_floats = _compiled(loaded.network, "floats")

    def describe(self, augment: bool) -> str:
        size = self.variant.image_size
        views = (f"outputs averaged over {self.test_views.n_variants} test-time views "
                 f"({'; '.join(self.test_views.variant_names)})" if augment
                 else "plain view only")
        return (f"model {self.path} (network {self.network_name}, trained on the "
                f"{self.variant.name} variant, {size}x{size}); {views}")

    def network_outputs(self, x) -> jax.Array:
        """The network's pre-softmax outputs for float images [B, S, S, 1] in [0, 1]."""
        return self._on_floats(self._params, self._bn_state, x)

    def start(self, faces: np.ndarray, augment: bool) -> PendingOutputs:
        """Start the network on uint8 48x48 faces [N, 48, 48] and return at once (JAX runs it
        in its own threads): the plain view, or with ``augment`` every test-time view. All the
        faces' views go through together, in batches of a fixed shape."""
        views = (self.test_views.augment(faces) if augment
                 else self.variant.test_view(faces)[:, None])
        n_faces, n_views, height, width = views.shape
        flat = views.reshape(n_faces * n_views, height, width)
        batch = SMALL_BATCH_VIEWS if len(flat) <= SMALL_BATCH_VIEWS else BATCH_VIEWS
        padded = -(-len(flat) // batch) * batch
        flat = np.concatenate([flat, np.zeros((padded - len(flat), height, width), np.uint8)])
        outputs = [self._on_pixels(self._params, self._bn_state, flat[start:start + batch])
                   for start in range(0, padded, batch)]
        return PendingOutputs(outputs, n_faces, n_views, len(self.class_names))

    def logits(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        """float64 [N, classes]: the plain view's outputs, or with ``augment`` their mean over
        the test-time views."""
        return self.start(faces, augment).logits()

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return self.start(faces, augment).probabilities()


class PendingOutputs:
    """The network's outputs for some faces, being computed; logits() waits for them."""

    def __init__(self, outputs: list, n_faces: int, n_views: int, n_classes: int):
        self._outputs, self.n_faces, self.n_views = outputs, n_faces, n_views
        self.n_classes = n_classes

    def logits(self) -> np.ndarray:
        outputs = ([np.asarray(batch) for batch in self._outputs] if self._outputs
                   else [np.zeros((0, self.n_classes), np.float32)])
        return mean_view_logits(np.concatenate(outputs)[:self.n_faces * self.n_views],
                                self.n_views)

    def probabilities(self) -> np.ndarray:
        return softmax(self.logits())


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

    def start(self, faces: np.ndarray, augment: bool) -> PendingEnsemble:
        return PendingEnsemble([model.start(faces, augment) for model in self.models])

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return self.start(faces, augment).probabilities()


class PendingEnsemble:
    def __init__(self, pending: list[PendingOutputs]):
        self.pending = pending

    def probabilities(self) -> np.ndarray:
        return np.mean([outputs.probabilities() for outputs in self.pending], axis=0)


def load_models(paths) -> Ensemble:
    """The models of the given files (or run folders), as one ensemble."""
    return Ensemble([EmotionModel(path) for path in paths])


def _read_header(path: Path, header: dict):
    try:
        class_names = list(header["class_names"])
        im_dim = list(header["config"]["im_dim"])
        variant = get_variant(header["dataset_variant"])
    except (KeyError, TypeError, DatasetError) as err:
        raise ModelFileError(f"{path}: its header does not say how its images were "
                             f"made ({type(err).__name__}: {err})") from None
    if not class_names or not all(isinstance(name, str) and name for name in class_names):
        raise ModelFileError(f"{path}: its header's class names {class_names!r} are not a list "
                             f"of names; the file is damaged: retrain or restore it")
    if im_dim != [variant.image_size] * 2:
        raise ModelFileError(f"{path}: trained on {im_dim[0]}x{im_dim[1]} images, but "
                             f"its dataset variant {variant.name!r} makes "
                             f"{variant.image_size}x{variant.image_size} ones")
    return class_names, variant


def _check_arrays(path: Path, loaded) -> None:
    """Every parameter and statistic finite: a NaN would make every prediction NaN."""
    trees = {"params": loaded.params, "bn_state": loaded.bn_state}
    for tree_name, tree in trees.items():
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if not np.isfinite(np.asarray(leaf)).all():
                raise ModelFileError(
                    f"{path}: {tree_name}{jax.tree_util.keystr(key_path)} holds NaN or "
                    f"infinite values (a damaged file or a diverged training); retrain the "
                    f"model or restore its file")


def _check_outputs(path: Path, network, image_size: int, n_classes: int) -> None:
    shape = jax.ShapeDtypeStruct((1, image_size, image_size, 1), np.float32)
    params, bn_state = jax.eval_shape(network.init, jax.random.key(0))
    outputs = jax.eval_shape(lambda p, s, x: network.apply(p, s, x, train=False)[0],
                             params, bn_state, shape)
    if outputs.shape != (1, n_classes):
        raise ModelFileError(f"{path}: its network has {outputs.shape[-1]} outputs but its "
                             f"header names {n_classes} classes; the file is damaged: retrain "
                             f"or restore it")
