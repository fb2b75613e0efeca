"""The primitives' CPU fast paths (utils.nn.cpu_kernels) give the results of the plain
formulations they replace.

Bit for bit where the fast path only reorganises the same operations (dropout masks, noise,
max-pooling and its gradient routing), within float32 rounding where sums are reordered
(batch norm, the im2col conv).
"""
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from utils.nn import cpu_batch_norm, cpu_bfloat16, cpu_kernels

from utils import rna

RNG = np.random.default_rng(7)


def plain_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def plain_max_pool(x, size):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, size, size, 1), (1, size, size, 1),
                             "VALID")


def plain_batch_norm(x, gamma, beta, eps=rna.BN_EPSILON):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return (x - mean) * (gamma * lax.rsqrt(var + eps)) + beta, mean, var


@pytest.mark.parametrize("shape", [(4, 6, 6, 5), (1000,), (3, 7)])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_mask_is_jax_random_bernoulli_bit_for_bit(shape, p):
    key = jax.random.fold_in(jax.random.key(3), 11)
    x = jnp.asarray(RNG.normal(size=shape).astype(np.float32))
    expected = jnp.where(jax.random.bernoulli(key, 1 - p, shape), x / (1 - p), 0.0)
    for dropout in (rna.dropout, jax.jit(rna.dropout, static_argnames=("p", "train"))):
        np.testing.assert_array_equal(dropout(x, p=p, train=True, key=key), expected)


def test_gaussian_noise_is_jax_random_normal_bit_for_bit():
    key = jax.random.key(5)
    x = jnp.asarray(RNG.normal(size=(6, 5, 4)).astype(np.float32))
    # Both compiled: XLA's fused erf_inv may differ from the eager one in the last bit.
    expected = jax.jit(lambda x, k: x + 0.3 * jax.random.normal(k, x.shape, x.dtype))(x, key)
    got = jax.jit(lambda x, k: rna.gaussian_noise(x, 0.3, train=True, key=k))(x, key)
    np.testing.assert_array_equal(got, expected)


def test_uniform_falls_back_to_jax_random_outside_the_fast_path():
    key = jax.random.key(9)
    with jax.enable_x64(True):  # float64 draws use 64 random bits: jax.random's own path
        np.testing.assert_array_equal(cpu_kernels.uniform(key, (5,), jnp.float64),
                                      jax.random.uniform(key, (5,), jnp.float64))
    legacy = jax.random.PRNGKey(2)  # raw uint32 key data
    np.testing.assert_array_equal(cpu_kernels.uniform(legacy, (5,)), jax.random.uniform(legacy, (5,)))


@pytest.mark.parametrize("size,shape", [(2, (2, 7, 6, 3)), (3, (2, 8, 7, 2)), (2, (3, 4, 4, 5))])
def test_max_pool_and_its_gradient_match_reduce_window_even_with_ties(size, shape):
    # Integer values: many windows hold their maximum twice; the gradient must go to the
    # first one in row-major order, as XLA's select-and-scatter sends it.
    x = jnp.asarray(RNG.integers(0, 3, size=shape).astype(np.float32))
    out_shape = plain_max_pool(x, size).shape
    g = jnp.asarray(RNG.normal(size=out_shape).astype(np.float32))
    np.testing.assert_array_equal(rna.max_pool(x, size), plain_max_pool(x, size))
    got = jax.jit(lambda x, g: jax.vjp(lambda x: rna.max_pool(x, size), x)[1](g)[0])(x, g)
    expected = jax.vjp(lambda x: plain_max_pool(x, size), x)[1](g)[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(4, 6, 6, 3), (64, 32, 32, 8), (7, 5)])
def test_batch_norm_and_its_gradients_match_the_plain_formula_in_float64(shape):
    x = RNG.normal(3.0, 2.0, size=shape).astype(np.float32)
    n = shape[-1]
    gamma = RNG.normal(size=n).astype(np.float32)
    beta = RNG.normal(size=n).astype(np.float32)
    # Weights on every output, the returned statistics included (their gradient flows too).
    w_y, w_mean, w_var = (RNG.normal(size=s).astype(np.float32) for s in (shape, n, n))
    m = x.size // n

    def cost(fn, x, gamma, beta):
        y, mean, var = fn(x, gamma, beta)
        return jnp.sum(y * w_y) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

    def ours(x, gamma, beta):
        y, state = rna.batch_norm(x, {"gamma": gamma, "beta": beta}, None, train=True)
        return y, state["mean"], state["var"] * (m - 1) / m  # back to the biased variance

    got = jax.jit(jax.grad(lambda *a: cost(ours, *a), argnums=(0, 1, 2)))(x, gamma, beta)
    with jax.enable_x64(True):
        args64 = [jnp.asarray(a, jnp.float64) for a in (x, gamma, beta)]
        expected = jax.grad(lambda *a: cost(plain_batch_norm, *a), argnums=(0, 1, 2))(*args64)
        expected = [np.asarray(e) for e in expected]
        y64, mean64, var64 = (np.asarray(a) for a in plain_batch_norm(*args64))
    y, state = rna.batch_norm(jnp.asarray(x), {"gamma": gamma, "beta": beta}, None, train=True)
    np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(state["mean"], mean64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["var"], var64 * m / (m - 1), rtol=1e-5)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3 * float(np.abs(e).max()))


def test_feature_sum_folds_rows_and_sums_like_numpy():
    for shape in [(128, 12, 12, 64), (3, 5), (2, 3, 7)]:
        x = RNG.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(cpu_batch_norm.feature_sum(jnp.asarray(x)),
                                   x.astype(np.float64).reshape(-1, shape[-1]).sum(0),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel,c_in", [(3, 1), (2, 3), (4, 1), (3, 2)])
def test_small_window_conv_matches_xla_conv_and_its_gradients(kernel, c_in):
    # 3x3 on one channel takes the im2col path, 3x3 on two channels XLA's conv; even
    # kernels check that 'same' pads the odd pixel at the end, as XLA does.
    x = jnp.asarray(RNG.normal(size=(2, 7, 6, c_in)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(kernel, kernel, c_in, 4)).astype(np.float32))
    g = jnp.asarray(RNG.normal(size=(2, 7, 6, 4)).astype(np.float32))
    np.testing.assert_allclose(rna.conv2d(x, w), plain_conv(x, w), rtol=1e-5, atol=1e-5)
    # Differentiated, the patch path computes another form of the sum (the im2col product).
    trained, vjp = jax.vjp(rna.conv2d, x, w)
    np.testing.assert_allclose(trained, plain_conv(x, w), rtol=1e-5, atol=1e-5)
    got = vjp(g)
    expected = jax.vjp(plain_conv, x, w)[1](g)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


# odd and even windows (an even one pads its odd pixel at the end), odd image sides, 1x1 images
@pytest.mark.parametrize("kernel,shape", [(3, (3, 7, 5, 4, 6)), (2, (2, 6, 7, 3, 5)),
                                          (5, (2, 5, 8, 2, 3)), (4, (1, 1, 1, 3, 2)),
                                          (1, (2, 3, 3, 5, 4))])
def test_conv_weight_gradient_from_stored_transposes_matches_xlas(kernel, shape):
    n, h, width, c_in, c_out = shape
    x = jnp.asarray(RNG.normal(size=(n, h, width, c_in)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(kernel, kernel, c_in, c_out)).astype(np.float32))
    g = jnp.asarray(RNG.normal(size=(n, h, width, c_out)).astype(np.float32))
    dx, dw = jax.vjp(plain_conv, x, w)[1](g)
    got = jax.jit(cpu_kernels.conv_weight_gradient, static_argnums=2)(x, g, (kernel, kernel))
    assert got.shape == w.shape
    np.testing.assert_allclose(got, dw, rtol=0, atol=1e-6 * np.abs(np.asarray(dw)).max())
    # classic_conv: XLA's forward and input gradient, the weight gradient above
    value, vjp = jax.vjp(jax.jit(cpu_kernels.classic_conv), x, w)
    np.testing.assert_array_equal(value, jax.jit(plain_conv)(x, w))
    got_dx, got_dw = vjp(g)
    np.testing.assert_allclose(got_dx, dx, rtol=0, atol=1e-6 * np.abs(np.asarray(dx)).max())
    np.testing.assert_array_equal(got_dw, got)


def test_stored_transpose_is_the_transpose_even_of_non_finite_values():
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    for first in (1.0, np.nan, np.inf):  # the conditional's predicate reads the first value
        x.flat[0] = first
        np.testing.assert_array_equal(cpu_kernels.stored_transpose(jnp.asarray(x), (3, 1, 2, 0)),
                                      np.transpose(x, (3, 1, 2, 0)))


@pytest.mark.parametrize("activation,reference", [
    (rna.relu(), jax.nn.relu),
    (rna.leaky_relu(0.2), lambda z: jnp.where(z >= 0, z, 0.2 * z)),
])
def test_relu_gradients_match_the_plain_functions(activation, reference):
    z = jnp.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(activation(z), reference(z))
    np.testing.assert_array_equal(jax.grad(lambda z: jnp.sum(activation(z) * z))(z),
                                  jax.grad(lambda z: jnp.sum(reference(z) * z))(z))


def test_computed_once_reads_back_the_integers_it_kept():
    values = np.arange(64)
    kept = cpu_kernels.computed_once(jnp.asarray(values))
    for k in range(64):
        np.testing.assert_array_equal(cpu_kernels.computed_once_equals(kept, k), values == k)


@pytest.mark.parametrize("shape,size", [((4, 6, 6, 5), 2), ((3, 7, 5, 4), 2), ((2, 6, 6, 3), 3)])
def test_batch_norm_max_pool_matches_pooling_the_plain_batch_norm(shape, size):
    # Integer inputs: windows with tied maxima (and minima) route the gradient to the first,
    # as the reference's select-and-scatter does; gamma < 0 (the window minimum is the
    # normalised maximum) and gamma == 0 (every value ties) included; a ragged border on
    # (3, 7, 5, 4); weights on the returned statistics too.
    x = jnp.asarray(RNG.integers(-3, 4, size=shape).astype(np.float32))
    c = shape[-1]
    gamma = jnp.asarray(np.concatenate([[1.5, -0.7, 0.0], RNG.normal(size=c - 3)]), jnp.float32)
    beta = jnp.asarray(RNG.normal(size=c).astype(np.float32))
    pooled_shape = plain_max_pool(x, size).shape
    w_y = jnp.asarray(RNG.normal(size=pooled_shape).astype(np.float32))
    w_mean, w_var = (jnp.asarray(RNG.normal(size=c).astype(np.float32)) for _ in range(2))

    def plain(x, gamma, beta):
        y, mean, var = plain_batch_norm(x, gamma, beta)
        return plain_max_pool(y, size), mean, var

    def fused(x, gamma, beta):
        return cpu_batch_norm.batch_norm_max_pool_train(x, gamma, beta, rna.BN_EPSILON, size)

    def cost(fn, *args):
        y, mean, var = fn(*args)
        return jnp.sum(y * w_y) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

    for got, expected in zip(fused(x, gamma, beta), plain(x, gamma, beta)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(lambda *a: cost(fused, *a), argnums=(0, 1, 2)))(x, gamma, beta)
    expected = jax.grad(lambda *a: cost(plain, *a), argnums=(0, 1, 2))(x, gamma, beta)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


def window_extrema(function, *args) -> int:
    """How many elementwise maxima and minima the compiled function computes."""
    text = jax.jit(function).lower(*args).compile().as_text()
    return len(re.findall(r"= f32\[[^\]]*\]\{[^}]*\} (?:maximum|minimum)\(", text))


def test_the_pooled_batch_norms_backward_pass_reads_the_stored_window_maxima():
    # XLA's CPU fusion copies a chain of cheap ops into every consumer: the window maxima, if
    # not stored (cpu_kernels.computed_apart), are recomputed from the full-size input in the
    # backward pass's fusions. Stored, differentiating adds no maximum or minimum at all.
    x = jnp.asarray(RNG.normal(size=(4, 6, 6, 3)).astype(np.float32))
    w_y = jnp.asarray(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32))
    gamma, beta = jnp.asarray([1.5, -0.5, 0.0]), jnp.asarray([0.1, 0.2, 0.3])

    def pooled(x, gamma, beta):
        return jnp.sum(cpu_batch_norm.batch_norm_max_pool_train(
            x, gamma, beta, rna.BN_EPSILON, 2)[0] * w_y)

    def affine(x, scale, shift):
        return jnp.sum(cpu_batch_norm.affine_max_pool(x, scale, shift, 2) * w_y)

    for cost in (pooled, affine):
        forward = window_extrema(cost, x, gamma, beta)
        assert forward > 0
        assert window_extrema(jax.grad(cost, argnums=(0, 1, 2)), x, gamma, beta) == forward


def test_computed_apart_gives_the_functions_values_and_gradients():
    x = jnp.asarray(RNG.normal(size=(3, 5)).astype(np.float32))
    y = jnp.asarray(RNG.normal(size=(5,)).astype(np.float32))

    def function(x, y):
        return jnp.sin(x) * y, jnp.max(x, axis=0)

    def cost(fn, x, y):
        a, b = fn(x, y)
        return jnp.sum(a * a) + jnp.sum(b)

    apart = partial(cpu_kernels.computed_apart, function)
    for got, expected in zip(jax.jit(apart)(x, y), function(x, y)):
        np.testing.assert_array_equal(got, expected)
    x_nan = x.at[0, 0].set(np.nan)  # the predicate's value: either branch is the function
    np.testing.assert_array_equal(jax.jit(apart)(x_nan, y)[0], function(x_nan, y)[0])
    for got, expected in zip(jax.grad(partial(cost, apart), argnums=(0, 1))(x, y),
                             jax.grad(partial(cost, function), argnums=(0, 1))(x, y)):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("pool", [None, 2])
def test_batch_norm_of_the_image_conv_from_its_patches_matches_the_plain_formula(pool):
    # The 3x3 conv on one channel: its BN statistics come from the image patches' covariance.
    x = jnp.asarray(RNG.normal(0.5, 0.3, size=(4, 6, 6, 1)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(3, 3, 1, 5)).astype(np.float32))
    gamma = jnp.asarray([1.2, -0.8, 0.5, 2.0, -1.5], jnp.float32)
    beta = jnp.asarray(RNG.normal(size=5).astype(np.float32))
    m = 4 * 6 * 6
    out_shape = (4, 3, 3, 5) if pool else (4, 6, 6, 5)
    w_y = jnp.asarray(RNG.normal(size=out_shape).astype(np.float32))
    w_mean, w_var = (jnp.asarray(RNG.normal(size=5).astype(np.float32)) for _ in range(2))
    assert rna.conv2d_statistics(x, jnp.zeros((3, 3, 2, 5))) is None  # 18 values: XLA's conv

    def ours(x, w, gamma, beta):
        params, statistics = {"gamma": gamma, "beta": beta}, rna.conv2d_statistics(x, w)
        z = rna.conv2d(x, w)
        y, state = (rna.batch_norm_max_pool(z, params, None, pool, train=True,
                                            statistics=statistics) if pool else
                    rna.batch_norm(z, params, None, train=True, statistics=statistics))
        return y, state["mean"], state["var"]

    def plain(x, w, gamma, beta):
        y, mean, var = plain_batch_norm(plain_conv(x, w), gamma, beta)
        return (plain_max_pool(y, pool) if pool else y), mean, var * m / (m - 1)

    def cost(fn, *args):
        y, mean, var = fn(*args)
        return jnp.sum(y * w_y) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

    for got, expected in zip(ours(x, w, gamma, beta), plain(x, w, gamma, beta)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    args = (x, w, gamma, beta)
    got = jax.jit(jax.grad(lambda *a: cost(ours, *a), argnums=(0, 1, 2, 3)))(*args)
    expected = jax.grad(lambda *a: cost(plain, *a), argnums=(0, 1, 2, 3))(*args)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3 * float(np.abs(e).max()))


def test_feature_affine_and_bias_and_their_gradients_match_plain_broadcasting():
    x = jnp.asarray(RNG.normal(size=(3, 4, 5, 6)).astype(np.float32))
    scale, shift = (jnp.asarray(RNG.normal(size=6).astype(np.float32)) for _ in range(2))
    g = jnp.asarray(RNG.normal(size=x.shape).astype(np.float32))
    for fast, plain, args in [(cpu_batch_norm.feature_affine, lambda x, a, b: x * a + b,
                               (x, scale, shift)),
                              (cpu_batch_norm.add_bias, lambda x, b: x + b, (x, shift))]:
        np.testing.assert_allclose(fast(*args), plain(*args), rtol=1e-6, atol=1e-6)
        got = jax.jit(lambda *a: jax.vjp(fast, *a)[1](g))(*args)
        expected = jax.vjp(plain, *args)[1](g)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def _bfloat16(a):
    return jnp.asarray(a).astype(jnp.bfloat16)


@pytest.mark.parametrize("kernel,c_in,c_out", [(3, 128, 6), (3, 5, 129), (2, 130, 4)])
@pytest.mark.parametrize("tap_matmuls", [False, True])
def test_bfloat16_conv_gives_the_float32_sums_of_the_bfloat16_values(kernel, c_in, c_out,
                                                                     tap_matmuls):
    # 128 input channels: the forward as tap matmuls; 129 output channels: the input
    # gradient as tap matmuls (its contraction); an even window: the input gradient by vjp.
    x = _bfloat16(RNG.normal(size=(2, 5, 4, c_in)))
    w = jnp.asarray(RNG.normal(size=(kernel, kernel, c_in, c_out)).astype(np.float32) * 0.1)
    g = _bfloat16(RNG.normal(size=(2, 5, 4, c_out)))
    w_values = w.astype(jnp.bfloat16).astype(jnp.float32)  # the weights the conv multiplies
    y_ref, vjp_ref = jax.vjp(plain_conv, x.astype(jnp.float32), w_values)
    dx_ref, dw_ref = vjp_ref(g.astype(jnp.float32))
    y, vjp = jax.vjp(lambda x, w: cpu_bfloat16.bfloat16_conv(x, w, tap_matmuls), x, w)
    dx, dw = vjp(g)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
    # Sums in float32 (another order than XLA's), then rounded once to bfloat16 (2^-8 apart).
    for got, ref in ((y, y_ref), (dx, dx_ref)):
        np.testing.assert_allclose(got.astype(jnp.float32), ref, rtol=2 ** -8, atol=1e-5)
    # The weight gradient never passes through bfloat16.
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_conv2d_on_cpu_takes_the_bfloat16_path_only_for_bfloat16():
    x, w = _bfloat16(RNG.normal(size=(1, 3, 3, 4))), jnp.ones((3, 3, 4, 2), jnp.float32)
    def backward_rule(x):  # the custom gradient rna.conv2d traces for x
        (eqn,) = jax.make_jaxpr(rna.conv2d)(x, w).jaxpr.eqns
        assert eqn.primitive.name in ("custom_vjp_call", "custom_vjp_call_jaxpr")
        return str(eqn.params["bwd"])

    assert "_bfloat16_conv_bwd" in backward_rule(x)
    # float32: XLA's convolution, with the weight gradient from stored transposes
    assert "_classic_conv_bwd" in backward_rule(x.astype(jnp.float32))
