"""The layer's primitives and a whole network against plain references, on JAX's default backend.

``utils.rna`` computes through the fast forms of ``utils.nn.cpu_kernels`` and
``cpu_batch_norm`` on every backend (custom gradients, the patch conv, the unrolled random
hash), so a new backend must give with them what the plain forms give. Each check runs the
layer's form compiled in float32 on the default backend against a reference on the same random
inputs: the plain ``jax.lax`` form computed in float64 (convolution, pooling, batch norm) and
the network traced with ``rna.plain_forms()`` (plain conv and pooling, float32), both on the
CPU backend, and ``jax.random``'s own draws on the default backend (dropout, noise: bit for
bit). Outputs and gradients (the vector-Jacobian product of a random cotangent) are compared;
the figure is the largest difference relative to the reference's largest value.

The references run on the CPU backend because XLA's deterministic GPU mode, which
``python -m utils.gpu_check`` sets, refuses to compile select-and-scatter (the gradient of
``lax.reduce_window``'s max, the plain max-pooling), for which XLA has no deterministic GPU
form; the layer's own max-pooling gradient does not use it. The float32 side runs at full
float32 precision (``jax.default_matmul_precision("float32")``): what is checked is the
forms' arithmetic, not a GPU's faster default (TF32 products on recent NVIDIA GPUs, about 3
significant digits), which the launcher and the apps do use.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from utils import rna
from utils.gpu_check.network import check_network
from utils.nn.losses import negative_log_likelihood

SEED = 25
FLOAT32_LIMIT = 1e-4  # relative: float32 sums taken in another order than the reference's
EXACT = 0.0


class Result(NamedTuple):
    name: str
    passed: bool
    figure: str


def _float64_leaves(got, expected) -> list:
    """The trees' leaves side by side, as float64 arrays."""
    return [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in
            zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True)]


def relative_difference(got, expected) -> float:
    """Largest |got - expected| over the trees' leaves, each relative to its largest |expected|."""
    return max((float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                for a, b in _float64_leaves(got, expected)), default=0.0)


def relative_difference_of_tree(got, expected) -> float:
    """Largest |got - expected| over the trees' leaves relative to the largest |expected| of all:
    for gradients, some of which are only rounding noise (a batch norm's shift followed by
    another batch norm: 1e-7 where others are 1e-1), which no per-leaf ratio can compare."""
    pairs = _float64_leaves(got, expected)
    scale = max(float(np.abs(b).max()) for _, b in pairs)
    return max(float(np.abs(a - b).max()) for a, b in pairs) / max(scale, 1e-30)


def with_gradients(fn, seed: int):
    """A function of fn's arguments giving (fn's outputs, their vjp of a random cotangent)."""
    def outputs_and_vjp(*args):
        outputs, vjp = jax.vjp(fn, *args)
        rng = np.random.default_rng(seed)
        cotangent = jax.tree_util.tree_map(  # float32 values: the same on both sides
            lambda leaf: jnp.asarray(rng.normal(size=leaf.shape).astype(np.float32),
                                     leaf.dtype), outputs)
        return outputs, vjp(cotangent)
    return jax.jit(outputs_and_vjp)


def against_float64(name: str, ours, plain, args, limit: float, seed: int) -> Result:
    """``ours`` in float32 against ``plain`` in float64 on the same (float32) values, with
    gradients."""
    args = [np.asarray(a, np.float32) for a in args]
    got = with_gradients(ours, seed)(*[jnp.asarray(a) for a in args])
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        expected = with_gradients(plain, seed)(*[jnp.asarray(a, jnp.float64) for a in args])
        expected = jax.tree_util.tree_map(np.asarray, expected)
    difference = relative_difference(got, expected)
    return Result(name, difference <= limit,
                  f"largest relative difference {difference:.1e} (limit {limit:g})")


def plain_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def plain_pool(x, size: int):
    window = (1, size, size, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


def plain_batch_norm(x, gamma, beta):
    """(y, mean, unbiased variance) with the batch's statistics, as rna.batch_norm trains."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = jnp.square(x - mean).mean(axis=axes)
    m = x.size // x.shape[-1]
    y = (x - mean) / jnp.sqrt(var + rna.BN_EPSILON) * gamma + beta
    return y, mean, var * m / (m - 1)


def ours_batch_norm(x, gamma, beta, pool=None):
    params = {"gamma": gamma, "beta": beta}
    if pool:
        y, state = rna.batch_norm_max_pool(x, params, None, pool, train=True)
    else:
        y, state = rna.batch_norm(x, params, None, train=True)
    return y, state["mean"], state["var"]


def layer_checks(rng) -> list[Result]:
    """Convolution (both forms), max-pooling with tied maxima, batch norm alone and pooled."""
    results = []
    for c_in, form in ((1, "3x3 on one channel: the patch form"), (3, "3x3 on 3 channels")):
        x, w = rng.normal(size=(2, 7, 6, c_in)), rng.normal(size=(3, 3, c_in, 5))
        results.append(against_float64(f"conv2d {form}", rna.conv2d, plain_conv, (x, w),
                                       FLOAT32_LIMIT, SEED))
    ties = rng.integers(0, 3, size=(2, 7, 6, 3)).astype(float)  # windows with equal maxima
    for size in (2, 3):
        results.append(against_float64(
            f"max_pool {size}x{size} with tied maxima", lambda x: rna.max_pool(x, size),
            lambda x: plain_pool(x, size), (ties,), EXACT, SEED))
    x = rng.normal(3.0, 2.0, size=(8, 6, 6, 5))
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    results.append(against_float64("batch_norm (training: batch statistics)", ours_batch_norm,
                                   plain_batch_norm, (x, gamma, beta), FLOAT32_LIMIT, SEED))

    def plain_pooled(x, gamma, beta):
        y, mean, var = plain_batch_norm(x, gamma, beta)
        return plain_pool(y, 2), mean, var

    results.append(against_float64(
        "batch_norm_max_pool (training)", lambda *a: ours_batch_norm(*a, pool=2),
        plain_pooled, (np.round(x), gamma, beta), FLOAT32_LIMIT, SEED))
    return results


def random_checks(rng) -> list[Result]:
    """Dropout masks and Gaussian noise: jax.random's own draws, bit for bit."""
    key = jax.random.fold_in(jax.random.key(SEED), 7)
    x = jnp.asarray(rng.normal(size=(4, 6, 6, 5)), jnp.float32)
    dropout = jax.jit(lambda x, k: rna.dropout(x, 0.3, train=True, key=k))(x, key)
    expected = jnp.where(jax.random.bernoulli(key, 0.7, x.shape), x / 0.7, 0.0)
    noise = jax.jit(lambda x, k: rna.gaussian_noise(x, 0.3, train=True, key=k))(x, key)
    normal = jax.jit(lambda x, k: x + 0.3 * jax.random.normal(k, x.shape, x.dtype))(x, key)
    results = []
    for name, got, want in (("dropout mask", dropout, expected),
                            ("gaussian_noise", noise, normal)):
        differing = int(np.sum(np.asarray(got) != np.asarray(want)))
        results.append(Result(f"{name} vs jax.random", differing == 0,
                              f"{differing} of {x.size} values differ (bit for bit expected)"))
    return results


def network_check(rng) -> Result:
    """The check network's cost, logits, BN statistics and gradients: its layer forms on the
    default backend against the plain forms on the CPU (both float32, the same dropout masks
    and noise)."""
    network = check_network(im_dim=[12, 12], gaussian_std=0.1, p_drop=0.2)
    params, state = jax.tree_util.tree_map(np.asarray, network.init(jax.random.key(SEED)))
    inputs = (rng.uniform(size=(6, 12, 12, 1)).astype(np.float32), rng.integers(0, 7, 6))

    def cost(params, x, y, key):
        logits, batch_state = network.apply(params, state, x, train=True, key=key)
        return negative_log_likelihood(logits, y), (logits, batch_state)

    def run(device):  # traced afresh each time: plain_forms switches forms at trace time
        arguments = jax.device_put((params, *inputs), device)
        with jax.default_device(device):
            return jax.jit(jax.value_and_grad(cost, has_aux=True))(
                *arguments, jax.random.key(SEED + 1))

    got = run(jax.devices()[0])
    with rna.plain_forms():
        expected = run(jax.devices("cpu")[0])
    (outputs, gradients), (expected_outputs, expected_gradients) = got, expected
    difference = max(relative_difference(outputs, expected_outputs),
                     relative_difference_of_tree(gradients, expected_gradients))
    return Result("network: cost, logits, BN statistics and gradients vs the plain forms",
                  difference <= FLOAT32_LIMIT,
                  f"largest relative difference {difference:.1e} (limit {FLOAT32_LIMIT:g})")


def run_checks() -> list[Result]:
    rng = np.random.default_rng(SEED)
    with jax.default_matmul_precision("float32"):
        return layer_checks(rng) + random_checks(rng) + [network_check(rng)]
