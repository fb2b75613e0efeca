"""The peer written the idiomatic flax.linen way: nn.Conv, nn.BatchNorm, nn.max_pool, nn.Dropout.

Mixed precision the flax way: the modules' ``dtype`` (computation) with float32 parameters.

Same layers, order and parameter count as ours (see ``utils.benchmark.peers``); trained with optax SGD
in one jitted step that donates its state, like ``utils.training.steps.Steps``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from convnets.networks import Conv, Pool, Residual
from utils.benchmark.peers import PeerSpec

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid, "linear": lambda z: z}


class FlaxNet(nn.Module):
    spec: PeerSpec
    dtype: Any = jnp.float32  # compute dtype (flax's mixed precision: parameters float32)

    @nn.compact
    def __call__(self, x, train: bool):
        spec = self.spec
        act = _ACTIVATIONS[spec.activation]

        def linear_tail(z, pool, p_drop, activation=act):
            if spec.batch_norm:
                z = nn.BatchNorm(use_running_average=not train, epsilon=1e-5,
                                 dtype=self.dtype)(z)
            if pool:
                z = nn.max_pool(z, (pool, pool), strides=(pool, pool))
            return nn.Dropout(p_drop, deterministic=not train)(activation(z))

        def conv(z, filters, kernel=3):
            return nn.Conv(filters, (kernel, kernel), padding="SAME",
                           use_bias=not spec.batch_norm, dtype=self.dtype)(z)

        items, drops, i = list(spec.architecture), iter(spec.conv_dropout), 0
        while i < len(items):
            item = items[i]
            following = items[i + 1] if i + 1 < len(items) else None
            if isinstance(item, Conv):
                pool = following.size if isinstance(following, Pool) else None
                x = linear_tail(conv(x, item.filters, item.kernel), pool, next(drops))
                i += 2 if pool else 1
                continue
            if isinstance(item, Residual):
                y = linear_tail(conv(x, item.width), None, next(drops))
                y = linear_tail(conv(y, item.width), None, 0.0, activation=lambda z: z)
                shortcut = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, item.width - x.shape[-1])))
                x = nn.Dropout(next(drops), deterministic=not train)(act(y + shortcut))
            elif isinstance(item, Pool):
                x = nn.max_pool(x, (item.size, item.size), strides=(item.size, item.size))
            i += 1
        x = x.reshape(x.shape[0], -1)
        for width in spec.hidden:
            x = linear_tail(nn.Dense(width, use_bias=not spec.batch_norm, dtype=self.dtype)(x),
                            None, spec.p_drop)
        return nn.Dense(spec.n_classes, dtype=self.dtype)(x).astype(jnp.float32)


class FlaxState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class FlaxSteps:
    """Compiled train (forward, backward, SGD update) and eval steps of the flax peer."""

    def __init__(self, spec: PeerSpec, learning_rate: float = 0.1, dtype="float32"):
        self.dtype = jnp.dtype(dtype)
        self.model = FlaxNet(spec, self.dtype)
        self.optimizer = optax.sgd(learning_rate)
        self.train = jax.jit(self._train_step, donate_argnums=0)
        self.eval = jax.jit(self._eval_step)

    def init_state(self, seed: int, batch_shape) -> FlaxState:
        key = jax.random.key(seed)
        variables = self.model.init(key, jnp.zeros(batch_shape, jnp.float32), train=False)
        params = variables["params"]
        return FlaxState(params=params, batch_stats=variables.get("batch_stats", {}),
                         opt_state=self.optimizer.init(params), step=jnp.zeros((), jnp.int32),
                         key=jax.random.fold_in(key, 1))

    def _train_step(self, state: FlaxState, x, y):
        key = jax.random.fold_in(state.key, state.step)

        def cost_fn(params):
            logits, updates = self.model.apply(
                {"params": params, "batch_stats": state.batch_stats}, x.astype(self.dtype),
                train=True,
                rngs={"dropout": key}, mutable=["batch_stats"])
            cost = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return cost, updates.get("batch_stats", {})

        (cost, batch_stats), grads = jax.value_and_grad(cost_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        return FlaxState(params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state, step=state.step + 1,
                         key=state.key), cost

    def _eval_step(self, state: FlaxState, x):
        return self.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                x.astype(self.dtype), train=False)
