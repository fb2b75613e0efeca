"""What a network is, and the registry that names networks (``register_network``).

A ``Network`` is one Layer from images to logits plus what describes it. Building blocks
(``convnets``, ``mlp``) register their networks here; ``utils.models.networks.get_network`` looks
them up by name. This module imports none of them, so there is no import cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp

from utils.nn.layer import Layer

_REGISTRY: dict[str, Callable[..., "Network"]] = {}


@dataclass(frozen=True, eq=False)
class Network:
    """A whole network: one Layer from images [B,H,W] or [B,H,W,C] to logits [B,n_classes]."""

    name: str
    body: Layer
    input_shape: tuple
    n_conv_layers: int
    thesis_conv_params: int
    layer_names: tuple
    options: dict = field(default_factory=dict)

    def init(self, key, dtype=jnp.float32):
        """(params, state) for this network; the same key always gives the same values."""
        _, params, state = self.body.init(key, self.input_shape, dtype)
        return params, state

    def apply(self, params, state, x, *, train: bool, key=None, dtype=None):
        """(logits, new_state); in train mode new_state holds this batch's BN statistics.

        ``dtype``: the compute dtype (``utils.nn.precision``): the images are cast to it and
        every layer computes in its input's dtype; logits and state stay float32."""
        if x.ndim == 3:
            x = x[..., None]
        if dtype is not None:
            x = x.astype(dtype)
        return self.body.apply(params, state, x, train=train, key=key)

    def param_count(self) -> int:
        """True number of learned parameters (BN statistics are state, not counted)."""
        params, _ = jax.eval_shape(self.init, jax.random.key(0))
        return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))

    def summary(self) -> str:
        lines = [f"network {self.name}: input {self.input_shape[0]}x{self.input_shape[1]}"]
        lines += [f"  {name}" for name in self.layer_names]
        lines.append(f"  parameters: {self.param_count():,}"
                     + (f" (thesis conv-parameter count {self.thesis_conv_params:,})"
                        if self.n_conv_layers else ""))
        return "\n".join(lines)


def register_network(name: str):
    """Decorator: make ``builder(**options) -> Network`` available as ``get_network(name)``."""

    def decorate(builder):
        _REGISTRY[name] = builder
        return builder

    return decorate


def check_image_size(name: str, im_dim, n_pools: int, pool: int = 2) -> tuple[int, int]:
    """im_dim as (H, W), refused if not two positive ints or too small for the pooling."""
    if (not isinstance(im_dim, (list, tuple)) or len(im_dim) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in im_dim)):
        raise ValueError(f"im_dim must be [height, width] in pixels, got {im_dim!r}")
    smallest = pool ** n_pools
    if min(im_dim) < smallest:
        raise ValueError(
            f"network {name} pools {pool}x{pool} {n_pools} times, so it needs inputs of at "
            f"least {smallest}x{smallest}; got {im_dim[0]}x{im_dim[1]}")
    return int(im_dim[0]), int(im_dim[1])


def check_hidden_sizes(n_hidden) -> tuple[int, ...]:
    if isinstance(n_hidden, int) and not isinstance(n_hidden, bool):
        n_hidden = [n_hidden]
    if (not isinstance(n_hidden, (list, tuple))
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                       for n in n_hidden)):
        raise ValueError(f"n_hidden must be a list of positive layer sizes, e.g. [1024, 512], "
                         f"got {n_hidden!r}")
    return tuple(n_hidden)
