"""The intermediate layer's primitives: activations, initialisation, dropout, noise, batch norm.

Everything here is a pure function of arrays (and, where random, an explicit PRNG key), so
networks built from it jit, differentiate, shard and serialise without any framework magic.
The names follow the thesis: ``rna.relu()`` returns the activation a layer is built with.

This module states the math; where XLA's CPU backend needs the same math in another form to
run fast (the ReLUs', max-pooling's and batch norm's backward passes, the patch conv, the
unrolled random hash), the work is done by ``utils.nn.cpu_kernels``, tested against the plain
formulation. Those custom gradients differentiate in reverse mode (jax.grad, jax.vjp, what
training uses), not in forward mode (jax.jvp). Within ``with rna.plain_forms():`` the convolution
and max-pooling trace their plain forms instead (what a converter maps onto standard operators:
``utils.export``).
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from utils.nn import cpu_batch_norm, cpu_bfloat16, cpu_kernels, precision, winograd
from utils.support.names import closest_name

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
    return Activation("relu", cpu_kernels.relu)  # max(0, x)


def sigmoid() -> Activation:
    # Glorot & Bengio: the sigmoid's smaller slope at 0 asks for 4x the tanh range.
    return Activation("sigmoid", jax.nn.sigmoid, 4.0)


def tanh() -> Activation:
    return Activation("tanh", jnp.tanh)


def leaky_relu(negative_slope: float = 0.01) -> Activation:
    if not 0.0 <= negative_slope < 1.0:
        raise ValueError(f"leaky_relu: negative_slope must be in [0, 1), got {negative_slope}")
    name = "leaky_relu" if negative_slope == 0.01 else f"leaky_relu({negative_slope})"
    # x if x >= 0 else negative_slope * x
    return Activation(name, partial(cpu_kernels.leaky_relu, slope=negative_slope))


def linear() -> Activation:
    return Activation("linear", lambda x: x)


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
# Linear maps and pooling
# --------------------------------------------------------------------------------------------
_PLAIN_FORMS = ContextVar("plain_forms", default=False)


@contextmanager
def plain_forms():
    """Within the block, conv2d and max_pool trace their plain forms (``lax.conv_general_dilated``
    for every window, flax's ``max_pool``: ``lax.reduce_window``) instead of the CPU fast paths,
    which a graph converter cannot map onto single operators (the summed taps, the strided
    views); the same values (tests/test_rna_kernels.py). For tracing a fresh function
    (``utils.export``): JAX caches a trace by the function, not by this switch, so a function
    traced outside the block keeps its form inside it, and the reverse."""
    token = _PLAIN_FORMS.set(True)
    try:
        yield
    finally:
        _PLAIN_FORMS.reset(token)


def conv2d(x, w, kept: tuple[int, int] | None = None):
    """'same' 2-D convolution (cross-correlation, as every toolkit): x NHWC, w HWIO.

    y[n, i, j, o] = sum over (a, b, c) of x[n, i + a - top, j + b - left, c] * w[a, b, c, o],
    zero outside the image, computed in x's dtype (the network's compute dtype) and summed
    in float32. A small window (the 3x3 conv on the grayscale input) takes a faster form on
    CPU (``cpu_kernels.patch_conv``: its taps summed at inference, one matrix product with
    its im2col patches in training), and so does bfloat16 on CPU (``cpu_bfloat16.bfloat16_conv``:
    the same sums from float32 convs of the widened values, or from bfloat16 matrix products).
    A 3x3 window with 64 or more channels in and out is, on the CPUs measured, Winograd's
    F(2x2, 3x3) forward and in its input gradient (``winograd.conv3x3``: 2.25x fewer products),
    and one with channels enough takes Winograd's tiles for its weight gradient (F(4x4, 3x3)
    on 12x12 maps, F(2x2, 3x3) elsewhere); the others are XLA's convolution, whose weight
    gradient on CPU reads its operands transposed as stored (``cpu_kernels.classic_conv``).

    ``kept`` (rows, cols): only y[:, :rows, :cols], what a pooling that drops a ragged border
    reads: Winograd's tiles or XLA's convolution compute no more (5x5 maps: 4 tiles of 9, 16
    outputs of 25); other forms, and all with FER_KEPT_OUTPUTS=0, cut the whole map.
    """
    if kept is not None and tuple(kept) != tuple(x.shape[1:3]):
        return _conv2d_kept(x, w, tuple(kept))
    if precision.bfloat16_on_cpu(x) and not _is_patch_conv(w):
        return cpu_bfloat16.bfloat16_conv(x, w, precision.bfloat16_matmul_convs())
    w = w.astype(x.dtype)
    if not _PLAIN_FORMS.get():
        if _is_patch_conv(w):
            return cpu_kernels.patch_conv(x, w)
        forward_tiles, weight_tiles = winograd.chosen(x, w), winograd.weight_gradient_tiles(x, w)
        if forward_tiles or weight_tiles:
            return winograd.conv3x3(x, w, forward_tiles, weight_tiles)
        if x.dtype == jnp.float32 and jax.default_backend() == "cpu":
            return cpu_kernels.classic_conv(x, w)
    return _xla_conv(x, w, "SAME")


def _xla_conv(x, w, padding):
    """XLA's convolution of NHWC x, HWIO w: summed as ``accumulation_dtype`` says, x's dtype."""
    return lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding=padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=precision.accumulation_dtype(x.dtype)).astype(x.dtype)


def _conv2d_kept(x, w, kept: tuple[int, int]):
    """conv2d(x, w)[:, :rows, :cols], kept = (rows, cols): no more computed where it can."""
    rows, cols = kept
    if (_PLAIN_FORMS.get() or _is_patch_conv(w) or os.environ.get("FER_KEPT_OUTPUTS") == "0"
            or precision.bfloat16_on_cpu(x)):
        return conv2d(x, w)[:, :rows, :cols]
    w = w.astype(x.dtype)
    if winograd.chosen(x, w):
        return winograd.conv3x3(x, w, True, winograd.weight_gradient_tiles(x, w), kept)
    kh, kw = w.shape[:2]
    (top, _), (left, _) = cpu_kernels.same_padding(kh, kw)
    # output row i reads rows i - top .. i - top + kh - 1: cut those past, pad those missing
    x = x[:, :rows - top + kh - 1, :cols - left + kw - 1]
    return _xla_conv(x, w, [(top, rows - top + kh - 1 - x.shape[1]),
                            (left, cols - left + kw - 1 - x.shape[2])])


def _is_patch_conv(w) -> bool:
    """Whether conv2d takes the small-window path (``cpu_kernels.patch_conv``) for w."""
    kh, kw, c_in, _ = w.shape
    return kh * kw * c_in <= cpu_kernels.PATCH_CONV_MAX_WINDOW


def add_bias(x, b):
    """x + b per feature (the last axis), in x's dtype (``cpu_batch_norm.add_bias``: a fast
    gradient sum)."""
    return cpu_batch_norm.add_bias(x, b)


def dense(x, w, out_dtype=None):
    """x @ w in x's dtype, summed in float32; the result in ``out_dtype`` (default: x's)."""
    y = jnp.matmul(x, w.astype(x.dtype),
                   preferred_element_type=precision.accumulation_dtype(x.dtype))
    return y.astype(out_dtype or x.dtype)


def max_pool(x, size: int = 2):
    """Non-overlapping size x size max-pooling of NHWC; a ragged border is dropped (floor).

    y[n, i, j, c] = max of x[n, size*i + a, size*j + b, c] over 0 <= a, b < size. The gradient
    goes to the first maximum of each window in row-major order (as XLA's select-and-scatter
    sends it), from a record of which one it was (``cpu_kernels.max_pool``).
    """
    if _PLAIN_FORMS.get():
        # flax's max_pool is lax.reduce_window(max) over the spatial axes, which converters
        # (jax2onnx) recognise as one pooling operator; a bare reduce_window, over NHWC or
        # transposed to NCHW, becomes a pooling over all four axes, which onnxruntime refuses
        # ("Unsupported pooling size": both tried with jax2onnx 0.17.1). Imported here: only
        # then needed.
        from flax import nnx
        return nnx.max_pool(x, window_shape=(size, size), strides=(size, size),
                            padding="VALID")
    return cpu_kernels.max_pool(x, size)


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
    ``jax.random.bernoulli(key, 1-p, x.shape)``, bit for bit (``cpu_kernels.uniform``).
    """
    if not train or p == 0.0 or key is None:
        return x
    keep = 1.0 - p
    kept = cpu_kernels.computed_once(cpu_kernels.uniform(key, x.shape, lax.dtype(keep)) < keep)
    return jnp.where(kept > 0, x * jnp.asarray(1.0 / keep, x.dtype), jnp.zeros((), x.dtype))


def gaussian_noise(x, std: float, *, train: bool, key=None):
    """Add N(0, std^2) noise at train time only (``jax.random.normal``'s values, bit for bit;
    drawn and added in float32 when x is bfloat16, so both dtypes draw the same noise)."""
    if not train or std == 0.0 or key is None:
        return x
    dtype = precision.accumulation_dtype(x.dtype)
    # jax.random.normal: sqrt(2) erfinv(u), u uniform on (-1, 1).
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    u = cpu_kernels.uniform(key, x.shape, dtype, low, np.array(1.0, dtype))
    return (x + std * (np.array(np.sqrt(2), dtype) * lax.erf_inv(u))).astype(x.dtype)



# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------
def batch_norm_init(n_features: int, dtype=jnp.float32):
    """(params, state): learned gamma/beta, and the population statistics used at test time."""
    params = {"gamma": jnp.ones((n_features,), dtype), "beta": jnp.zeros((n_features,), dtype)}
    state = {"mean": jnp.zeros((n_features,), dtype), "var": jnp.ones((n_features,), dtype)}
    return params, state


def batch_norm(x, params, state, *, train: bool, eps: float = BN_EPSILON, statistics=None):
    """Normalise per feature (last axis) over all other axes:
    y = gamma * (x - mean) / sqrt(var + eps) + beta, statistics and arithmetic in float32,
    y in x's dtype.

    Train: normalises with this mini-batch's mean and biased variance, and returns the batch's
    mean and UNBIASED variance (m/(m-1) times the biased one, m = values per feature) as the new
    state, so the caller decides what to do with them (population statistics or an EMA). The
    statistics and gradients come from ``cpu_batch_norm.batch_norm_train`` (the same formula,
    with a closed-form backward), or are the batch's ``statistics`` (mean, biased variance)
    when the caller has them (``conv2d_statistics``).
    Test: uses ``state`` (population statistics) and returns it unchanged.
    """
    if not train:
        scale = params["gamma"] * lax.rsqrt(state["var"] + eps)
        return ((x - state["mean"]) * scale + params["beta"]).astype(x.dtype), state
    if statistics is None:
        y, mean, var = cpu_batch_norm.batch_norm_train(x, params["gamma"], params["beta"], eps)
    else:
        mean, var = statistics
        y = cpu_batch_norm.feature_affine(x, *_normalising_affine(params, mean, var, eps))
    return y, _batch_state(x, mean, var)


def batch_norm_max_pool(x, params, state, size: int, *, train: bool, eps: float = BN_EPSILON,
                        statistics=None):
    """max_pool(batch_norm(x), size), with batch_norm's new state.

    In train mode the pooling comes first (normalisation is monotonic per feature: the same
    values, a quarter of the backward pass's work at full size):
    ``cpu_batch_norm.batch_norm_max_pool_train``, or ``affine_max_pool`` with the batch's
    ``statistics`` when the caller has them.
    """
    if not train:
        return max_pool(batch_norm(x, params, state, train=False, eps=eps)[0], size), state
    if statistics is None:
        y, mean, var = cpu_batch_norm.batch_norm_max_pool_train(x, params["gamma"],
                                                                params["beta"], eps, size)
    else:
        mean, var = statistics
        y = cpu_batch_norm.affine_max_pool(x, *_normalising_affine(params, mean, var, eps), size)
    return y, _batch_state(x, mean, var)


def _normalising_affine(params, mean, var, eps):
    """(scale, shift) with batch norm = x * scale + shift per feature, for given statistics."""
    scale = params["gamma"] * lax.rsqrt(var + eps)
    return scale, params["beta"] - mean * scale


def conv2d_statistics(x, w):
    """The per-feature mean and biased variance of conv2d(x, w) over the batch, when they are
    cheaper from the input than from the output (the im2col window: from the patches'
    covariance, ``cpu_batch_norm.patch_conv_moments``); else None."""
    if _is_patch_conv(w):
        return cpu_batch_norm.patch_conv_moments(x, w.astype(x.dtype))
    return None


def _batch_state(x, mean, var):
    """The new BN state of a batch: its mean and unbiased variance (m/(m-1) x the biased)."""
    m = x.size // x.shape[-1]
    return {"mean": mean, "var": var * (m / max(m - 1, 1))}


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
    """One step of an exponential moving average over a pytree: of batch statistics (the
    alternative to population ones), and of the weights (``ema_decay``)."""
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
