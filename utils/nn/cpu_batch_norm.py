"""XLA-CPU fast paths for train-mode batch norm (``rna.batch_norm``), alone and followed by
max-pooling (``rna.batch_norm_max_pool``), and its statistics when they are cheaper from a
convolution's input than from its output (``patch_conv_moments``): the same values, fewer
passes over the activations.

Both define their gradients with ``jax.custom_vjp`` (reverse mode only) and are tested against
the plain formulas (``tests/test_rna_kernels.py``) within float rounding: the sums are
reordered.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from utils.nn.cpu_kernels import (computed_apart, computed_once, first_position, patches,
                                  pool_windows, unpool, window_max)
from utils.nn.precision import accumulation_dtype

# XLA's CPU reductions over many leading axes onto a narrow last one are slow; folding rows
# into the last axis first, [R, C] -> [R/k, k*C], makes them fast. Rows of about 1024 values
# were the fastest measured for a sum whose input is computed in the same fusion (4096, the
# best for a plain sum, was 2x slower there; a sum of a stored array is as fast either way).
_WIDE_ROW = 1024


def feature_sum(x):
    """Sum over all axes but the last."""
    c = x.shape[-1]
    rows = x.size // c
    fold = math.gcd(rows, max(1, _WIDE_ROW // c))
    if rows <= fold:
        return jnp.sum(x.reshape(rows, c), axis=0)
    partial_sums = jnp.sum(x.reshape(rows // fold, fold * c), axis=0)
    return jnp.sum(partial_sums.reshape(fold, c), axis=0)


def _wide(x):
    """x in float32 at least: batch norm's arithmetic when activations are bfloat16."""
    return x.astype(accumulation_dtype(x.dtype))


def _batch_moments(x):
    """Per-feature mean and biased variance in float32 (two passes: no cancellation)."""
    m = x.size // x.shape[-1]
    mean = feature_sum(_wide(x)) / m
    return mean, feature_sum(jnp.square(_wide(x) - mean)) / m


def _input_gradient(x, mean, inv_std, gamma, g, sums, statistics_cotangents):
    """d loss / d x of train-mode batch norm: the usual closed form (g: the gradient at the
    output, full size; sums: its per-feature d_beta, d_gamma), plus what flows back through
    the returned batch mean and variance."""
    (d_beta, d_gamma), (g_mean, g_var) = sums, statistics_cotangents
    m = x.size // x.shape[-1]
    x_hat = (_wide(x) - mean) * inv_std
    return ((gamma * inv_std) * (_wide(g) - (d_beta + x_hat * d_gamma) / m)
            + (g_mean + 2.0 * g_var * x_hat / inv_std) / m).astype(x.dtype)


# --------------------------------------------------------------------------------------------
# Per-feature affine maps. Their gradients sum over all but the last axis; autodiff leaves
# those sums to XLA, whose CPU reduction over a large map's leading axes ran at a tenth of
# feature_sum's speed (150 ms against 6 for 128 x 48 x 48 x 64 values).
# --------------------------------------------------------------------------------------------
@jax.custom_vjp
def feature_affine(x, scale, shift):
    """x * scale + shift per feature (last axis), in float32 at least, returned in x's dtype."""
    return (_wide(x) * scale + shift).astype(x.dtype)


def _feature_affine_fwd(x, scale, shift):
    return feature_affine(x, scale, shift), (x, scale)


def _feature_affine_bwd(residuals, g):
    x, scale = residuals
    return ((_wide(g) * scale).astype(x.dtype), feature_sum(_wide(g) * _wide(x)),
            feature_sum(_wide(g)))


feature_affine.defvjp(_feature_affine_fwd, _feature_affine_bwd)


@jax.custom_vjp
def add_bias(x, bias):
    """x + bias per feature (last axis), in x's dtype."""
    return x + bias.astype(x.dtype)


def _add_bias_fwd(x, bias):
    return add_bias(x, bias), bias


def _add_bias_bwd(bias, g):
    return g, feature_sum(_wide(g)).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


# --------------------------------------------------------------------------------------------
# Batch norm alone
# --------------------------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, gamma, beta, eps):
    """(gamma * (x - mean) / sqrt(var + eps) + beta, mean, biased var) over all but the last
    axis."""
    return _batch_norm_train_fwd(x, gamma, beta, eps)[0]


def _batch_norm_train_fwd(x, gamma, beta, eps):
    mean, var = _batch_moments(x)
    inv_std = lax.rsqrt(var + eps)
    y = ((_wide(x) - mean) * (gamma * inv_std) + beta).astype(x.dtype)
    return (y, mean, var), (x, mean, inv_std, gamma)


def _batch_norm_train_bwd(eps, residuals, cotangents):
    x, mean, inv_std, gamma = residuals
    g, g_mean, g_var = cotangents
    sums = feature_sum(_wide(g)), feature_sum(_wide(g) * ((_wide(x) - mean) * inv_std))
    return _input_gradient(x, mean, inv_std, gamma, g, sums, (g_mean, g_var)), sums[1], sums[0]


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


# --------------------------------------------------------------------------------------------
# Batch norm, then max-pooling. Normalising is a per-feature map x -> scale * x + shift,
# increasing where scale > 0 and decreasing where scale < 0, so the window maximum of the
# normalised map is the normalised window maximum (minimum where scale < 0) of x: the pooling
# reads x once and normalises only the pooled values. Backward, the output gradient lands on
# one value per window, so the per-feature sums run over the pooled size, and the input
# gradient is one pass over x.
# --------------------------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_max_pool_train(x, gamma, beta, eps, size):
    """max_pool(batch_norm_train(x)) with the batch's mean and biased variance."""
    return _batch_norm_max_pool_fwd(x, gamma, beta, eps, size)[0]


def _batch_norm_max_pool_fwd(x, gamma, beta, eps, size):
    mean, var = _batch_moments(x)
    inv_std = lax.rsqrt(var + eps)
    scale = gamma * inv_std
    chosen, first = _pooled_by_scale(x, scale, size)
    y = ((_wide(chosen) - mean) * scale + beta).astype(x.dtype)
    return (y, mean, var), (x, first, chosen, mean, inv_std, gamma)


def _pooled_by_scale(x, scale, size: int):
    """Per window and feature, the value of x whose scaled value is the window's maximum (the
    maximum where scale > 0, the minimum where scale < 0), and its position (computed_once).
    Where scale == 0 every value scales to 0: a tie, which pooling resolves to the window's
    first position. Both in one pass over x, stored (computed_apart): XLA would otherwise
    recompute the window maxima from x in every fusion that reads them, the backward pass's
    included."""
    return computed_apart(partial(_select_in_windows, size=size), x, scale)


def _select_in_windows(x, scale, size: int):
    windows = pool_windows(x, size)
    top, bottom = window_max(windows), -window_max([-w for w in windows])
    chosen = jnp.where(scale > 0, top, jnp.where(scale < 0, bottom, windows[0]))
    return chosen, computed_once(first_position(windows, chosen))


def _batch_norm_max_pool_bwd(eps, size, residuals, cotangents):
    x, first, chosen, mean, inv_std, gamma = residuals
    g, g_mean, g_var = cotangents
    sums = feature_sum(_wide(g)), feature_sum(_wide(g) * ((_wide(chosen) - mean) * inv_std))
    g_full = unpool(g, first, x.shape, size)
    return (_input_gradient(x, mean, inv_std, gamma, g_full, sums, (g_mean, g_var)),
            sums[1], sums[0])


batch_norm_max_pool_train.defvjp(_batch_norm_max_pool_fwd, _batch_norm_max_pool_bwd)


# --------------------------------------------------------------------------------------------
# Batch norm of a convolution with a small window (the image's 3x3 conv): the convolution is
# the patches' matrix P times the kernel W, so its per-feature mean is mean(P) @ W and its
# variance diag(W^T Cov(P) W), from a (k*k*c_in)^2 covariance of the image's patches instead
# of two passes over the convolution's output; normalising is then a per-feature affine map,
# pooled like batch_norm_max_pool (``affine_max_pool``).
# --------------------------------------------------------------------------------------------
def patch_conv_moments(x, w):
    """Per-feature mean and biased variance, over all but the last axis, of
    cpu_kernels.patch_conv(x, w), in float32."""
    kh, kw, c_in, c_out = w.shape
    rows = _wide(patches(x, kh, kw))
    m = rows.shape[0]
    mean_rows = feature_sum(rows) / m
    centred = rows - mean_rows
    covariance = jnp.matmul(centred.T, centred) / m
    kernel = _wide(w).reshape(kh * kw * c_in, c_out)
    variance = jnp.sum(jnp.matmul(covariance, kernel) * kernel, axis=0)
    return mean_rows @ kernel, jnp.maximum(variance, 0.0)  # rounding may dip below 0


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def affine_max_pool(x, scale, shift, size):
    """max_pool(x * scale + shift) for per-feature scale and shift (last axis)."""
    return _affine_max_pool_fwd(x, scale, shift, size)[0]


def _affine_max_pool_fwd(x, scale, shift, size):
    chosen, first = _pooled_by_scale(x, scale, size)
    y = (_wide(chosen) * scale + shift).astype(x.dtype)
    return y, (first, chosen, scale, x.shape)


def _affine_max_pool_bwd(size, residuals, g):
    first, chosen, scale, x_shape = residuals
    d_scale = feature_sum(_wide(g) * _wide(chosen))
    gx = unpool((_wide(g) * scale).astype(g.dtype), first, x_shape, size)
    return gx, d_scale, feature_sum(_wide(g))


affine_max_pool.defvjp(_affine_max_pool_fwd, _affine_max_pool_bwd)
