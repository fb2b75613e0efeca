"""The intermediate layer's primitives: activations, initialisation, dropout, noise, batch norm.

Everything here is a pure function of arrays (and, where random, an explicit PRNG key), so
networks built from it jit, differentiate, shard and serialise without any framework magic.
The names follow the thesis: ``rna.relu()`` returns the activation a layer is built with.
"""
from __future__ import annotations

import difflib
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

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
    return Activation("relu", jax.nn.relu)


def sigmoid() -> Activation:
    # Glorot & Bengio: the sigmoid's smaller slope at 0 asks for 4x the tanh range.
    return Activation("sigmoid", jax.nn.sigmoid, 4.0)


def tanh() -> Activation:
    return Activation("tanh", jnp.tanh)


def leaky_relu(negative_slope: float = 0.01) -> Activation:
    if not 0.0 <= negative_slope < 1.0:
        raise ValueError(f"leaky_relu: negative_slope must be in [0, 1), got {negative_slope}")
    name = "leaky_relu" if negative_slope == 0.01 else f"leaky_relu({negative_slope})"
    return Activation(name, lambda x: jnp.where(x >= 0, x, negative_slope * x))


def linear() -> Activation:
    return Activation("linear", lambda x: x)


ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "leaky_relu": leaky_relu,
    "linear": linear,
}


def closest_name(name: str, valid) -> str:
    """' (did you mean 'x'?)' for the valid name closest to ``name``, or '' if none is close."""
    by_lower = {str(v).lower(): v for v in valid}
    match = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return f" (did you mean {by_lower[match[0]]!r}?)" if match else ""


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
def conv2d(x, w):
    """'same' 3-D convolution (cross-correlation, as every toolkit): x NHWC, w HWIO."""
    return lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def dense(x, w):
    return x @ w


def max_pool(x, size: int = 2):
    """Non-overlapping size x size max-pooling of NHWC; a ragged border is dropped (floor)."""
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, size, size, 1), (1, size, size, 1), "VALID"
    )


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
    when collecting batch-norm population statistics).
    """
    if not train or p == 0.0 or key is None:
        return x
    keep = 1.0 - p
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x * jnp.asarray(1.0 / keep, x.dtype), jnp.zeros((), x.dtype))


def gaussian_noise(x, std: float, *, train: bool, key=None):
    """Add N(0, std^2) noise at train time only."""
    if not train or std == 0.0 or key is None:
        return x
    return x + std * jax.random.normal(key, x.shape, x.dtype)


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
    axes = tuple(range(x.ndim - 1))
    if train:
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        m = x.size // x.shape[-1]
        new_state = {"mean": mean, "var": var * (m / max(m - 1, 1))}
    else:
        mean, var = state["mean"], state["var"]
        new_state = state
    scale = params["gamma"] * lax.rsqrt(var + eps)
    return (x - mean) * scale + params["beta"], new_state


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
