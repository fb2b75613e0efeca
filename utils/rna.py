"""The intermediate layer's primitives: activations, initialisation, dropout, noise, batch norm.

Everything here is a pure function of arrays (and, where random, an explicit PRNG key), so
networks built from it jit, differentiate, shard and serialise without any framework magic.
The names follow the thesis: ``rna.relu()`` returns the activation a layer is built with.

The ReLUs, max-pooling and train-mode batch norm define their own gradients (fast on CPU, see
each) with ``jax.custom_vjp``: they differentiate in reverse mode (jax.grad, jax.vjp, what
training uses), not in forward mode (jax.jvp).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from utils.names import closest_name

BN_EPSILON = 1e-5


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------
class Activation(NamedTuple):
    """An activation function with the Glorot gain its layers are initialised with."""

    name: str
    fn: Callable[[jax.Array], jax.Array]
    glorot_gain: float = 1.0

    def __call__(self, x):
        return self.fn(x)

    def __repr__(self):
        return f"rna.{self.name}()"


def relu() -> Activation:
    return Activation("relu", _relu)


def sigmoid() -> Activation:
    # Glorot & Bengio: the sigmoid's smaller slope at 0 asks for 4x the tanh range.
    return Activation("sigmoid", jax.nn.sigmoid, 4.0)


def tanh() -> Activation:
    return Activation("tanh", jnp.tanh)


def leaky_relu(negative_slope: float = 0.01) -> Activation:
    if not 0.0 <= negative_slope < 1.0:
        raise ValueError(f"leaky_relu: negative_slope must be in [0, 1), got {negative_slope}")
    name = "leaky_relu" if negative_slope == 0.01 else f"leaky_relu({negative_slope})"
    return Activation(name, partial(_leaky_relu, slope=negative_slope))


def linear() -> Activation:
    return Activation("linear", lambda x: x)


# The ReLUs' backward passes read the sign of their input, kept as computed_once: otherwise
# XLA recomputes the whole chain before it (batch norm, pooling) inside the backward pass.
@jax.custom_vjp
def _relu(x):
    return jax.nn.relu(x)


def _relu_fwd(x):
    return jax.nn.relu(x), computed_once(x > 0)


def _relu_bwd(positive, g):
    return (jnp.where(positive > 0, g, jnp.zeros((), g.dtype)),)


_relu.defvjp(_relu_fwd, _relu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _leaky_relu(x, slope):
    return jnp.where(x >= 0, x, slope * x)


def _leaky_relu_fwd(x, slope):
    return _leaky_relu(x, slope), computed_once(x >= 0)


def _leaky_relu_bwd(slope, non_negative, g):
    return (jnp.where(non_negative > 0, g, slope * g),)


_leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "leaky_relu": leaky_relu,
    "linear": linear,
}


def get_activation(spec) -> Activation:
    """An Activation from itself, a name ("relu", "leaky_relu(0.2)") or a thesis-style call."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name.startswith("rna."):
            name = name[4:]
        if name.endswith("()"):
            name = name[:-2]
        if name.startswith("leaky_relu(") and name.endswith(")"):
            try:
                return leaky_relu(float(name[len("leaky_relu("):-1]))
            except ValueError:
                pass
        if name in ACTIVATIONS:
            return ACTIVATIONS[name]()
        raise ValueError(
            f"unknown activation {spec!r}{closest_name(name, ACTIVATIONS)}; "
            f"valid: {', '.join(ACTIVATIONS)}"
        )
    raise ValueError(f"activation must be a name or rna.<name>(), got {spec!r}")


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------
def glorot_bound(fan_in: float, fan_out: float, gain: float = 1.0) -> float:
    """r = gain * sqrt(6 / (fan_in + fan_out)), the Glorot uniform range."""
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def glorot_uniform(key, shape, fan_in, fan_out, gain=1.0, dtype=jnp.float32):
    r = glorot_bound(fan_in, fan_out, gain)
    return jax.random.uniform(key, shape, dtype, minval=-r, maxval=r)


def conv_fans(kernel: int, c_in: int, c_out: int, pool_area: int = 1) -> tuple[float, float]:
    """Theano-tutorial fans of a conv layer: fan_out is divided by the pooling area after it."""
    return c_in * kernel * kernel, c_out * kernel * kernel / pool_area


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


# --------------------------------------------------------------------------------------------
# Linear maps and pooling
# --------------------------------------------------------------------------------------------
# A conv whose window holds at most this many values (taps x input channels: the 3x3 conv on
# the grayscale input) is one matrix product with its im2col patches: XLA's CPU conv kernels
# are slowest on a single input channel (measured: twice as fast forward, as fast backward;
# a 5x5 window is already better left to XLA).
PATCH_CONV_MAX_WINDOW = 16


def conv2d(x, w):
    """'same' 2-D convolution (cross-correlation, as every toolkit): x NHWC, w HWIO."""
    kh, kw, c_in, c_out = w.shape
    if kh * kw * c_in <= PATCH_CONV_MAX_WINDOW:
        n, h, width, _ = x.shape
        patches = jnp.concatenate(_same_taps(x, kh, kw), axis=-1).reshape(n * h * width, -1)
        return (patches @ w.reshape(kh * kw * c_in, c_out)).reshape(n, h, width, c_out)
    return lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _same_taps(x, kh: int, kw: int) -> list:
    """The kh*kw shifted views of x that a 'same' kernel's taps (i, j) see, row-major."""
    _, h, w, _ = x.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2  # XLA's 'SAME': the odd pixel pads the end
    padded = jnp.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    return [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


def dense(x, w):
    return x @ w


def max_pool(x, size: int = 2):
    """Non-overlapping size x size max-pooling of NHWC; a ragged border is dropped (floor).

    The gradient goes to the first maximum of each window in row-major order (as XLA's
    select-and-scatter does), from a record of which one it was kept at the pooled size.
    """
    return _max_pool(x, size)


def _pool_windows(x, size: int) -> list:
    """The size*size strided views of x, one per position in the window, row-major."""
    n, h, w, c = x.shape
    rows, cols = h // size, w // size
    blocks = x[:, :rows * size, :cols * size, :].reshape(n, rows, size, cols, size, c)
    return [blocks[:, :, i, :, j, :] for i in range(size) for j in range(size)]


def _window_max(windows):
    top = windows[0]
    for window in windows[1:]:
        top = jnp.maximum(top, window)
    return top


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, size):
    return _window_max(_pool_windows(x, size))


def _max_pool_fwd(x, size):
    windows = _pool_windows(x, size)
    top = _window_max(windows)
    first = jnp.full(top.shape, len(windows) - 1, jnp.int32)
    for k in range(len(windows) - 2, -1, -1):
        first = jnp.where(windows[k] == top, k, first)
    return top, (computed_once(first), x.shape)


def _max_pool_bwd(size, residuals, g):
    first, x_shape = residuals
    n, rows, cols, c = g.shape
    position = np.arange(size * size).reshape(1, 1, size, 1, size, 1)
    gx = jnp.where(computed_once_equals(first[:, :, None, :, None, :], position),
                   g[:, :, None, :, None, :],
                   jnp.zeros((), g.dtype)).reshape(n, rows * size, cols * size, c)
    ragged = ((0, 0), (0, x_shape[1] - rows * size), (0, x_shape[2] - cols * size), (0, 0))
    return (jnp.pad(gx, ragged) if ragged[1][1] or ragged[2][1] else gx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# --------------------------------------------------------------------------------------------
# Stochastic regularisers (identity at test time)
# --------------------------------------------------------------------------------------------
def check_probability(p, what: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{what} must be a drop probability in [0, 1), got {p!r}")
    return float(p)


def dropout(x, p: float, *, train: bool, key=None):
    """Drop each unit with probability ``p`` (the DROP probability, thesis convention).

    Inverted scaling: kept units are divided by 1-p at train time, so the test-time network
    is the identity and expectations match. ``key=None`` at train time switches it off (used
    when collecting batch-norm population statistics). The mask is
    ``jax.random.bernoulli(key, 1-p, x.shape)``, bit for bit (see ``uniform``).
    """
    if not train or p == 0.0 or key is None:
        return x
    keep = 1.0 - p
    kept = computed_once(uniform(key, x.shape, lax.dtype(keep)) < keep)
    return jnp.where(kept > 0, x * jnp.asarray(1.0 / keep, x.dtype), jnp.zeros((), x.dtype))


def gaussian_noise(x, std: float, *, train: bool, key=None):
    """Add N(0, std^2) noise at train time only (``jax.random.normal``'s values, bit for bit)."""
    if not train or std == 0.0 or key is None:
        return x
    # jax.random.normal: sqrt(2) erfinv(u), u uniform on (-1, 1).
    low = np.nextafter(np.array(-1.0, x.dtype), np.array(0.0, x.dtype))
    u = uniform(key, x.shape, x.dtype, low, np.array(1.0, x.dtype))
    return x + std * (np.array(np.sqrt(2), x.dtype) * lax.erf_inv(u))


# JAX's CPU lowering of the threefry hash runs its 5 rounds as a loop over whole arrays, which
# made dropout masks cost more than a conv layer; the same hash unrolled fuses into one pass.
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


# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------
def batch_norm_init(n_features: int, dtype=jnp.float32):
    """(params, state): learned gamma/beta, and the population statistics used at test time."""
    params = {"gamma": jnp.ones((n_features,), dtype), "beta": jnp.zeros((n_features,), dtype)}
    state = {"mean": jnp.zeros((n_features,), dtype), "var": jnp.ones((n_features,), dtype)}
    return params, state


def batch_norm(x, params, state, *, train: bool, eps: float = BN_EPSILON):
    """Normalise per feature (last axis) over all other axes.

    Train: normalises with this mini-batch's mean and biased variance, and returns the batch's
    mean and UNBIASED variance (m/(m-1) times the biased one, m = values per feature) as the new
    state, so the caller decides what to do with them (population statistics or an EMA).
    Test: uses ``state`` (population statistics) and returns it unchanged.
    """
    if train:
        m = x.size // x.shape[-1]
        y, mean, var = _batch_norm_train(x, params["gamma"], params["beta"], eps)
        return y, {"mean": mean, "var": var * (m / max(m - 1, 1))}
    scale = params["gamma"] * lax.rsqrt(state["var"] + eps)
    return (x - state["mean"]) * scale + params["beta"], state


# XLA's CPU reductions are fast along a wide last axis but slow over many leading axes onto a
# narrow one, so per-feature sums fold rows into the last axis first: [R, C] -> [R/k, k*C].
_WIDE_ROW = 4096


def feature_sum(x):
    """Sum over all axes but the last."""
    c = x.shape[-1]
    rows = x.size // c
    fold = math.gcd(rows, max(1, _WIDE_ROW // c))
    if rows <= fold:
        return jnp.sum(x.reshape(rows, c), axis=0)
    partial_sums = jnp.sum(x.reshape(rows // fold, fold * c), axis=0)
    return jnp.sum(partial_sums.reshape(fold, c), axis=0)


def _batch_moments(x):
    """Per-feature mean and biased variance (two passes: no cancellation)."""
    m = x.size // x.shape[-1]
    mean = feature_sum(x) / m
    return mean, feature_sum(jnp.square(x - mean)) / m


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_train(x, gamma, beta, eps):
    mean, var = _batch_moments(x)
    return (x - mean) * (gamma * lax.rsqrt(var + eps)) + beta, mean, var


def _batch_norm_train_fwd(x, gamma, beta, eps):
    mean, var = _batch_moments(x)
    inv_std = lax.rsqrt(var + eps)
    return ((x - mean) * (gamma * inv_std) + beta, mean, var), (x, mean, inv_std, gamma)


def _batch_norm_train_bwd(eps, residuals, cotangents):
    # The usual closed form (two per-feature sums, then one elementwise pass), plus what flows
    # back through the returned batch mean and variance.
    x, mean, inv_std, gamma = residuals
    g, g_mean, g_var = cotangents
    m = x.size // x.shape[-1]
    x_hat = (x - mean) * inv_std
    d_beta = feature_sum(g)
    d_gamma = feature_sum(g * x_hat)
    dx = ((gamma * inv_std) * (g - (d_beta + x_hat * d_gamma) / m)
          + (g_mean + 2.0 * g_var * x_hat / inv_std) / m)
    return dx, d_gamma, d_beta


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def population_statistics(batch_states: list):
    """The BN paper's inference statistics from the states of equally sized training batches.

    E[x] = mean of the batch means; Var[x] = m/(m-1) * mean of the batch (biased) variances.
    The m/(m-1) factor is already in each batch state (see ``batch_norm``), so both are plain
    means over batches.
    """
    if not batch_states:
        raise ValueError("population_statistics needs at least one batch")
    return jax.tree_util.tree_map(
        lambda *leaves: jnp.mean(jnp.stack(leaves), axis=0), *batch_states
    )


def ema_statistics(state, batch_state, momentum: float):
    """Exponential moving average of batch statistics (the alternative to population ones)."""
    return jax.tree_util.tree_map(
        lambda old, new: momentum * old + (1.0 - momentum) * new, state, batch_state
    )


# --------------------------------------------------------------------------------------------
# Regularisation over weights only
# --------------------------------------------------------------------------------------------
def weight_leaves(params) -> list:
    """The weight matrices/kernels (leaves named 'w'): no biases, no BN gamma/beta."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [leaf for path, leaf in leaves if getattr(path[-1], "key", None) == "w"]


def l1_l2_penalty(params, l1: float, l2: float):
    """L1 * sum|W| + L2 * sum W^2 over weights."""
    total = jnp.zeros((), jnp.float32)
    if l1 == 0.0 and l2 == 0.0:
        return total
    for w in weight_leaves(params):
        if l1:
            total = total + l1 * jnp.sum(jnp.abs(w))
        if l2:
            total = total + l2 * jnp.sum(jnp.square(w))
    return total
