"""Test-time views: the versions of a test image a model is shown, and combining its outputs.

A model sees at test time the views that match how it was trained:
- its dataset variant's versions of the image (the thesis's augmented test: the mirror
  variant's image + mirror, crop5's ten crops, variant14's fourteen versions), which a dataset
  file holds in ``/test_aug`` and ``loaders.augment.Variant.augment`` makes from a 48x48 face;
- and, for online augmentation (``utils.training.online_augmentation``), each of those versions in
the
  windows it was trained on (``crop:P``: the centre and the four corner windows of the padded
  image; ``crop_to:S``: the centre and four corner S x S windows) and, when it was trained with
  ``flip`` on a variant without mirrors, mirrored: the classic ten-crop.
The plain test shows the centre window only. Every view's pre-softmax outputs are summed per
source image before the argmax (the thesis's rule), or averaged into probabilities (predict):
``summed_view_logits`` does both for the launcher, ``utils.evaluate`` and ``utils.predict``.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from utils.training.online_augmentation import Augmentation, mirror, windows


@dataclass(frozen=True)
class OnlineViews:
    """The views online augmentation adds to each version of a test image."""

    pad: int = 0  # crop:P
    size: int = 0  # crop_to:S (0: the image's own size)
    flip: bool = False

    @classmethod
    def matching(cls, augmentation: Augmentation, variant_mirrored: bool) -> "OnlineViews":
        return cls(augmentation.crop, augmentation.crop_to,
                   augmentation.flip and not variant_mirrored)

    @property
    def n_views(self) -> int:
        return (5 if self.pad or self.size else 1) * (2 if self.flip else 1)

    def offsets(self, height: int, width: int):
        """((h, w), [(top, left), ...]): the window size and offsets in the padded image, the
        centre first, then (with a crop) the four corners."""
        out_h, out_w = (self.size, self.size) if self.size else (height, width)
        margin_h, margin_w = height + 2 * self.pad - out_h, width + 2 * self.pad - out_w
        centre = (margin_h // 2, margin_w // 2)
        corners = ((0, 0), (0, margin_w), (margin_h, 0), (margin_h, margin_w))
        return (out_h, out_w), [centre] + (list(corners) if self.pad or self.size else [])

    def plain(self, x):
        """The centre window of each image [B, H, W, C] (the image itself without crop_to)."""
        if not self.size:
            return x
        (out_h, out_w), offsets = self.offsets(*x.shape[1:3])
        top, left = offsets[0]
        return x[:, top:top + out_h, left:left + out_w, :]

    def all(self, x):
        """[B * n_views, h, w, C]: each image's views, consecutive, in the order centre,
        top-left, top-right, bottom-left, bottom-right, each followed by its mirror."""
        n = x.shape[0]
        size, offsets = self.offsets(*x.shape[1:3])
        views = []
        for top, left in offsets:
            window = windows(x, self.pad, size, jnp.full((n,), top), jnp.full((n,), left))
            views += [window, mirror(window)] if self.flip else [window]
        return jnp.stack(views, axis=1).reshape(n * len(views), *size, x.shape[-1])


def summed_view_logits(logits: np.ndarray, source_index: np.ndarray, n_sources: int):
    """float64 [n_sources, classes]: each source image's outputs summed over its views.

    ``logits`` [n_views_total, classes] holds one row per view; ``source_index`` names the
    source image of each row (the `/test_aug` layout, or consecutive views per face)."""
    summed = np.zeros((n_sources, logits.shape[1]), np.float64)
    np.add.at(summed, source_index, logits)
    return summed


def mean_view_logits(logits: np.ndarray, n_views: int) -> np.ndarray:
    """float64 [N, classes]: the mean over ``n_views`` consecutive rows per image."""
    n_sources = len(logits) // n_views
    source_index = np.repeat(np.arange(n_sources), n_views)
    return summed_view_logits(logits, source_index, n_sources) / n_views
