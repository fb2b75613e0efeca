"""Convolutional layers: the conv layer and the residual block."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from utils import rna
from utils.nn import cpu_bfloat16
from utils.nn.layer import Layer, init_linear, linear_tail, sub_key


def conv_layer(n_filters: int, *, kernel: int = 3, pool: int | None = None, activation="relu",
               batch_norm=True, gaussian_std=0.0, p_drop=0.0) -> Layer:
    """'same' conv -> batch norm -> Gaussian noise -> max-pool -> activation -> dropout."""
    activation = rna.get_activation(activation)
    p_drop = rna.check_probability(p_drop, "conv dropout")

    def init(key, input_shape, dtype=jnp.float32):
        h, w, c_in = input_shape
        if pool and (h < pool or w < pool):
            raise ValueError(f"input too small: a {pool}x{pool} pooling got a {h}x{w} map")
        fan_in, fan_out = rna.conv_fans(kernel, c_in, n_filters, (pool or 1) ** 2)
        params, state = init_linear(key, (kernel, kernel, c_in, n_filters), fan_in, fan_out,
                                    gain=activation.glorot_gain, batch_norm=batch_norm,
                                    dtype=dtype)
        if pool:
            h, w = h // pool, w // pool
        return (h, w, n_filters), params, state

    def apply(params, state, x, *, train, key=None):
        if cpu_bfloat16.float32_layer(x, params["w"]):  # no bfloat16 kernel for it on this CPU
            y, state = apply(params, state, x.astype(jnp.float32), train=train, key=key)
            return y.astype(x.dtype), state
        statistics = rna.conv2d_statistics(x, params["w"]) if train and batch_norm else None
        # At test time no output the pooling drops (a ragged border) is computed; training's
        # batch statistics and noise cover the whole map.
        kept = tuple(side // pool * pool for side in x.shape[1:3]) if pool and not train else None
        return linear_tail(params, state, rna.conv2d(x, params["w"], kept), train=train, key=key,
                           batch_norm=batch_norm, gaussian_std=gaussian_std, pool=pool,
                           activation=activation, p_drop=p_drop, statistics=statistics)

    name = f"conv {n_filters}@{kernel}x{kernel}" + (" BN" if batch_norm else "")
    name += (f" pool {pool}x{pool}" if pool else "") + f" {activation.name}"
    return Layer(init, apply, name + (f" drop {p_drop:g}" if p_drop else ""))


def max_pool_layer(size: int = 2) -> Layer:
    """A standalone max-pooling (between residual stages)."""

    def init(key, input_shape, dtype=jnp.float32):
        h, w, c = input_shape
        if h < size or w < size:
            raise ValueError(f"input too small: a {size}x{size} pooling got a {h}x{w} map")
        return (h // size, w // size, c), {}, {}

    def apply(params, state, x, *, train, key=None):
        return rna.max_pool(x, size), state

    return Layer(init, apply, f"pool {size}x{size}")


def residual_block(width: int, *, activation="relu", batch_norm=True, gaussian_std=0.0,
                   p_drop=(0.0, 0.0), projection=False) -> Layer:
    """Two 3x3 convs (conv-BN-act, conv-BN), shortcut added, then the activation.

    Each conv has its own dropout probability: the first's after its activation, the second's
    after the block's output activation. Where the input has fewer channels than ``width``
    the identity shortcut is zero-padded (parameter-free, the thesis's counting); with
    ``projection=True`` a 1x1 conv (with BN when BN is on) maps it instead.
    """
    activation = rna.get_activation(activation)
    p_first, p_second = (rna.check_probability(p, "conv dropout") for p in p_drop)
    first = conv_layer(width, activation=activation, batch_norm=batch_norm,
                       gaussian_std=gaussian_std, p_drop=p_first)
    second = conv_layer(width, activation=rna.linear(), batch_norm=batch_norm,
                        gaussian_std=gaussian_std, p_drop=0.0)

    def init(key, input_shape, dtype=jnp.float32):
        h, w, c_in = input_shape
        if c_in > width:
            raise ValueError(f"residual block of width {width} cannot take {c_in} channels")
        params, state = {}, {}
        _, params["conv_a"], state["conv_a"] = first.init(jax.random.fold_in(key, 0),
                                                          input_shape, dtype)
        _, params["conv_b"], state["conv_b"] = second.init(jax.random.fold_in(key, 1),
                                                           (h, w, width), dtype)
        if projection and c_in != width:
            fan_in, fan_out = rna.conv_fans(1, c_in, width)
            params["shortcut"], state["shortcut"] = init_linear(
                jax.random.fold_in(key, 2), (1, 1, c_in, width), fan_in, fan_out, gain=1.0,
                batch_norm=batch_norm, dtype=dtype)
        return (h, w, width), params, state

    def apply(params, state, x, *, train, key=None):
        new_state = {}
        y, new_state["conv_a"] = first.apply(params["conv_a"], state["conv_a"], x, train=train,
                                             key=sub_key(key, 0))
        y, new_state["conv_b"] = second.apply(params["conv_b"], state["conv_b"], y,
                                              train=train, key=sub_key(key, 1))
        if "shortcut" in params:
            shortcut, new_state["shortcut"] = linear_tail(
                params["shortcut"], state["shortcut"], rna.conv2d(x, params["shortcut"]["w"]),
                train=train, key=None, batch_norm=batch_norm, gaussian_std=0.0, pool=None,
                activation=rna.linear(), p_drop=0.0)
        elif x.shape[-1] != width:
            shortcut = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, width - x.shape[-1])))
        else:
            shortcut = x
        y = activation(y + shortcut)
        return rna.dropout(y, p_second, train=train, key=sub_key(key, 2)), new_state

    name = f"residual [{width},{width}]" + (" BN" if batch_norm else "")
    name += " proj" if projection else ""
    return Layer(init, apply, name + (f" drop {p_first:g},{p_second:g}"
                                      if p_first or p_second else ""))
