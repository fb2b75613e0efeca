"""The thesis's networks A-D (SPEC "The named networks"), and the builder they share.

To add a network, describe it and register it:

    @register_network("E")
    def network_e(**options):
        return build_convnet("E", [Conv(32), Pool(), Conv(64), Pool()], **options)
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from convnets.layers import conv_layer, max_pool_layer, residual_block
from mlp.layers import hidden_layer, logistic_regression
from utils import rna
from utils.nn.layer import flatten, sequential
from utils.nn.network import Network, check_hidden_sizes, check_image_size, register_network


class Conv(NamedTuple):
    filters: int
    kernel: int = 3


class Pool(NamedTuple):
    size: int = 2


class Residual(NamedTuple):
    """A residual block of two 3x3 convs of this width (counts as two conv layers)."""
    width: int


def conv_layer_count(architecture) -> int:
    return sum(2 if isinstance(item, Residual) else isinstance(item, Conv)
               for item in architecture)


def thesis_conv_params(architecture, batch_norm: bool) -> int:
    """The thesis's count: filters x (k*k + 1), +1 per filter with BN (gamma, beta for bias)."""
    per_filter = lambda k: k * k + 1 + int(batch_norm)  # noqa: E731
    return sum(item.filters * per_filter(item.kernel) if isinstance(item, Conv)
               else 2 * item.width * per_filter(3) if isinstance(item, Residual) else 0
               for item in architecture)


def check_conv_dropout(name: str, p_dropConv, n_conv: int) -> list[float]:
    if not isinstance(p_dropConv, (list, tuple)):
        raise ValueError(f"p_dropConv must be a list of {n_conv} drop probabilities (one per "
                         f"conv layer of network {name}), got {p_dropConv!r}")
    if len(p_dropConv) != n_conv:
        raise ValueError(f"p_dropConv has {len(p_dropConv)} values but network {name} has "
                         f"{n_conv} conv layers: give one drop probability per conv layer")
    return [rna.check_probability(p, f"p_dropConv[{i}]") for i, p in enumerate(p_dropConv)]


def build_convnet(name: str, architecture: Sequence, *, default_p_dropConv=None,
                  im_dim=(48, 48), n_hidden=(1024,), activation="relu", batch_norm=True,
                  p_drop=0.5, p_dropConv=None, gaussian_std=0.0, last_pool=True,
                  projection_shortcut=False, n_classes=7) -> Network:
    """Conv part from ``architecture``, then the hidden FC layers and the softmax output.

    A Pool right after a Conv belongs to that conv layer (pooled before the activation, and
    Glorot's fan_out divided by its area); elsewhere it is a standalone max-pooling.
    ``last_pool=False`` drops the architecture's final pooling (the thesis tried it on B, D).
    """
    architecture = list(architecture)
    if not last_pool:
        if not architecture or not isinstance(architecture[-1], Pool):
            raise ValueError(f"last_pool=False: network {name} does not end with a pooling")
        architecture = architecture[:-1]
    n_conv = conv_layer_count(architecture)
    if p_dropConv is None:
        p_dropConv = default_p_dropConv if default_p_dropConv is not None else [0.0] * n_conv
    p_conv = check_conv_dropout(name, p_dropConv, n_conv)
    p_drop = rna.check_probability(p_drop, "p_drop")
    activation = rna.get_activation(activation)
    if not isinstance(gaussian_std, (int, float)) or gaussian_std < 0:
        raise ValueError(f"gaussian_std must be a standard deviation >= 0, got {gaussian_std!r}")
    hidden_sizes = check_hidden_sizes(n_hidden)
    n_pools = sum(isinstance(item, Pool) for item in architecture)
    height, width = check_image_size(name, list(im_dim), n_pools)

    common = dict(activation=activation, batch_norm=batch_norm, gaussian_std=gaussian_std)
    layers, conv_index, i = [], 0, 0
    while i < len(architecture):
        item = architecture[i]
        following = architecture[i + 1] if i + 1 < len(architecture) else None
        if isinstance(item, Conv):
            pool = following.size if isinstance(following, Pool) else None
            layers.append(conv_layer(item.filters, kernel=item.kernel, pool=pool,
                                     p_drop=p_conv[conv_index], **common))
            conv_index += 1
            i += 2 if pool else 1
            continue
        if isinstance(item, Residual):
            layers.append(residual_block(item.width, p_drop=p_conv[conv_index:conv_index + 2],
                                         projection=projection_shortcut, **common))
            conv_index += 2
        elif isinstance(item, Pool):
            layers.append(max_pool_layer(item.size))
        else:
            raise ValueError(f"network {name}: unknown architecture item {item!r}")
        i += 1
    layers.append(flatten())
    layers += [hidden_layer(n, p_drop=p_drop, **common) for n in hidden_sizes]
    layers.append(logistic_regression(n_classes))

    options = dict(im_dim=[height, width], n_hidden=list(hidden_sizes),
                   activation=activation.name, batch_norm=batch_norm, p_drop=p_drop,
                   p_dropConv=p_conv, gaussian_std=gaussian_std, last_pool=last_pool,
                   projection_shortcut=projection_shortcut, n_classes=n_classes)
    return Network(name=name, body=sequential(layers, name), input_shape=(height, width, 1),
                   n_conv_layers=n_conv,
                   thesis_conv_params=thesis_conv_params(architecture, batch_norm),
                   layer_names=tuple(layer.name for layer in layers), options=options)


ARCHITECTURES = {
    # VGG-mod, 5 weight layers
    "A": [Conv(64), Pool(), Conv(128), Pool(), Conv(256), Conv(256), Pool()],
    # VGG-mod, 7 weight layers
    "B": [Conv(64), Pool(), Conv(128), Pool(), Conv(256), Conv(256), Pool(),
          Conv(512), Conv(512), Pool()],
    # ResNet-mod, 14 weight layers (max-pooling instead of strided convs)
    "C": [Conv(64, kernel=5), Pool(), Residual(64), Residual(64), Pool(),
          Residual(128), Residual(128), Pool(), Residual(256), Residual(256)],
    # ResNet-mod, 5 weight layers
    "D": [Conv(64), Pool(), Conv(128), Pool(), Residual(128), Pool()],
    # Small VGG-like net (ours) for the shipped default model: one conv per resolution, so
    # it trains on 2 CPU cores in about two hours and its parameters fit in a few MB
    "S": [Conv(32), Pool(), Conv(64), Pool(), Conv(128), Pool(), Conv(256), Pool()],
    # VGG-style net (ours) for the shipped default model: two 3x3 convs per resolution,
    # widths 32-64-128-256, so that ~100 epochs of FER2013 fit in two hours on 2 CPU cores
    "V": [Conv(32), Conv(32), Pool(), Conv(64), Conv(64), Pool(), Conv(128), Conv(128), Pool(),
          Conv(256), Conv(256), Pool()],
    # V with one conv at full resolution (ours), for the shipped fast model: that conv pair
    # was a third of V's inference work (32 -> 32 channels on the whole image), so F
    # classifies about 1.5x as many faces a second with V's depth where the maps are small
    "F": [Conv(32), Pool(), Conv(64), Conv(64), Pool(), Conv(128), Conv(128), Pool(),
          Conv(256), Conv(256), Pool()],
}

# Scaled conv dropout, one probability per conv layer. A and D: the thesis's [0.2,0.3,0.4,0.5];
# B: the thesis's tuned vector (large dropout in B's last layers hurt it); C: the thesis gives
# none, so a gentle ramp by stage (ours).
DEFAULT_CONV_DROPOUT = {
    "A": [0.2, 0.3, 0.4, 0.5],
    "B": [0.2, 0.3, 0.4, 0.4, 0.2, 0.2],
    "C": [0.1] + [0.1] * 4 + [0.2] * 4 + [0.3] * 4,
    "D": [0.2, 0.3, 0.4, 0.5],
    "S": [0.1, 0.2, 0.3, 0.4],
    # V: no dropout where the maps are large (online augmentation regularises), then a ramp
    "V": [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2],
    "F": [0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2],
}


def _register_thesis_network(name):
    def build(**options):
        return build_convnet(name, ARCHITECTURES[name],
                             default_p_dropConv=DEFAULT_CONV_DROPOUT[name], **options)

    register_network(name)(build)


for _name in ARCHITECTURES:
    _register_thesis_network(_name)
