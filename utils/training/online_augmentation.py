"""Online data augmentation: each training batch transformed afresh, on the device, inside the
compiled train step (the thesis's future work; its offline variants live in loaders/augment.py).

    augment="crop:4,flip,rotate:10,scale:0.1,erase:0.5"      (or a dict {"crop": 4, "flip": True})

The parts, applied in this order to float images [B, H, W, C] in [0, 1]:

- ``rotate:D``, ``scale:S``, ``shift:P``: one affine warp per image, rotation uniform in
  [-D, D] degrees (positive = counter-clockwise as displayed, as cv2.getRotationMatrix2D),
  zoom uniform in [1-S, 1+S], translation uniform in [-P, P] pixels on each axis; bilinear,
  black outside the image (cv2.warpAffine's defaults).
- ``crop:P``: zero-pad P pixels on every side, then take a random window of the original
  size (random shifts of up to P pixels; the image keeps its size).
- ``crop_to:S``: a random S x S window of the image (no padding): the network sees S x S
  images, and tests on the same windows (``utils.training.views``: centre, or ten-crop).
- ``flip``: a horizontal mirror with probability 1/2.
- ``brightness:B``: add a value uniform in [-B, B]; ``contrast:C``: scale each image's
  deviation from its mean by a factor uniform in [1-C, 1+C]; the result clipped to [0, 1].
- ``erase:P``: with probability P, a random rectangle covering a fraction of the image uniform
  in [0.02, 0.25] (aspect ratio log-uniform in [0.3, 3.3]) is set to 0 (random erasing /
  Cutout).

The random numbers come from the step's key (``fold_in(base_key, step)``), one stream per part,
so a run is reproducible and resumes bit for bit. Evaluation never augments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from utils.support.names import closest_name

ERASE_AREA = (0.02, 0.25)  # fraction of the image an erased rectangle covers
ERASE_ASPECT = (0.3, 1 / 0.3)  # height / width of the rectangle, log-uniform
# Folded into the step's key for augmentation, apart from the network's dropout/noise keys.
AUGMENT_STREAM = 0x41554721
# The parts of the one affine warp: they keep the image's size and are applied first.
WARP_PARTS = ("rotate", "scale", "shift")


class AugmentError(ValueError):
    """An ``augment`` setting that cannot be used."""


@dataclass(frozen=True)
class Augmentation:
    """What online augmentation does; all zero/False: nothing."""

    rotate: float = 0.0
    scale: float = 0.0
    shift: float = 0.0
    crop: int = 0
    crop_to: int = 0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    erase: float = 0.0

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def spec(self) -> str:
        """The canonical keyword value: 'crop:4,flip,...' in the order parts are applied."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is True:
                parts.append(f.name)
            elif value:
                parts.append(f"{f.name}:{value:g}")
        return ",".join(parts)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return (self.crop_to, self.crop_to) if self.crop_to else (height, width)

    def split_warp(self) -> tuple["Augmentation", "Augmentation"]:
        """(the affine warp's parts, every other part): augmenting with the first, then the
        second, with the same key is this augmentation bit for bit (each part draws from its
        own stream), so a distillation teacher can see the warped image before the rest."""
        warp = {name: getattr(self, name) for name in WARP_PARTS}
        return Augmentation(**warp), replace(self, **{name: 0.0 for name in WARP_PARTS})


# part -> (check of its value, what it expects): the value as given -> the stored value
def _number(low, high, *, inclusive_low=False, whole=False):
    def check(value):
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if whole:
            ok_type = ok_type and float(value).is_integer()
        if not ok_type or not math.isfinite(value):
            return None
        if value < low or (value == low and not inclusive_low) or value > high:
            return None
        return int(value) if whole else float(value)
    return check


PARTS = {
    "rotate": (_number(0, 180), "an angle in degrees in (0, 180]"),
    "scale": (_number(0, 0.9), "a zoom range in (0, 0.9]"),
    "shift": (_number(0, 64), "a shift in pixels in (0, 64]"),
    "crop": (_number(0, 64, whole=True), "a whole number of padding pixels in [1, 64]"),
    "crop_to": (_number(0, 4096, whole=True), "a whole window size in pixels >= 1"),
    "flip": (lambda value: True if value is True else None, "no value (just 'flip')"),
    "brightness": (_number(0, 1), "a brightness range in (0, 1]"),
    "contrast": (_number(0, 1), "a contrast range in (0, 1]"),
    "erase": (_number(0, 1), "a probability in (0, 1]"),
}


def parse(value, name: str = "augment") -> Augmentation:
    """An Augmentation from 'crop:4,flip,...', a dict, None or ''; AugmentError naming the
    part and what it expects otherwise."""
    if value is None or value == "" or value == {}:
        return Augmentation()
    if isinstance(value, Augmentation):
        return value
    if isinstance(value, str):
        items = []
        for text in value.split(","):
            part, _, number = text.strip().partition(":")
            items.append((part.strip(), _literal(number.strip(), name, part) if number else True))
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise AugmentError(f"{name} must be a string such as 'crop:4,flip,rotate:10' or a dict, "
                           f"got {value!r}")
    settings = {}
    for part, given in items:
        if part not in PARTS:
            raise AugmentError(f"{name}: unknown part {part!r}{closest_name(part, PARTS)}; "
                               f"parts: {', '.join(PARTS)}")
        if part in settings:
            raise AugmentError(f"{name}: part {part!r} is given twice")
        check, expected = PARTS[part]
        checked = check(given)
        if checked is None:
            raise AugmentError(f"{name}: {part} must be {expected}, got {given!r}")
        settings[part] = checked
    if settings.get("crop") and settings.get("crop_to"):
        raise AugmentError(f"{name}: give crop (padding, same size) or crop_to (a smaller "
                           f"window), not both")
    return Augmentation(**settings)


def _literal(text: str, name: str, part: str):
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise AugmentError(f"{name}: {part}:{text} is not a number") from None


# ---- the transformations (float images [B, H, W, C]) -----------------------------------------
def affine_warp(x, angle_degrees, zoom, shift_x, shift_y):
    """Each image rotated by its angle and zoomed about its centre, then shifted, bilinearly
    sampled with black outside: cv2.warpAffine with cv2.getRotationMatrix2D(((W-1)/2, (H-1)/2),
    angle, zoom) and the shift added to the matrix's last column. Arguments are [B] arrays."""
    _, height, width, _ = x.shape
    cy, cx = (height - 1) / 2, (width - 1) / 2
    theta = jnp.deg2rad(angle_degrees)
    cos, sin = jnp.cos(theta) / zoom, jnp.sin(theta) / zoom
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=x.dtype), jnp.arange(width, dtype=x.dtype),
                              indexing="ij")
    # Inverse map: destination (col, row) -> source, per image ([B, H, W]).
    u = cols[None] - cx - shift_x[:, None, None]
    v = rows[None] - cy - shift_y[:, None, None]
    source_col = cos[:, None, None] * u - sin[:, None, None] * v + cx
    source_row = sin[:, None, None] * u + cos[:, None, None] * v + cy
    return jax.vmap(_bilinear)(x, source_row, source_col)


def _bilinear(image, rows, cols):
    """image [H, W, C] sampled at float positions [H', W'], zero outside."""
    height, width, _ = image.shape
    top, left = jnp.floor(rows), jnp.floor(cols)
    dy, dx = (rows - top)[..., None], (cols - left)[..., None]
    top, left = top.astype(jnp.int32), left.astype(jnp.int32)

    def tap(r, c):
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        value = image[jnp.clip(r, 0, height - 1), jnp.clip(c, 0, width - 1)]
        return jnp.where(inside[..., None], value, jnp.zeros((), image.dtype))

    return ((1 - dy) * ((1 - dx) * tap(top, left) + dx * tap(top, left + 1))
            + dy * ((1 - dx) * tap(top + 1, left) + dx * tap(top + 1, left + 1)))


def windows(x, pad: int, size: tuple[int, int], tops, lefts):
    """The size window of each zero-padded image at (tops, lefts) ([B] int arrays)."""
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    channels = x.shape[-1]
    return jax.vmap(lambda image, top, left: lax.dynamic_slice(
        image, (top, left, 0), (*size, channels)))(x, tops, lefts)


def mirror(x):
    return x[:, :, ::-1, :]


def erase(x, key, probability: float):
    """Random erasing: per image, with ``probability``, a rectangle set to 0."""
    n, height, width, _ = x.shape
    k_apply, k_area, k_aspect, k_top, k_left = jax.random.split(key, 5)
    area = jax.random.uniform(k_area, (n,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1])
    log_aspect = jax.random.uniform(k_aspect, (n,), minval=math.log(ERASE_ASPECT[0]),
                                    maxval=math.log(ERASE_ASPECT[1]))
    pixels = area * height * width
    h = jnp.clip(jnp.round(jnp.sqrt(pixels * jnp.exp(log_aspect))), 1, height).astype(jnp.int32)
    w = jnp.clip(jnp.round(pixels / h), 1, width).astype(jnp.int32)
    top = jnp.floor(jax.random.uniform(k_top, (n,)) * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_left, (n,)) * (width - w + 1)).astype(jnp.int32)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]))
    applied = jax.random.uniform(k_apply, (n,)) < probability
    return jnp.where((inside & applied[:, None, None])[..., None], jnp.zeros((), x.dtype), x)


def augment(x, key, spec: Augmentation):
    """The training batch x [B, H, W, C] transformed as ``spec`` says, with ``key``'s numbers."""
    if not spec:
        return x
    n, height, width, _ = x.shape
    keys = {name: jax.random.fold_in(key, index) for index, name in enumerate(PARTS)}

    def uniform(part, bound, shape=(n,)):
        return jax.random.uniform(keys[part], shape, minval=-bound, maxval=bound)

    if spec.rotate or spec.scale or spec.shift:
        shifts = uniform("shift", spec.shift, (2, n)) if spec.shift else jnp.zeros((2, n))
        x = affine_warp(x, uniform("rotate", spec.rotate) if spec.rotate else jnp.zeros(n),
                        1 + uniform("scale", spec.scale) if spec.scale else jnp.ones(n),
                        shifts[0], shifts[1])
    if spec.crop or spec.crop_to:
        out_h, out_w = spec.output_size(height, width)
        room_h, room_w = height + 2 * spec.crop - out_h, width + 2 * spec.crop - out_w
        part = "crop" if spec.crop else "crop_to"
        k_top, k_left = jax.random.split(keys[part])
        tops = jax.random.randint(k_top, (n,), 0, room_h + 1)
        lefts = jax.random.randint(k_left, (n,), 0, room_w + 1)
        x = windows(x, spec.crop, (out_h, out_w), tops, lefts)
    if spec.flip:
        flips = jax.random.bernoulli(keys["flip"], 0.5, (n,))
        x = jnp.where(flips[:, None, None, None], mirror(x), x)
    if spec.brightness or spec.contrast:
        if spec.contrast:
            mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
            factor = 1 + uniform("contrast", spec.contrast)
            x = (x - mean) * factor[:, None, None, None] + mean
        if spec.brightness:
            x = x + uniform("brightness", spec.brightness)[:, None, None, None]
        x = jnp.clip(x, 0.0, 1.0)
    if spec.erase:
        x = erase(x, keys["erase"], spec.erase)
    return x


def augment_key(step_key):
    """The augmentation's key for a step, apart from the network's dropout/noise keys."""
    return jax.random.fold_in(step_key, AUGMENT_STREAM)


def numpy_images(x) -> np.ndarray:
    """uint8 [B, H, W] of float images [B, H, W, 1] in [0, 1] (for previews)."""
    return np.clip(np.round(np.asarray(x)[..., 0] * 255), 0, 255).astype(np.uint8)
