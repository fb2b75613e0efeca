"""A model's test-time views as one traceable JAX function of float faces, for export.

``utils.evaluation.inference`` makes a face's views in two steps: its dataset variant's versions
with OpenCV on uint8 pixels (``loaders.augment``), then the online views on the device
(``utils.training.views``). An exported graph takes float faces [N, 48, 48, 1] in [0, 1] and
must make the same views itself, from operators every runtime has: crops and mirrors are
slices and reversals (exact), the windows of the online views static slices of the padded
image, and variant14's rotations and rescalings a fixed sparse map of pixels (each output
pixel a weighted sum of a few input pixels), taken from the same OpenCV calls on impulse
images and rounded to 8-bit levels as OpenCV rounds its uint8 results. The rotations come out
exactly as OpenCV's uint8 ones; the two cubic resizes of variant14 (OpenCV's uint8 kernel
rounds its coefficients differently from its float one) differ from them by one grey level in
1 to 4 pixels in 100,000 (12 and 43 of the 1.2 million pixels of the built-in sample's 700
faces).
"""
from __future__ import annotations

from typing import Callable

import cv2
import jax.numpy as jnp
import numpy as np
from jax import lax

from loaders.augment import (ROTATION_DEGREES, SCALE_FACTOR, SHIFT_PIXELS, Variant,
                             centre_crop)
from loaders.sources import IMAGE_SIZE
from utils.evaluation.onnx_model import PIXEL_SCALE
from utils.training.views import OnlineViews

ViewFunction = Callable[[jnp.ndarray], jnp.ndarray]  # float [N, 48, 48, 1] -> [N, S, S, 1]


class UnknownVariant(ValueError):
    """A model of a dataset variant this module does not know how to make views of."""


def mirror(x):
    """cv2.flip(flipCode=1) of NHWC images: the columns reversed."""
    return lax.rev(x, (2,))


def crop(top: int, left: int, size: int) -> ViewFunction:
    return lambda x: x[:, top:top + size, left:left + size, :]


def _pixel_map(transform, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights) [size*size, K]: the linear map of pixels that ``transform`` (an
    OpenCV call on one float32 48x48 image, followed by a crop to size x size) applies,
    read from its outputs on the 2,304 impulse images."""
    impulses = np.eye(IMAGE_SIZE * IMAGE_SIZE, dtype=np.float32)
    outputs = np.stack([transform(impulse.reshape(IMAGE_SIZE, IMAGE_SIZE))
                        for impulse in impulses])
    matrix = outputs.reshape(len(impulses), size * size).T  # [output pixel, input pixel]
    width = int((matrix != 0).sum(axis=1).max())
    indices = np.argsort(matrix == 0, axis=1, kind="stable")[:, :width].astype(np.int32)
    return indices, np.take_along_axis(matrix, indices, axis=1)


def warp(transform, size: int) -> ViewFunction:
    """The map of ``transform`` on the faces' 8-bit levels, rounded as OpenCV rounds uint8
    results (half up) and clipped to 0-255, then scaled to [0, 1] as the framework scales."""
    indices, weights = _pixel_map(transform, size)

    def view(x):
        levels = jnp.round(x * 255).reshape(x.shape[0], IMAGE_SIZE * IMAGE_SIZE)
        total = None
        for k in range(indices.shape[1]):  # a few 1-D gathers: every runtime has them
            term = jnp.take(levels, indices[:, k], axis=1) * weights[:, k]
            total = term if total is None else total + term
        rounded = jnp.clip(jnp.floor(total + 0.5), 0, 255)
        return (rounded * PIXEL_SCALE).reshape(x.shape[0], size, size, 1)

    return view


def _rotation(degrees: float, size: int) -> ViewFunction:
    matrix = cv2.getRotationMatrix2D((IMAGE_SIZE / 2, IMAGE_SIZE / 2), degrees, 1)
    return warp(lambda image: centre_crop(
        cv2.warpAffine(image, matrix, (IMAGE_SIZE, IMAGE_SIZE))[None], size)[0], size)


def _rescaled(size: int) -> ViewFunction:
    return warp(lambda image: centre_crop(cv2.resize(
        image, None, fx=SCALE_FACTOR, fy=SCALE_FACTOR, interpolation=cv2.INTER_CUBIC)[None],
        size)[0], size)


def _resized(size: int) -> ViewFunction:
    return warp(lambda image: cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC),
                size)


def _crop5(size: int) -> list[ViewFunction]:
    margin = IMAGE_SIZE - size
    return [crop(top, left, size) for top, left in
            ((margin // 2, margin // 2), (0, 0), (0, margin), (margin, 0), (margin, margin))]


def _variant14(size: int) -> list[ViewFunction]:
    centre = (IMAGE_SIZE - size) // 2
    return [crop(centre, centre, size), crop(centre, centre - SHIFT_PIXELS, size),
            crop(centre, centre + SHIFT_PIXELS, size), _rotation(ROTATION_DEGREES, size),
            _rotation(-ROTATION_DEGREES, size), _rescaled(size), _resized(size)]


# Each variant's modifications in loaders.augment's order (tests/test_export_views.py holds
# every version equal to Variant.augment's on the built-in sample's faces).
MODIFICATIONS = {
    "raw": lambda size: [lambda x: x],
    "mirror": lambda size: [lambda x: x],
    "crop5": _crop5,
    "variant14": _variant14,
}


def modifications(variant: Variant) -> list[ViewFunction]:
    if variant.name not in MODIFICATIONS:
        raise UnknownVariant(f"dataset variant {variant.name!r} has no exported views (known: "
                             f"{', '.join(MODIFICATIONS)})")
    made = MODIFICATIONS[variant.name](variant.image_size)
    assert len(made) * (2 if variant.mirrored else 1) == variant.n_variants
    return made


def versions(variant: Variant, x) -> list:
    """The variant's versions of float faces [N, 48, 48, 1], in ``variant_names`` order."""
    out = []
    for modification in modifications(variant):
        modified = modification(x)
        out += [modified, mirror(modified)] if variant.mirrored else [modified]
    return out


def split_view(variant: Variant, x):
    """What the variant's test split holds: its first version."""
    return modifications(variant)[0](x)


def online_views(online: OnlineViews, x) -> list:
    """``OnlineViews.all``'s views of images [N, H, W, C], as a list in its order (centre,
    then the four corners, each followed by its mirror), cut by static slices."""
    size, offsets = online.offsets(*x.shape[1:3])
    if online.pad:
        x = jnp.pad(x, ((0, 0), (online.pad, online.pad), (online.pad, online.pad), (0, 0)))
    views = []
    for top, left in offsets:
        window = x[:, top:top + size[0], left:left + size[1], :]
        views += [window, mirror(window)] if online.flip else [window]
    return views


def all_views(variant: Variant, online: OnlineViews, x) -> list:
    """Every test-time view of float faces [N, 48, 48, 1]: each version in its online views."""
    return [view for version in versions(variant, x) for view in online_views(online, version)]


def plain_view(variant: Variant, online: OnlineViews, x) -> list:
    """The plain test's one view: the test split's version, its centre window."""
    return [online.plain(split_view(variant, x))]
