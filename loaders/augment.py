"""The thesis's offline augmentations (chapter 5.2): the four dataset variants.

Every function takes a uint8 batch [N, H, W] and returns uint8; `Variant.augment` returns
[N, V, S, S], the V versions of each source image. Geometry, pinned down here because the thesis
leaves it open (rows and columns count from the top-left corner, 0-based, ends exclusive):

- Within each source image the variants come as pairs: modification m at index 2m, its horizontal
  mirror (cv2.flip, flipCode=1, applied to the modified image) at 2m+1. Variant 0 is always the
  plain view that the `test` split holds (the image itself, or its centre crop).
- raw: [the image]. mirror: [image, mirror].
- crop5, 44x44 crops of the 48x48 image: centre rows 2:46 cols 2:46, top-left 0:44 0:44,
  top-right 0:44 4:48, bottom-left 4:48 0:44, bottom-right 4:48 4:48; each + mirror.
- variant14, 42x42, each + mirror, in this order:
  centre crop rows 3:45 cols 3:45;
  crop shifted 3 px left: the centre window moved left, rows 3:45 cols 0:42 (the face appears
  3 px further right);
  crop shifted 3 px right: rows 3:45 cols 6:48;
  rotated +45 and -45 degrees (positive = counter-clockwise as displayed):
  M = cv2.getRotationMatrix2D((w/2, h/2), angle, 1), cv2.warpAffine(img, M, (w, h)) with its
  defaults (bilinear, black border), then the centre crop rows 3:45 cols 3:45;
  scaled x1.2: cv2.resize(img, None, fx=1.2, fy=1.2, interpolation=cv2.INTER_CUBIC) (48 -> 58),
  then the centre crop rows 8:50 cols 8:50;
  the whole image resized to 42x42 with cv2.resize(..., interpolation=cv2.INTER_CUBIC).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from loaders.sources import IMAGE_SIZE, DatasetError

SCALE_FACTOR = 1.2
ROTATION_DEGREES = 45
SHIFT_PIXELS = 3


def mirror(images: np.ndarray) -> np.ndarray:
    """Horizontal mirror of each image, with cv2.flip(flipCode=1) as the thesis did.

    Flipping around the vertical axis reverses every row, so the whole batch seen as one tall
    [N*H, W] image flips in a single call.
    """
    n, height, width = images.shape
    if n == 0:
        return images.copy()
    tall = np.ascontiguousarray(images).reshape(n * height, width)
    return cv2.flip(tall, 1).reshape(n, height, width)


def crop(images: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The size x size window whose top-left pixel is (top, left), by array slicing."""
    return images[:, top:top + size, left:left + size]


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size window; for an odd margin the extra pixel goes to the end."""
    _, height, width = images.shape
    return crop(images, (height - size) // 2, (width - size) // 2, size)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Each image rotated about (w/2, h/2) with the thesis's getRotationMatrix2D + warpAffine."""
    _, height, width = images.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1)
    return _per_image(images, lambda image: cv2.warpAffine(image, matrix, (width, height)),
                      (height, width))


def rescale(images: np.ndarray, factor: float) -> np.ndarray:
    """Each image resized by `factor` with the thesis's cv2.resize(fx, fy, INTER_CUBIC)."""
    _, height, width = images.shape
    resized_shape = (round(height * factor), round(width * factor))
    return _per_image(images, lambda image: cv2.resize(image, None, fx=factor, fy=factor,
                                                       interpolation=cv2.INTER_CUBIC),
                      resized_shape)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Each whole image resized to size x size with cv2.resize(INTER_CUBIC)."""
    return _per_image(images, lambda image: cv2.resize(image, (size, size),
                                                       interpolation=cv2.INTER_CUBIC),
                      (size, size))


def _per_image(images: np.ndarray, transform: Callable[[np.ndarray], np.ndarray],
               out_shape: tuple[int, int]) -> np.ndarray:
    # OpenCV's multi-channel resize rounds differently from the single-channel one, so a batch
    # is not stacked as channels: one call per image (tens of microseconds each).
    out = np.empty((len(images), *out_shape), np.uint8)
    for index, image in enumerate(images):
        out[index] = transform(image)
    return out


@dataclass(frozen=True)
class Modification:
    name: str
    apply: Callable[[np.ndarray], np.ndarray]  # uint8 [N, 48, 48] -> uint8 [N, S, S]


@dataclass(frozen=True)
class Variant:
    """One of the thesis's datasets: which modifications, and whether each is also mirrored."""
    name: str
    image_size: int
    modifications: tuple[Modification, ...]
    mirrored: bool

    @property
    def n_variants(self) -> int:
        return len(self.modifications) * (2 if self.mirrored else 1)

    @property
    def variant_names(self) -> tuple[str, ...]:
        if not self.mirrored:
            return tuple(modification.name for modification in self.modifications)
        return tuple(name for modification in self.modifications
                     for name in (modification.name, modification.name + ", mirrored"))

    def augment(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 48, 48] -> uint8 [N, n_variants, S, S], in `variant_names` order."""
        _check_batch(images)
        out = np.empty((len(images), self.n_variants, self.image_size, self.image_size), np.uint8)
        step = 2 if self.mirrored else 1
        for index, modification in enumerate(self.modifications):
            modified = modification.apply(images)
            out[:, step * index] = modified
            if self.mirrored:
                out[:, step * index + 1] = mirror(modified)
        return out

    def test_view(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 48, 48] -> uint8 [N, S, S]: what the `test` split holds (variant 0)."""
        _check_batch(images)
        return np.ascontiguousarray(self.modifications[0].apply(images))


def _check_batch(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected uint8 images [N, {IMAGE_SIZE}, {IMAGE_SIZE}], "
                         f"got {images.dtype} {list(images.shape)}")


def _crop5_modifications(size: int) -> tuple[Modification, ...]:
    margin = IMAGE_SIZE - size
    windows = (("centre crop", margin // 2, margin // 2), ("top-left crop", 0, 0),
               ("top-right crop", 0, margin), ("bottom-left crop", margin, 0),
               ("bottom-right crop", margin, margin))
    return tuple(Modification(name, lambda images, top=top, left=left:
                              crop(images, top, left, size))
                 for name, top, left in windows)


def _variant14_modifications(size: int) -> tuple[Modification, ...]:
    centre = (IMAGE_SIZE - size) // 2
    return (
        Modification("centre crop", lambda images: centre_crop(images, size)),
        Modification(f"crop shifted {SHIFT_PIXELS} px left",
                     lambda images: crop(images, centre, centre - SHIFT_PIXELS, size)),
        Modification(f"crop shifted {SHIFT_PIXELS} px right",
                     lambda images: crop(images, centre, centre + SHIFT_PIXELS, size)),
        Modification(f"rotated +{ROTATION_DEGREES} deg",
                     lambda images: centre_crop(rotate(images, ROTATION_DEGREES), size)),
        Modification(f"rotated -{ROTATION_DEGREES} deg",
                     lambda images: centre_crop(rotate(images, -ROTATION_DEGREES), size)),
        Modification(f"scaled x{SCALE_FACTOR}",
                     lambda images: centre_crop(rescale(images, SCALE_FACTOR), size)),
        Modification(f"resized to {size}x{size}", lambda images: resize(images, size)),
    )


_IDENTITY = Modification("original", lambda images: images)

VARIANTS = {
    "raw": Variant("raw", IMAGE_SIZE, (_IDENTITY,), mirrored=False),
    "mirror": Variant("mirror", IMAGE_SIZE, (_IDENTITY,), mirrored=True),
    "crop5": Variant("crop5", 44, _crop5_modifications(44), mirrored=True),
    "variant14": Variant("variant14", 42, _variant14_modifications(42), mirrored=True),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise DatasetError(f"unknown variant {name!r} (choose one of "
                           f"{', '.join(VARIANTS)})") from None
