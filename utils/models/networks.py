"""A network by name: A, B, C, D, S, mlp and the researcher's own registered networks.

    net = get_network("A", im_dim=[48, 48], n_hidden=[1024], p_dropConv=[0.2, 0.3, 0.4, 0.5])
    params, state = net.init(jax.random.key(0))
    logits, batch_stats = net.apply(params, state, x, train=True, key=key)

A new network is a function returning a ``Network``, registered under a name with
``register_network`` (see ``convnets/networks.py`` for the pattern, README "Adding your own
network").
"""
from __future__ import annotations

import importlib

import convnets.networks  # noqa: F401  (registers A, B, C, D, S)
import mlp.networks  # noqa: F401  (registers mlp)
from utils.support.names import closest_name
from utils.nn.network import _REGISTRY, Network, register_network

__all__ = ["Network", "get_network", "network_names", "register_network"]


def network_names() -> list[str]:
    return list(_REGISTRY)


def get_network(name: str, **options) -> Network:
    """Build a registered network. ``name`` may be ``"package.module:NAME"`` to import the
    module that registers a researcher's own network first."""
    if not isinstance(name, str):
        raise ValueError(f"network must be a name, got {name!r}")
    if ":" in name:
        module, name = name.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"network module {module!r} cannot be imported: {err}") from err
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}{closest_name(name, _REGISTRY)}; "
                         f"valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**options)


