"""Winograd's F(2x2, 3x3) convolution (utils.nn.winograd): the same values as lax's convolution
on random inputs, its input gradient within float32 rounding of lax's, its weight gradient by
the tiles within float32 rounding of lax's (or lax's own, bit for bit, with few channels), and
where rna.conv2d takes it."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from utils import rna
from utils.nn import winograd


def plain_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def random_conv_inputs(seed, n, h, width, c_in, c_out):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, h, width, c_in)).astype(np.float32),
            rng.standard_normal((3, 3, c_in, c_out)).astype(np.float32))


# even and odd sides (a ragged one pads a last row or column of tiles), one-pixel images, and
# the channel counts of the networks' layers; both tile sizes
@pytest.mark.parametrize("tiles", [2, 4])
@pytest.mark.parametrize("shape", [(2, 6, 6, 3, 5), (3, 5, 7, 4, 2), (1, 1, 1, 2, 3),
                                   (2, 10, 10, 64, 8), (1, 3, 4, 1, 1)])
def test_winograd_conv_matches_lax_convolution(shape, tiles):
    x, w = random_conv_inputs(sum(shape), *shape)
    expected = np.asarray(plain_conv(x, w))
    got = np.asarray(jax.jit(winograd.tiled_conv, static_argnums=2)(x, w, winograd.TILES[tiles]))
    assert got.shape == expected.shape and got.dtype == np.float32
    # float32 rounding of a different summation: within 1e-5 of the largest output (F(2x2));
    # F(4x4)'s transforms have larger coefficients (up to 8), so its rounding is about 5x
    tolerance = {2: 1e-5, 4: 5e-5}[tiles]
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance * np.abs(expected).max())


# only the outputs [:rows, :cols] (what a pooling that drops a ragged border reads): a 5x5 map
# to 4x4, one side cut further than a tile (9 rows to 4: the input past the tiles is cut too)
@pytest.mark.parametrize("tiles", [2, 4])
@pytest.mark.parametrize("shape, kept", [((2, 5, 5, 8, 16), (4, 4)), ((2, 9, 6, 4, 3), (4, 6)),
                                         ((1, 7, 5, 3, 4), (6, 4))])
def test_winograd_conv_of_the_kept_outputs_matches_lax_convolution_cut(shape, kept, tiles):
    x, w = random_conv_inputs(sum(shape) + 2, *shape)
    expected = np.asarray(plain_conv(x, w))[:, :kept[0], :kept[1]]
    got = np.asarray(jax.jit(winograd.tiled_conv, static_argnums=(2, 3))(
        x, w, winograd.TILES[tiles], kept))
    assert got.shape == expected.shape
    tolerance = {2: 1e-5, 4: 5e-5}[tiles]
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance * np.abs(expected).max())


def gradients(conv, g):
    return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) * g), argnums=(0, 1)))


# odd sides, a one-pixel image, and wider outputs than inputs and the reverse
@pytest.mark.parametrize("shape", [(2, 6, 5, 4, 3), (1, 1, 1, 2, 3), (2, 7, 7, 3, 6)])
def test_winograd_conv_differentiates_as_the_plain_convolution(shape):
    x, w = random_conv_inputs(sum(shape) + 1, *shape)
    g = np.random.default_rng(8).standard_normal(shape[:3] + shape[-1:]).astype(np.float32)
    tiled = partial(winograd.conv3x3, forward_tiles=True, weight_tiles=0)
    got_dx, got_dw = gradients(tiled, g)(x, w)
    dx, dw = gradients(plain_conv, g)(x, w)
    # the input gradient by F(2x2, 3x3) too (the flipped filters, channels swapped)
    np.testing.assert_allclose(np.asarray(got_dx), np.asarray(dx), rtol=0,
                               atol=1e-5 * np.abs(np.asarray(dx)).max())
    # weight_tiles=0: the plain convolution's weight gradient, bit for bit
    np.testing.assert_array_equal(np.asarray(got_dw), np.asarray(dw))


def plain_weight_gradient(x, g):
    """The plain convolution's weight gradient: the transpose of w -> conv(x, w), at g."""
    zero = np.zeros((3, 3, x.shape[-1], g.shape[-1]), np.float32)
    return np.asarray(jax.vjp(lambda w: plain_conv(x, w), zero)[1](g)[0])


# even and ragged sides (a ragged one's last tiles hold outputs that were cut off: their
# gradient must not reach the filters), a one-pixel image, wider outputs than inputs and the
# reverse; both tile sizes
@pytest.mark.parametrize("tiles", [2, 4])
@pytest.mark.parametrize("shape", [(2, 6, 4, 3, 5), (3, 5, 7, 4, 2), (1, 1, 1, 2, 3),
                                   (2, 9, 3, 6, 3)])
def test_winograd_weight_gradient_matches_the_plain_convolutions(shape, tiles):
    x, _ = random_conv_inputs(sum(shape) + 2, *shape)
    g = np.random.default_rng(9).standard_normal(shape[:3] + shape[-1:]).astype(np.float32)
    dw = plain_weight_gradient(x, g)
    got = np.asarray(jax.jit(winograd.weight_gradient, static_argnums=2)(
        x, g, winograd.TILES[tiles]))
    assert got.shape == dw.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, dw, rtol=0, atol=1e-5 * np.abs(dw).max())


@pytest.mark.parametrize("shape,forward_tiles,weight_tiles", [
    ((2, 3, 5, 64, 128), True, 2),  # wide, on a small map: F(2x2) throughout
    ((1, 12, 12, 32, 64), False, 4),  # 32 channels in: XLA's forward, F(4x4) weight gradient
])
def test_rna_conv2d_takes_the_weight_gradients_tiles(monkeypatch, shape, forward_tiles,
                                                    weight_tiles):
    monkeypatch.setenv("FER_WINOGRAD", "1")
    monkeypatch.delenv("FER_WINOGRAD_WEIGHTS", raising=False)
    x, w = random_conv_inputs(4, *shape)
    g = np.random.default_rng(10).standard_normal(shape[:3] + shape[-1:]).astype(np.float32)
    assert winograd.chosen(x, w) == forward_tiles
    assert winograd.weight_gradient_tiles(x, w) == weight_tiles
    got_dx, got_dw = gradients(rna.conv2d, g)(x, w)
    dx, dw = gradients(plain_conv, g)(x, w)
    np.testing.assert_array_equal(np.asarray(got_dw), np.asarray(jax.jit(
        winograd.weight_gradient, static_argnums=2)(x, g, winograd.TILES[weight_tiles])))
    np.testing.assert_allclose(np.asarray(got_dw), np.asarray(dw), rtol=0,
                               atol=1e-5 * np.abs(np.asarray(dw)).max())
    if not forward_tiles:  # XLA's own forward and input gradient, bit for bit
        np.testing.assert_array_equal(np.asarray(got_dx), np.asarray(dx))
        np.testing.assert_array_equal(np.asarray(jax.jit(rna.conv2d)(x, w)),
                                      np.asarray(jax.jit(plain_conv)(x, w)))


def test_the_weight_gradients_form_is_chosen_by_map_and_channels(monkeypatch):
    monkeypatch.setenv("FER_WINOGRAD_WEIGHTS", "1")

    def tiles(side, c_in, c_out):
        return winograd.weight_gradient_tiles(np.zeros((1, side, side, c_in), np.float32),
                                              np.zeros((3, 3, c_in, c_out), np.float32))

    # F(4x4) on 12x12 maps from 32 -> 64 channels (in whole steps: S 1.06x, V 1.19x the
    # plain kernel's)
    assert tiles(12, 32, 64) == tiles(12, 64, 128) == tiles(12, 64, 64) == 4
    assert tiles(12, 32, 32) == 0  # 32 -> 32: neither form pays
    # elsewhere F(2x2) with 64 -> 128 channels or more (1.1-1.5x), none with fewer (0.8-1.0x)
    assert tiles(24, 64, 128) == tiles(6, 128, 256) == tiles(6, 128, 64) == 2
    assert tiles(24, 64, 64) == tiles(6, 64, 64) == tiles(48, 32, 32) == 0
    assert winograd.weight_gradient_tiles(  # a 5x5 window, bfloat16: never
        np.zeros((1, 12, 12, 64), np.float32), np.zeros((5, 5, 64, 64), np.float32)) == 0
    assert winograd.weight_gradient_tiles(
        np.zeros((1, 12, 12, 64), jnp.bfloat16), np.zeros((3, 3, 64, 64), np.float32)) == 0
    # the overrides: FER_WINOGRAD_WEIGHTS, else FER_WINOGRAD, else the CPU kind measured
    monkeypatch.setenv("FER_WINOGRAD_WEIGHTS", "0")
    assert tiles(12, 128, 128) == 0
    monkeypatch.delenv("FER_WINOGRAD_WEIGHTS")
    monkeypatch.setenv("FER_WINOGRAD", "0")
    assert tiles(12, 128, 128) == 0
    monkeypatch.delenv("FER_WINOGRAD")
    # by the CPU kind: AMD's Zen 3 and 4 (family 25) take the tiles, Zen 5 and Intel not
    for vendor, family, wide, narrow in (("AuthenticAMD", 25, 4, 2), ("AuthenticAMD", 26, 0, 0),
                                         ("GenuineIntel", 6, 0, 0)):
        on_cpu_kind(monkeypatch, vendor, family)
        assert (tiles(12, 128, 128), tiles(24, 128, 128)) == (wide, narrow), (vendor, family)


def on_cpu_kind(monkeypatch, vendor, family):
    """This test's process seen as a CPU of that kind by the kernel choices."""
    monkeypatch.setattr(winograd.host_tuning, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(winograd.host_tuning, "cpu_family", lambda: family)


def test_the_form_is_chosen_for_wide_float32_3x3_windows_on_measured_cpus(monkeypatch):
    wide = np.zeros((3, 3, 64, 64), np.float32)
    narrow_in = np.zeros((3, 3, 32, 64), np.float32)
    narrow_out = np.zeros((3, 3, 64, 32), np.float32)
    x = np.zeros((1, 4, 4, 64), np.float32)
    monkeypatch.setenv("FER_WINOGRAD", "1")
    assert winograd.chosen(x, wide)
    # with 32 channels on either side the form ran at 0.8-0.9x the plain convolution in training
    assert not winograd.chosen(x[..., :32], narrow_in) and not winograd.chosen(x, narrow_out)
    assert not winograd.chosen(x.astype(jnp.bfloat16), wide)
    assert not winograd.chosen(x, np.zeros((5, 5, 64, 64), np.float32))
    monkeypatch.setenv("FER_WINOGRAD", "0")
    assert not winograd.chosen(x, wide)
    monkeypatch.delenv("FER_WINOGRAD")
    on_cpu_kind(monkeypatch, "AuthenticAMD", 25)  # Zen 3 and 4: 64 channels or more, any map
    assert winograd.chosen(x, wide) and not winograd.chosen(x[..., :32], narrow_in)
    on_cpu_kind(monkeypatch, "GenuineIntel", 6)  # not measured: never
    assert not winograd.chosen(x, wide)
    # Zen 5: only layers as wide as A's at 12x12 (S, V and F's steps were slower with it)
    on_cpu_kind(monkeypatch, "AuthenticAMD", 26)

    def zen5_takes(side, c_in, c_out):
        return winograd.chosen(np.zeros((1, side, side, c_in), np.float32),
                               np.zeros((3, 3, c_in, c_out), np.float32))

    assert zen5_takes(12, 128, 256) and zen5_takes(12, 256, 256) and zen5_takes(24, 256, 256)
    assert not (zen5_takes(12, 128, 128) or zen5_takes(6, 256, 256) or zen5_takes(24, 64, 128)
                or zen5_takes(10, 256, 256) or zen5_takes(12, 64, 512))


def test_rna_conv2d_takes_the_form_in_inference_and_training_but_not_in_the_export(monkeypatch):
    monkeypatch.setenv("FER_WINOGRAD", "1")
    x, w = random_conv_inputs(3, 2, 4, 4, 64, 64)
    # the forms' sums of 576 products differ in their rounding
    forward = np.asarray(jax.jit(rna.conv2d)(x, w))
    np.testing.assert_array_equal(forward, np.asarray(jax.jit(winograd.conv3x3)(x, w)))
    assert not np.array_equal(forward, np.asarray(jax.jit(plain_conv)(x, w)))
    with rna.plain_forms():  # the export traces the plain convolution
        exported = np.asarray(jax.jit(lambda x, w: rna.conv2d(x, w))(x, w))
    np.testing.assert_array_equal(exported, np.asarray(jax.jit(plain_conv)(x, w)))
    # differentiated (a training step): the same forward, returned beside the gradient
    value = jax.jit(lambda x, w: jax.vjp(rna.conv2d, x, w)[0])(x, w)
    np.testing.assert_array_equal(np.asarray(value), forward)
    # 32 output channels: the plain convolution
    narrow = w[..., :32]
    np.testing.assert_array_equal(np.asarray(jax.jit(rna.conv2d)(x, narrow)),
                                  np.asarray(jax.jit(plain_conv)(x, narrow)))
