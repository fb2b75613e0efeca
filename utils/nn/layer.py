"""The layer contract: a pair of pure functions over plain pytrees (the stax style).

    init(key, input_shape, dtype) -> (output_shape, params, state)
    apply(params, state, x, *, train, key=None) -> (y, new_state)

``input_shape``/``output_shape`` exclude the batch axis. ``state`` holds what is not learned
by gradient (batch-norm statistics); in train mode ``apply`` returns the statistics of this
batch in its place (see ``rna.batch_norm``), in test mode the state unchanged. ``key`` drives
dropout and noise at train time; each sub-layer gets ``fold_in(key, index)``.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from utils import rna


class Layer(NamedTuple):
    init: Callable
    apply: Callable
    name: str = "layer"
    layers: tuple = ()  # a composite's parts, in order (for tools that look inside)


def sub_key(key, index: int):
    return None if key is None else jax.random.fold_in(key, index)


def sequential(layers: Sequence[Layer], name: str = "sequential") -> Layer:
    """Layers applied in order; params and state are lists, one entry per layer."""
    layers = tuple(layers)

    def init(key, input_shape, dtype=jnp.float32):
        params, state, shape = [], [], tuple(input_shape)
        for index, layer in enumerate(layers):
            shape, p, s = layer.init(jax.random.fold_in(key, index), shape, dtype)
            params.append(p)
            state.append(s)
        return shape, params, state

    def apply(params, state, x, *, train, key=None):
        new_state = []
        for index, (layer, p, s) in enumerate(zip(layers, params, state)):
            x, s = layer.apply(p, s, x, train=train, key=sub_key(key, index))
            new_state.append(s)
        return x, new_state

    return Layer(init, apply, name, layers)


def flatten() -> Layer:
    def init(key, input_shape, dtype=jnp.float32):
        return (math.prod(input_shape),), {}, {}

    def apply(params, state, x, *, train, key=None):
        return x.reshape(x.shape[0], -1), state

    return Layer(init, apply, "flatten")


# --------------------------------------------------------------------------------------------
# What conv and fully connected layers share: the parameters of a linear map, and the tail
# that follows it (SPEC order: linear -> batch norm -> Gaussian noise -> pool -> act -> dropout).
# --------------------------------------------------------------------------------------------
def init_linear(key, w_shape, fan_in, fan_out, *, gain, batch_norm, dtype=jnp.float32):
    """Glorot-uniform weights; a bias, or BN's gamma/beta in its place (BN's beta is the bias)."""
    n_out = w_shape[-1]
    params = {"w": rna.glorot_uniform(key, w_shape, fan_in, fan_out, gain, dtype)}
    if batch_norm:
        bn_params, state = rna.batch_norm_init(n_out, dtype)
        params.update(bn_params)
    else:
        params["b"] = jnp.zeros((n_out,), dtype)
        state = {}
    return params, state


def linear_tail(params, state, z, *, train, key, batch_norm, gaussian_std, pool, activation,
                p_drop, statistics=None):
    """z is a layer's linear output; returns (activation output, new BN state).
    ``statistics``: z's batch mean and biased variance, where the caller has them cheaper."""
    if batch_norm and pool and not gaussian_std:  # nothing between BN and pooling: one step
        z, state = rna.batch_norm_max_pool(z, params, state, pool, train=train,
                                           statistics=statistics)
    else:
        if batch_norm:
            z, state = rna.batch_norm(z, params, state, train=train, statistics=statistics)
        else:
            z = rna.add_bias(z, params["b"])
        z = rna.gaussian_noise(z, gaussian_std, train=train, key=sub_key(key, 0))
        if pool:
            z = rna.max_pool(z, pool)
    y = activation(z)
    return rna.dropout(y, p_drop, train=train, key=sub_key(key, 1)), state
