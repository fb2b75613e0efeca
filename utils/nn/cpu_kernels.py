"""XLA-CPU fast paths for the primitives of ``utils.rna``: same results, fewer passes.

``rna`` states the thesis's math; the functions here compute it in the form XLA's CPU backend
runs fastest, each tested against the plain ``jax.lax`` / ``jax.random`` formulation it
replaces (``tests/test_rna_kernels.py``): bit for bit where only the organisation changes
(dropout masks, noise, max-pooling and its gradient routing, the ReLUs), within float rounding
where sums are reordered (batch norm, the patch conv, the classic conv's weight gradient).

The ReLUs, max-pooling, the patch conv and the classic conv (whose weight gradient reads its
operands transposed as stored) define their own gradients with ``jax.custom_vjp``: reverse
mode only (jax.grad, jax.vjp: what training uses), not jax.jvp.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from utils.nn.precision import accumulation_dtype


# --------------------------------------------------------------------------------------------
# Keeping XLA from recomputing
# --------------------------------------------------------------------------------------------
def computed_once(small_ints):
    """Small non-negative integers (or booleans) in a float32 form that XLA computes once.

    XLA's CPU fusion copies any chain of 'cheap' elementwise operations into every consumer
    that reads it, however long the chain: a dropout mask (a 20-round hash), a pooling's
    argmax or a ReLU's sign (each with the batch norm and window maxima before it) would be
    recomputed in the backward pass, four times over where it is read at the unpooled
    resolution, and CPU XLA drops optimisation barriers before it fuses. A square root counts
    as expensive, so XLA never duplicates one: the values are kept as their square roots,
    which are exact for 0 and 1 and, being strictly increasing, tell any other apart
    (``computed_once_equals``).
    """
    return jnp.sqrt(jnp.asarray(small_ints).astype(jnp.float32))


def computed_once_equals(kept, values):
    """kept == computed_once(values), elementwise, robust to the root's last-bit rounding."""
    values = np.asarray(values, np.float64)
    # sqrt(k+1) - sqrt(k) > 1/(2 sqrt(k+1)): a quarter of that gap separates neighbours.
    return (jnp.abs(kept - np.sqrt(values).astype(np.float32))
            < (0.25 / np.sqrt(values + 1)).astype(np.float32))


def computed_apart(function, x, *operands):
    """function(x, *operands) in a conditional whose two branches are the function: XLA's
    fusion enters neither, so it is not fused with what computes x, nor recomputed in what
    reads its results. The predicate (a value of x) keeps XLA from folding the conditional;
    off the CPU (a GPU's conditional has the host read its predicate), the plain call."""
    if jax.default_backend() != "cpu":
        return function(x, *operands)
    return lax.cond(jnp.isfinite(x.reshape(-1)[0]), function, function, x, *operands)


# --------------------------------------------------------------------------------------------
# ReLUs: the backward pass reads the input's sign, kept as computed_once; otherwise XLA
# recomputes the whole chain before it (batch norm, pooling) inside the backward pass.
# --------------------------------------------------------------------------------------------
@jax.custom_vjp
def relu(x):
    return jax.nn.relu(x)


def _relu_fwd(x):
    return jax.nn.relu(x), computed_once(x > 0)


def _relu_bwd(positive, g):
    return (jnp.where(positive > 0, g, jnp.zeros((), g.dtype)),)


relu.defvjp(_relu_fwd, _relu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def leaky_relu(x, slope):
    return jnp.where(x >= 0, x, slope * x)


def _leaky_relu_fwd(x, slope):
    return leaky_relu(x, slope), computed_once(x >= 0)


def _leaky_relu_bwd(slope, non_negative, g):
    return (jnp.where(non_negative > 0, g, slope * g),)


leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


# --------------------------------------------------------------------------------------------
# Convolution with a small window: its taps summed in one fused pass at inference, one matrix
# product with its im2col patches in training
# --------------------------------------------------------------------------------------------
# A conv whose window holds at most this many values (taps x input channels: the 3x3 conv on the
# grayscale input) takes the patch path: XLA's CPU conv kernels are slowest on one input channel
# (measured: twice as fast forward, as fast backward; a 5x5 window is better left to XLA).
PATCH_CONV_MAX_WINDOW = 16


def differentiated_as(plain):
    """Decorator: the decorated function where not differentiated (inference), ``plain`` (the
    same values in another form) where it is: its forward and gradient (jax.vjp of plain; its
    traced output unused, XLA drops it), so a training step's results are plain's, bit for bit."""
    def fast_at_inference(fast):
        function = jax.custom_vjp(fast)
        function.defvjp(lambda *args: (plain(*args), args),
                        lambda args, g: jax.vjp(plain, *args)[1](g))
        return function
    return fast_at_inference


def _patch_matmul(x, w):
    """The same conv as im2col patches @ w (summed in float32, returned in x's dtype)."""
    kh, kw, c_in, c_out = w.shape
    n, h, width, _ = x.shape
    y = jnp.matmul(patches(x, kh, kw), w.reshape(kh * kw * c_in, c_out),
                   preferred_element_type=accumulation_dtype(x.dtype))
    return y.astype(x.dtype).reshape(n, h, width, c_out)


@differentiated_as(_patch_matmul)
def patch_conv(x, w):
    """'same' cross-correlation of NHWC x with HWIO w, summed in float32, in x's dtype.

    Two forms of the same sum. Not differentiated (inference, evaluation): the window's taps
    times their weights, summed elementwise, one loop that XLA fuses with the batch norm and
    pooling after it (S's first layer at batch 128: 1.3 ms, against 5.8 ms for the im2col
    matrix product with YNNPACK's matmul and 3.7 ms with the classic one). Differentiated
    (training): the im2col matrix product, whose gradient is the patches' product with the
    output gradient, and which keeps training's results as they were, bit for bit."""
    kh, kw, c_in, c_out = w.shape
    acc = accumulation_dtype(x.dtype)
    weights = w.astype(acc).reshape(kh * kw, c_in, c_out)
    y = None
    for k, tap in enumerate(same_taps(x.astype(acc), kh, kw)):
        for c in range(c_in):
            term = tap[..., c:c + 1] * weights[k, c]
            y = term if y is None else y + term
    return y.astype(x.dtype)


def patches(x, kh: int, kw: int):
    """The im2col matrix of a 'same' kh x kw window: one row of kh*kw*c values per pixel."""
    n, h, width, _ = x.shape
    return jnp.concatenate(same_taps(x, kh, kw), axis=-1).reshape(n * h * width, -1)


def same_padding(kh: int, kw: int) -> tuple:
    """((top, bottom), (left, right)): a 'same' kh x kw window's (XLA's: the odd one at the end)."""
    return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)


def same_taps(x, kh: int, kw: int) -> list:
    """The kh*kw shifted views of x that a 'same' kernel's taps (i, j) see, row-major."""
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), *same_padding(kh, kw), (0, 0)))
    return [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


# --------------------------------------------------------------------------------------------
# The classic convolution's weight gradient. XLA computes it as a convolution whose batch is the
# input's channels and whose contracted feature is the images, so its CPU kernel wants x as
# [C][H][W][N] and the output gradient as [H][W][N][C_out] in memory. XLA makes those copies itself,
# but fuses the producer of x (the previous layer's batch norm and ReLU) into the transposing
# copy, whose loop then reads x across the batch, a cache line per value: in V's step the 48x48x32
# one took 59 ms where the plain transpose of the stored x takes 12 (2-core AMD EPYC Zen 3). Done
# apart (``computed_apart``), x is stored first and XLA (jaxlib 0.10) transposes it in a copy.
# --------------------------------------------------------------------------------------------
def stored_transpose(x, permutation):
    """jnp.transpose(x, permutation), done on x as stored: never fused with what computes x."""
    return computed_apart(partial(jnp.transpose, axes=permutation), x)


def conv_weight_gradient(x, g, window):
    """The weight gradient (HWIO) of the 'same' stride-1 cross-correlation of NHWC x with a
    ``window`` (kh, kw) filter, at output gradient g: dW[a, b, c, o] = sum over n, i, j of
    x_padded[n, i + a, j + b, c] g[n, i, j, o]. The same convolution XLA makes of it, the same
    values (tests/test_rna_kernels.py), from operands transposed by ``stored_transpose``."""
    kh, kw = window
    images_last = stored_transpose(x, (3, 1, 2, 0))  # [C][H][W][N]: a batch of C "images"
    gradients = stored_transpose(g, (1, 2, 0, 3))  # [H][W][N][C_out]: an H x W "filter"
    transposed = lax.conv_general_dilated(
        images_last, gradients, window_strides=(1, 1),
        padding=same_padding(kh, kw),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.transpose(transposed, (1, 2, 0, 3))


@jax.custom_vjp
def classic_conv(x, w):
    """'same' cross-correlation of float32 NHWC x with HWIO w, XLA's convolution, whose weight
    gradient is ``conv_weight_gradient`` (its input gradient XLA's own)."""
    return conv_same_float32(x, w)


def _classic_conv_bwd(residuals, g):
    x, w = residuals
    return conv_input_gradient(x, w, g), conv_weight_gradient(x, g, w.shape[:2])


classic_conv.defvjp(lambda x, w: (conv_same_float32(x, w), (x, w)), _classic_conv_bwd)


def conv_input_gradient(x, w, g):
    """The input gradient of ``conv_same_float32(x, w)`` at g, XLA's own."""
    return jax.vjp(lambda x: conv_same_float32(x, w), x)[1](g)[0]


def conv_same_float32(x, w):
    """The 'same' cross-correlation of NHWC x with HWIO w, widened to and computed in float32."""
    return lax.conv_general_dilated(
        x.astype(jnp.float32), w.astype(jnp.float32), window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def input_gradient_filters(w):
    """The filters whose 'same' convolution of the output gradient is the input gradient of an
    odd window's 'same' convolution (which pads evenly): w rotated by 180 degrees, its input
    and output channels swapped."""
    return jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))


# --------------------------------------------------------------------------------------------
# Max-pooling: window maxima as elementwise maxima of strided views; the gradient routed by
# the first maximum's position, kept at the pooled size (XLA's select-and-scatter recomputes
# the comparisons at full size).
# --------------------------------------------------------------------------------------------
def pool_windows(x, size: int) -> list:
    """The size*size strided views of x, one per position in the window, row-major."""
    n, h, w, c = x.shape
    rows, cols = h // size, w // size
    blocks = x[:, :rows * size, :cols * size, :].reshape(n, rows, size, cols, size, c)
    return [blocks[:, :, i, :, j, :] for i in range(size) for j in range(size)]


def window_max(windows):
    top = windows[0]
    for window in windows[1:]:
        top = jnp.maximum(top, window)
    return top


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x, size):
    return window_max(pool_windows(x, size))


def _max_pool_fwd(x, size):
    windows = pool_windows(x, size)
    top = window_max(windows)
    return top, (computed_once(first_position(windows, top)), x.shape)


def _max_pool_bwd(size, residuals, g):
    first, x_shape = residuals
    return (unpool(g, first, x_shape, size),)


def first_position(windows, chosen):
    """Per pooled value, the first window position (row-major) holding ``chosen``."""
    first = jnp.full(chosen.shape, len(windows) - 1, jnp.int32)
    for k in range(len(windows) - 2, -1, -1):
        first = jnp.where(windows[k] == chosen, k, first)
    return first


def unpool(g, first, x_shape, size: int):
    """The pooled gradient g sent to the window positions ``first`` (computed_once) marks,
    zero elsewhere and on a ragged border: a map of shape x_shape."""
    n, rows, cols, c = g.shape
    position = np.arange(size * size).reshape(1, 1, size, 1, size, 1)
    gx = jnp.where(computed_once_equals(first[:, :, None, :, None, :], position),
                   g[:, :, None, :, None, :],
                   jnp.zeros((), g.dtype)).reshape(n, rows * size, cols * size, c)
    ragged = ((0, 0), (0, x_shape[1] - rows * size), (0, x_shape[2] - cols * size), (0, 0))
    return jnp.pad(gx, ragged) if ragged[1][1] or ragged[2][1] else gx


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# --------------------------------------------------------------------------------------------
# Uniform draws: jax.random's threefry hash, unrolled. JAX's CPU lowering runs its 5 rounds as
# a loop over whole arrays, which made dropout masks cost more than a conv layer; the same
# hash unrolled fuses into one pass.
# --------------------------------------------------------------------------------------------
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k0, k1, x0, x1):
    keys = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
        x0 = x0 + keys[(i + 1) % 3]
        x1 = x1 + keys[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _is_unrollable(key, shape, dtype) -> bool:
    """Whether ``_threefry_bits`` reproduces jax.random's bits for this draw."""
    return (jnp.dtype(dtype) == jnp.float32 and 0 < len(shape) and math.prod(shape) < 2 ** 32
            and jax.config.jax_threefry_partitionable
            and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            and str(jax.random.key_impl(key)) == "threefry2x32")


def _threefry_bits(key, shape):
    """jax.random.bits(key, shape) for a threefry key (partitionable: counter = flat index)."""
    k0, k1 = jax.random.key_data(key)
    strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
    index = sum(lax.broadcasted_iota(jnp.uint32, shape, d) * np.uint32(s)
                for d, s in enumerate(strides))
    hi, lo = _threefry2x32(k0, k1, jnp.zeros(shape, jnp.uint32), index)
    return hi ^ lo


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    """``jax.random.uniform``, bit for bit; float32 threefry draws take the unrolled hash."""
    shape = tuple(shape)
    if not _is_unrollable(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    # jax.random.uniform: 23 random mantissa bits under exponent 0 give [1, 2), minus 1.
    mantissa = (_threefry_bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000)
    floats = lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    minval, maxval = jnp.asarray(minval, jnp.float32), jnp.asarray(maxval, jnp.float32)
    return jnp.maximum(minval, floats * (maxval - minval) + minval)
