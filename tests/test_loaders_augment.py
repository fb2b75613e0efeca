"""The four variants' pixels against independently written slicing and the thesis's cv2 calls."""
import cv2
import numpy as np
import pytest

from loaders.augment import VARIANTS, get_variant
from loaders.sources import DatasetError, read_csv
from loaders_testdata import SAMPLE_CSV


@pytest.fixture(scope="module")
def images():
    return read_csv(SAMPLE_CSV).images[::35]  # 20 real faces


def test_variant_counts_sizes_and_names(images):
    expected = {"raw": (1, 48), "mirror": (2, 48), "crop5": (10, 44), "variant14": (14, 42)}
    for name, (n_variants, size) in expected.items():
        variant = VARIANTS[name]
        out = variant.augment(images)
        assert out.shape == (len(images), n_variants, size, size) and out.dtype == np.uint8
        assert len(variant.variant_names) == n_variants == variant.n_variants
        np.testing.assert_array_equal(variant.test_view(images), out[:, 0])


def test_every_odd_variant_is_the_mirror_of_the_one_before(images):
    for name in ("mirror", "crop5", "variant14"):
        out = VARIANTS[name].augment(images)
        np.testing.assert_array_equal(out[:, 1::2], out[:, 0::2, :, ::-1])
        assert VARIANTS[name].variant_names[1].endswith(", mirrored")


def test_raw_and_mirror(images):
    np.testing.assert_array_equal(VARIANTS["raw"].augment(images)[:, 0], images)
    out = VARIANTS["mirror"].augment(images)
    np.testing.assert_array_equal(out[:, 0], images)
    for image, mirrored in zip(images, out[:, 1]):
        np.testing.assert_array_equal(mirrored, cv2.flip(image, 1))
        assert mirrored[10, 0] == image[10, 47] and mirrored[30, 5] == image[30, 42]


def test_crop5_windows(images):
    out = VARIANTS["crop5"].augment(images)
    windows = [images[:, 2:46, 2:46], images[:, 0:44, 0:44], images[:, 0:44, 4:48],
               images[:, 4:48, 0:44], images[:, 4:48, 4:48]]
    for index, window in enumerate(windows):
        np.testing.assert_array_equal(out[:, 2 * index], window)
    assert VARIANTS["crop5"].variant_names[0::2] == (
        "centre crop", "top-left crop", "top-right crop", "bottom-left crop", "bottom-right crop")


def test_variant14_crops_and_shifts(images):
    out = VARIANTS["variant14"].augment(images)
    centre, left, right = out[:, 0], out[:, 2], out[:, 4]
    np.testing.assert_array_equal(centre, images[:, 3:45, 3:45])
    np.testing.assert_array_equal(left, images[:, 3:45, 0:42])
    np.testing.assert_array_equal(right, images[:, 3:45, 6:48])
    # The window moved left by 3 px, so the content appears 3 px further right, and vice versa.
    np.testing.assert_array_equal(left[:, :, 3:], centre[:, :, :-3])
    np.testing.assert_array_equal(right[:, :, :-3], centre[:, :, 3:])


def test_variant14_rotations_scale_and_resize_are_the_thesis_cv2_calls(images):
    out = VARIANTS["variant14"].augment(images)
    for index, image in enumerate(images):
        for slot, angle in ((6, 45), (8, -45)):
            matrix = cv2.getRotationMatrix2D((48 / 2, 48 / 2), angle, 1)
            expected = cv2.warpAffine(image, matrix, (48, 48))[3:45, 3:45]
            np.testing.assert_array_equal(out[index, slot], expected)
        scaled = cv2.resize(image, None, fx=1.2, fy=1.2, interpolation=cv2.INTER_CUBIC)
        assert scaled.shape == (58, 58)
        np.testing.assert_array_equal(out[index, 10], scaled[8:50, 8:50])
        np.testing.assert_array_equal(out[index, 12],
                                      cv2.resize(image, (42, 42), interpolation=cv2.INTER_CUBIC))


def test_positive_rotation_is_counter_clockwise():
    image = np.zeros((1, 48, 48), np.uint8)
    image[0, 8:11, 23:26] = 255  # a dot 15 px above the centre (24, 24)
    rotated = VARIANTS["variant14"].augment(image)[0, 6]  # +45, then rows/cols 3:45
    row, col = np.unravel_index(np.argmax(rotated), rotated.shape)
    # Counter-clockwise by 45 degrees takes "up" to "up-left": about (24-10.6, 24-10.6) - 3.
    assert abs(row - 10.4) <= 1.5 and abs(col - 10.4) <= 1.5


def test_empty_batch_and_bad_input():
    empty = np.zeros((0, 48, 48), np.uint8)
    assert VARIANTS["variant14"].augment(empty).shape == (0, 14, 42, 42)
    with pytest.raises(ValueError, match=r"expected uint8 images \[N, 48, 48\], "
                                         r"got uint8 \[2, 44, 44\]"):
        VARIANTS["crop5"].augment(np.zeros((2, 44, 44), np.uint8))
    with pytest.raises(DatasetError, match="unknown variant 'crop10'"):
        get_variant("crop10")
