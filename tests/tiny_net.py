"""A network small enough for launcher tests to compile and train in seconds on 2 cores.

Registered as "tiny": run it as network=tiny_net:tiny with this folder on the Python path.
"""
from convnets.networks import Conv, Pool, build_convnet
from utils.nn.network import register_network


@register_network("tiny")
def tiny(**options):
    options.setdefault("p_dropConv", [0.1])
    return build_convnet("tiny", [Conv(4), Pool(), Pool(), Pool()], **options)
