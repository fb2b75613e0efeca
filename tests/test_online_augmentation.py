"""Online augmentation and test-time views against independent references (NumPy, OpenCV)."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from utils.training import online_augmentation as oa
from utils.experiments.keywords import KeywordError, resolve
from utils.training.views import OnlineViews

RNG = np.random.default_rng(7)


def batch(n=6, size=12):
    return RNG.uniform(size=(n, size, size, 1)).astype(np.float32)


def smooth_image(size=32):
    """A smooth grey image (bilinear interpolation's error is small on it)."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.25 * np.sin(5 * rows + 1) * np.cos(4 * cols) + 0.2 * rows).astype(np.float32)


def numpy_window(image, pad, top, left, size):
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return padded[top:top + size[0], left:left + size[1]]


# ---- each part against its reference ---------------------------------------------------------
def test_crop_with_padding_is_an_exact_window_of_the_padded_image():
    x = batch(20)
    out = np.asarray(oa.augment(jnp.asarray(x), jax.random.key(0), oa.parse("crop:3")))
    assert out.shape == x.shape
    offsets = set()
    for image, got in zip(x, out):
        matches = [(t, l) for t in range(7) for l in range(7)
                   if np.array_equal(got, numpy_window(image, 3, t, l, (12, 12)))]
        assert matches, "not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # the windows vary from image to image


def test_crop_to_takes_exact_smaller_windows():
    x = batch(10)
    out = np.asarray(oa.augment(jnp.asarray(x), jax.random.key(1), oa.parse("crop_to:9")))
    assert out.shape == (10, 9, 9, 1)
    for image, got in zip(x, out):
        assert any(np.array_equal(got, image[t:t + 9, l:l + 9])
                   for t in range(4) for l in range(4))


def test_flip_mirrors_about_half_of_the_images_exactly():
    x = batch(200, size=6)
    out = np.asarray(oa.augment(jnp.asarray(x), jax.random.key(2), oa.parse("flip")))
    flipped = [np.array_equal(got, image[:, ::-1]) for image, got in zip(x, out)]
    same = [np.array_equal(got, image) for image, got in zip(x, out)]
    assert all(f != s for f, s in zip(flipped, same))  # each image one or the other
    assert 70 < sum(flipped) < 130


@pytest.mark.parametrize("angle,zoom,shift", [(10.0, 1.0, (0.0, 0.0)), (-25.0, 1.15, (1.5, -2.0)),
                                              (0.0, 0.85, (0.0, 0.0)), (40.0, 1.0, (3.0, 1.0))])
def test_affine_warp_matches_cv2_warp_affine(angle, zoom, shift):
    image = smooth_image()
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, zoom)
    matrix[:, 2] += shift
    want = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = np.asarray(oa.affine_warp(jnp.asarray(image[None, :, :, None]), jnp.array([angle]),
                                    jnp.array([zoom]), jnp.array([shift[0]]),
                                    jnp.array([shift[1]])))[0, :, :, 0]
    # OpenCV rounds sample positions to 1/32 pixel: a small difference on a smooth image,
    # larger only along the black border.
    inner = (slice(3, -3), slice(3, -3))
    assert np.abs(got - want)[inner].mean() < 2e-3
    assert np.abs(got - want)[inner].max() < 2e-2


@pytest.mark.parametrize("probability", [0.25, 0.5])  # 0.5 alone cannot tell p from 1 - p
def test_erasing_covers_the_requested_fraction_on_average(probability):
    x = np.ones((4000, 16, 16, 1), np.float32)
    out = np.asarray(oa.erase(jnp.asarray(x), jax.random.key(3), probability))
    covered = (out == 0).mean(axis=(1, 2, 3))
    erased = covered > 0
    assert abs(erased.mean() - probability) < 0.03  # the probability
    expected = probability * np.mean(oa.ERASE_AREA)  # probability x mean area fraction
    assert abs(covered.mean() - expected) < 0.08 * expected
    assert covered[erased].min() >= 1 / 256 and covered.max() <= oa.ERASE_AREA[1] * 1.3
    # Every erased region is one rectangle.
    for image in out[erased][:50, :, :, 0]:
        rows, cols = np.nonzero(image == 0)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)


def test_brightness_and_contrast_stay_in_range_and_vary_by_image():
    x = batch(50)
    out = np.asarray(oa.augment(jnp.asarray(x), jax.random.key(4),
                                oa.parse("brightness:0.2,contrast:0.3")))
    assert out.min() >= 0.0 and out.max() <= 1.0
    shifts = (out - x).mean(axis=(1, 2, 3))
    assert shifts.std() > 0.02


def test_same_key_same_batch_other_step_other_batch():
    spec = oa.parse("crop:4,flip,rotate:10,scale:0.1,erase:0.5")
    x = jnp.asarray(batch(8))
    base = jax.random.key(11)
    step = lambda s: oa.augment_key(jax.random.fold_in(base, s))  # noqa: E731
    a = np.asarray(oa.augment(x, step(5), spec))
    b = np.asarray(oa.augment(x, step(5), spec))
    c = np.asarray(oa.augment(x, step(6), spec))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ---- test-time views -------------------------------------------------------------------------
def test_ten_crop_views_are_exact():
    x = batch(3, size=10)
    views = np.asarray(OnlineViews(size=8, flip=True).all(jnp.asarray(x))).reshape(3, 10, 8, 8, 1)
    for image, got in zip(x, views):
        crops = [image[1:9, 1:9], image[0:8, 0:8], image[0:8, 2:10], image[2:10, 0:8],
                 image[2:10, 2:10]]
        want = [v for crop in crops for v in (crop, crop[:, ::-1])]
        np.testing.assert_array_equal(got, np.stack(want))


def test_padded_crop_views_are_the_corners_of_the_padded_image():
    x = batch(2, size=10)
    views = np.asarray(OnlineViews(pad=2).all(jnp.asarray(x))).reshape(2, 5, 10, 10, 1)
    for image, got in zip(x, views):
        want = [numpy_window(image, 2, t, l, (10, 10))
                for t, l in ((2, 2), (0, 0), (0, 4), (4, 0), (4, 4))]
        np.testing.assert_array_equal(got, np.stack(want))
    np.testing.assert_array_equal(np.asarray(OnlineViews(pad=2).plain(jnp.asarray(x))), x)
    np.testing.assert_array_equal(np.asarray(OnlineViews(size=8).plain(jnp.asarray(x))),
                                  x[:, 1:9, 1:9])


def test_views_follow_the_training_and_skip_mirrors_the_variant_has():
    spec = oa.parse("crop_to:40,flip")
    assert OnlineViews.matching(spec, variant_mirrored=False).n_views == 10
    assert OnlineViews.matching(spec, variant_mirrored=True).n_views == 5
    assert OnlineViews.matching(oa.parse("rotate:10"), variant_mirrored=False).n_views == 1


# ---- the keyword -----------------------------------------------------------------------------
def test_spec_strings_and_dicts_give_one_canonical_form():
    assert oa.parse("flip, crop:4,rotate:10").spec() == "rotate:10,crop:4,flip"
    assert oa.parse({"crop": 4, "flip": True, "erase": 0.5}).spec() == "crop:4,flip,erase:0.5"
    assert not oa.parse(None) and not oa.parse("")
    assert resolve({"augment": "crop:4,flip"})["augment"] == "crop:4,flip"
    assert resolve({"augment": ""})["augment"] is None


@pytest.mark.parametrize("value,message", [
    ("crop:-1", r"augment: crop must be a whole number of padding pixels in \[1, 64\], got -1"),
    ("flipp", r"augment: unknown part 'flipp' \(did you mean 'flip'\?\)"),
    ("rotate:x", r"augment: rotate:x is not a number"),
    ("erase:1.5", r"augment: erase must be a probability in \(0, 1\], got 1.5"),
    ("crop:4,crop_to:40", r"give crop .* or crop_to .*, not both"),
    ("flip,flip", r"part 'flip' is given twice"),
    (7, r"augment must be a string such as"),
])
def test_bad_augment_values_are_refused_naming_the_part(value, message):
    with pytest.raises(KeywordError, match=message):
        resolve({"augment": value})
