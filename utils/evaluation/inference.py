"""A saved model ready to classify images, with the test-time views it was trained for.

    model = InferenceModel("trained_models/default")
    plain = model.plain(test_images).logits()            # uint8 [N, S, S]: the test split's view
    mean = model.views(model.versions(faces)).logits()   # every test-time view, averaged

A model sees at test time the views of ``utils.training.views``: its dataset variant's versions of
an image (a dataset file's ``/test_aug``, or made from 48x48 faces by ``versions``), each in the
online views of its training (ten-crop windows, mirrors). Its network is compiled for two batch
shapes (a small one for a photo's few faces, a large one for folders, videos and test sets,
bounded in the network's rows: ``utils.evaluation.batching``), every batch padded to one of
them; the outputs come back asynchronously (``Pending``), so the caller can prepare the next
images meanwhile. ``utils.evaluate``, ``utils.predict`` and the launcher's views
share this. A model file is checked on load: its header, finite arrays, as many outputs as class
names.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from loaders.augment import Variant, get_variant
from loaders.batches import scale_pixels
from loaders.sources import DatasetError
from utils.evaluation.batching import batch_bounds, images_per_batch
from utils.nn.losses import softmax
from utils.models.model_io import ModelFileError, load_model
from utils.training.online_augmentation import AugmentError, parse
from utils.training.views import OnlineViews, summed_view_logits

# One compiled function per architecture and view, shared by every model of it (tests and
# ensembles load the same network several times; each would otherwise compile again).
_COMPILED: dict[str, object] = {}


def _compiled(network, online: OnlineViews, which: str):
    """The network on uint8 images (scaled on the device): 'plain' gives [B, classes], 'views'
    [B * online.n_views, classes], 'floats' the plain view of float images [B, S, S, 1]."""
    key = json.dumps([network.name, network.options, online.__dict__, which], sort_keys=True,
                     default=str)
    if key not in _COMPILED:
        view = online.all if which == "views" else online.plain
        scale = (lambda x: x) if which == "floats" else scale_pixels
        _COMPILED[key] = jax.jit(lambda params, bn_state, x: network.apply(
            params, bn_state, view(scale(x)), train=False)[0])
    return _COMPILED[key]


class Pending:
    """A network's outputs for some images, being computed; ``logits`` waits for them."""

    def __init__(self, outputs: list, n_images: int, n_views: int, n_classes: int):
        self._outputs, self.n_images, self.n_views = outputs, n_images, n_views
        self.n_classes = n_classes

    def summed(self) -> np.ndarray:
        """float64 [N, classes]: each image's outputs summed over its views."""
        outputs = ([np.asarray(batch) for batch in self._outputs] if self._outputs
                   else [np.zeros((0, self.n_classes), np.float32)])
        rows = np.concatenate(outputs)[:self.n_images * self.n_views]
        return summed_view_logits(rows, np.repeat(np.arange(self.n_images), self.n_views),
                                  self.n_images)

    def logits(self) -> np.ndarray:
        """float64 [N, classes]: the mean over each image's views."""
        return self.summed() / self.n_views

    def probabilities(self) -> np.ndarray:
        return softmax(self.logits())


class InferenceModel:
    def __init__(self, path):
        self.path = Path(path)
        loaded = load_model(self.path)
        self.network, self.params, self.bn_state = loaded.network, loaded.params, loaded.bn_state
        self.header = loaded.header
        self.class_names, self.variant, self.online = _read_header(self.path, self.header)
        _check_arrays(self.path, loaded)
        # On the device once: numpy arrays would be copied to it at every batch's call.
        self.params, self.bn_state = jax.device_put((self.params, self.bn_state))
        self._on_plain = _compiled(self.network, self.online, "plain")
        self._on_views = _compiled(self.network, self.online, "views")
        self._check_outputs()

    @property
    def image_size(self) -> int:
        """The side of the images the model takes (its variant's; crop_to windows are cut
        from them by the model itself)."""
        return self.variant.image_size

    @property
    def n_views(self) -> int:
        return self.variant.n_variants * self.online.n_views

    def describe_views(self) -> str:
        names = "; ".join(self.variant.variant_names)
        online = (f", each in {self.online.n_views} online views" if self.online.n_views > 1
                  else "")
        return f"{self.n_views} test-time views ({names}{online})"

    def versions(self, faces: np.ndarray) -> np.ndarray:
        """uint8 [N, V, S, S]: the variant's versions of 48x48 faces [N, 48, 48]."""
        return self.variant.augment(faces)

    def test_view(self, faces: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S]: what a dataset's test split holds for 48x48 faces."""
        return self.variant.test_view(faces)

    def plain(self, images: np.ndarray) -> Pending:
        """Start the network on uint8 images [N, S, S] (the plain view); returns at once."""
        return self._start("plain", images, 1)

    def views(self, versions: np.ndarray) -> Pending:
        """Start the network on every version [N, V, S, S] of each image, each in its online
        views; the Pending sums or averages over all of them."""
        n, n_versions = versions.shape[:2]
        pending = self._start("views", versions.reshape(n * n_versions, *versions.shape[2:]),
                              self.online.n_views)
        return Pending(pending._outputs, n, n_versions * self.online.n_views,
                       len(self.class_names))

    def network_outputs(self, x) -> jax.Array:
        """The pre-softmax outputs of the plain view of float images [B, S, S, 1] in [0, 1]."""
        return _compiled(self.network, self.online, "floats")(self.params, self.bn_state, x)

    def _check_outputs(self) -> None:
        """As many outputs as class names. Traced as the call on a large batch of plain views
        (JAX keeps the trace; the check's own trace took 0.1-0.2 s on 2 cores): a run of plain
        faces then starts without tracing the network again."""
        batch = jax.ShapeDtypeStruct((images_per_batch(1), self.image_size, self.image_size),
                                     np.uint8)
        outputs = jax.eval_shape(self._on_plain, self.params, self.bn_state, batch)
        if outputs.shape != (batch.shape[0], len(self.class_names)):
            raise ModelFileError(f"{self.path}: its network has {outputs.shape[-1]} outputs but "
                                 f"its header names {len(self.class_names)} classes; the file is "
                                 f"damaged: retrain or restore it")

    def _start(self, which: str, images: np.ndarray, per_image: int) -> Pending:
        if images.shape[1:] != (self.image_size, self.image_size):
            raise DatasetError(f"{self.path} takes {self.image_size}x{self.image_size} images "
                               f"(its {self.variant.name} variant), got "
                               f"{images.shape[1]}x{images.shape[2]}")
        n = len(images)
        bounds = batch_bounds(n, images_per_batch(per_image))
        padded = bounds[-1][1] if bounds else 0
        images = np.concatenate([images, np.zeros((padded - n, *images.shape[1:]), np.uint8)])
        compiled = self._on_views if which == "views" else self._on_plain
        return Pending([compiled(self.params, self.bn_state, images[start:stop])
                        for start, stop in bounds], n, per_image, len(self.class_names))


def _read_header(path: Path, header: dict):
    try:
        class_names = list(header["class_names"])
        config = header["config"]
        im_dim = list(config["im_dim"])
        variant: Variant = get_variant(header["dataset_variant"])
        augmentation = parse(config.get("augment"))
    except (KeyError, TypeError, DatasetError, AugmentError) as err:
        raise ModelFileError(f"{path}: its header does not say how its images were "
                             f"made ({type(err).__name__}: {err})") from None
    if not class_names or not all(isinstance(name, str) and name for name in class_names):
        raise ModelFileError(f"{path}: its header's class names {class_names!r} are not a list "
                             f"of names; the file is damaged: retrain or restore it")
    expected = list(augmentation.output_size(variant.image_size, variant.image_size))
    if im_dim != expected:
        raise ModelFileError(f"{path}: trained on {im_dim[0]}x{im_dim[1]} images, but "
                             f"its dataset variant {variant.name!r} makes "
                             f"{expected[0]}x{expected[1]} ones")
    return class_names, variant, OnlineViews.matching(augmentation, variant.mirrored)


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


def ensemble_probabilities(probabilities: list[np.ndarray]) -> np.ndarray:
    """The mean of the models' probabilities (each [N, classes])."""
    return np.mean(np.stack(probabilities), axis=0)
