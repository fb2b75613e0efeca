"""The networks A-D and mlp written again with other libraries, as the benchmark's peers.

Only for the benchmark (and tests): the product's layers never use these libraries.
``peer_spec`` reads the architecture a peer must reproduce from one of our networks, so both
run the same layers in the same order (conv -> BN -> max-pool -> activation -> dropout, the
same drop probabilities, the same FC part) and hold the same number of parameters.
"""
from __future__ import annotations

from typing import NamedTuple

from convnets.networks import ARCHITECTURES, Pool


class PeerSpec(NamedTuple):
    architecture: tuple  # Conv / Pool / Residual items, final pool already dropped if asked
    conv_dropout: tuple  # drop probability per conv layer, in order
    hidden: tuple  # hidden FC sizes
    p_drop: float  # FC dropout
    activation: str
    batch_norm: bool
    input_shape: tuple  # (H, W, 1)
    n_classes: int


PEER_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")


def peer_spec(network) -> PeerSpec:
    """What a peer needs to rebuild ``network`` (a thesis network A-D or mlp)."""
    options = network.options
    if network.name == "mlp":
        architecture = ()
    elif network.name in ARCHITECTURES:
        architecture = tuple(ARCHITECTURES[network.name])
        if not options["last_pool"] and isinstance(architecture[-1], Pool):
            architecture = architecture[:-1]
    else:
        raise ValueError(f"no peer implementation of network {network.name!r}: peers exist "
                         f"for {', '.join([*ARCHITECTURES, 'mlp'])}")
    unsupported = [name for name, bad in (
        ("gaussian_std", options["gaussian_std"] != 0),
        ("projection_shortcut", options.get("projection_shortcut", False)),
        (f"activation={options['activation']}", options["activation"] not in PEER_ACTIVATIONS),
    ) if bad]
    if unsupported:
        raise ValueError(f"the peers do not implement {', '.join(unsupported)}")
    return PeerSpec(architecture=architecture, conv_dropout=tuple(options["p_dropConv"]),
                    hidden=tuple(options["n_hidden"]), p_drop=options["p_drop"],
                    activation=options["activation"], batch_norm=options["batch_norm"],
                    input_shape=tuple(network.input_shape), n_classes=options["n_classes"])
