"""Fully connected layers: the hidden layer and the logistic-regression output.

The output's probabilities, cost and error rate are in ``utils.nn.losses``."""
from __future__ import annotations

import jax.numpy as jnp

from utils import rna
from utils.nn.layer import Layer, init_linear, linear_tail
from utils.nn.precision import accumulation_dtype


def hidden_layer(n_units: int, *, activation="relu", batch_norm=True, gaussian_std=0.0,
                 p_drop=0.0) -> Layer:
    """linear -> batch norm -> Gaussian noise -> activation -> dropout."""
    activation = rna.get_activation(activation)
    p_drop = rna.check_probability(p_drop, "p_drop")

    def init(key, input_shape, dtype=jnp.float32):
        (n_in,) = input_shape
        params, state = init_linear(key, (n_in, n_units), n_in, n_units,
                                    gain=activation.glorot_gain, batch_norm=batch_norm,
                                    dtype=dtype)
        return (n_units,), params, state

    def apply(params, state, x, *, train, key=None):
        return linear_tail(params, state, rna.dense(x, params["w"]), train=train, key=key,
                           batch_norm=batch_norm, gaussian_std=gaussian_std, pool=None,
                           activation=activation, p_drop=p_drop)

    return Layer(init, apply, f"hidden {n_units} {activation.name}"
                 + (" BN" if batch_norm else "") + (f" drop {p_drop:g}" if p_drop else ""))


def logistic_regression(n_classes: int = 7) -> Layer:
    """Softmax output layer; apply returns the linear (pre-softmax) outputs, the logits, in
    float32 at least whatever the compute dtype (the softmax and the cost are float32)."""

    def init(key, input_shape, dtype=jnp.float32):
        (n_in,) = input_shape
        params, state = init_linear(key, (n_in, n_classes), n_in, n_classes, gain=1.0,
                                    batch_norm=False, dtype=dtype)
        return (n_classes,), params, state

    def apply(params, state, x, *, train, key=None):
        return rna.dense(x, params["w"], accumulation_dtype(x.dtype)) + params["b"], state

    return Layer(init, apply, f"softmax {n_classes}")
