"""The small network the GPU check differentiates and trains: every kind of layer of the named
networks (the 3x3 conv on the image, a conv on feature maps, a residual block, max-pooling
inside a conv layer and on its own, batch norm, conv and hidden dropout, a hidden layer, the
softmax output), small enough to train on the built-in sample in seconds on 2 CPU cores.

Registered as ``check`` when this module is imported (as ``convnets.networks`` registers its
networks): the launcher takes it as ``network="utils.gpu_check.network:check"``.
"""
from __future__ import annotations

from convnets.networks import Conv, Pool, Residual, build_convnet
from utils.nn.network import register_network

NAME = "check"
LAUNCHER_NAME = f"{__name__}:{NAME}"
ARCHITECTURE = (Conv(8), Pool(), Conv(8), Residual(8), Pool(), Pool())
CONV_DROPOUT = [0.1, 0.1, 0.2, 0.2]  # one per conv layer (the residual block has two)


@register_network(NAME)
def check_network(**options):
    options.setdefault("p_dropConv", CONV_DROPOUT)
    options.setdefault("n_hidden", [16])
    return build_convnet(NAME, ARCHITECTURE, **options)
