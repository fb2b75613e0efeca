"""FLOP counts (utils.benchmark.flops) against hand computations from the architectures."""
from convnets.networks import Conv, Pool, build_convnet
from utils.benchmark.flops import network_flops
from utils.models.networks import get_network


def conv_macs(size, k, c_in, c_out):
    """'same' conv on a size x size map: every output pixel does a k*k*c_in dot per filter."""
    return size * size * k * k * c_in * c_out


def test_a_tiny_network_by_hand():
    # 8x8x1 -> conv 4 @3x3 (+pool to 4x4) -> 64 -> hidden 5 -> 7 classes
    net = build_convnet("tiny", [Conv(4), Pool()], im_dim=[8, 8], n_hidden=[5])
    conv, hidden, out = conv_macs(8, 3, 1, 4), 4 * 4 * 4 * 5, 5 * 7
    assert conv == 2304
    flops = network_flops(net)
    assert flops.forward == 2 * (conv + hidden + out)
    # Training: the conv's input is the image (no input gradient): forward + weight gradient;
    # the dense layers: forward + weight gradient + input gradient.
    assert flops.train == 2 * (2 * conv + 3 * hidden + 3 * out)


def test_network_a_at_48x48_by_hand():
    convs = [conv_macs(48, 3, 1, 64), conv_macs(24, 3, 64, 128), conv_macs(12, 3, 128, 256),
             conv_macs(12, 3, 256, 256)]
    dense = [6 * 6 * 256 * 1024, 1024 * 7]
    flops = network_flops(get_network("A"))
    assert flops.forward == 2 * (sum(convs) + sum(dense)) == 361_281_536
    assert flops.train == 2 * (2 * convs[0] + 3 * (sum(convs[1:]) + sum(dense)))


def test_residual_network_d_and_the_mlp_by_hand():
    convs = [conv_macs(48, 3, 1, 64), conv_macs(24, 3, 64, 128)] + [conv_macs(12, 3, 128, 128)] * 2
    dense = [6 * 6 * 128 * 1024, 1024 * 7]
    flops = network_flops(get_network("D"))
    assert flops.forward == 2 * (sum(convs) + sum(dense))
    assert flops.train == 2 * (2 * convs[0] + 3 * (sum(convs[1:]) + sum(dense)))
    mlp = network_flops(get_network("mlp", im_dim=[42, 42], n_hidden=[100, 50]))
    assert mlp.forward == 2 * (42 * 42 * 100 + 100 * 50 + 50 * 7)
    assert mlp.train == 2 * (2 * 42 * 42 * 100 + 3 * (100 * 50 + 50 * 7))


# The CPU's forms compute fewer products than the architecture (Winograd's tiles; at inference,
# V's last conv on 40x40 windows only the 4x4 of its 5x5 outputs that the pooling reads): the
# count is the architecture's, whichever form this CPU takes.
def test_the_count_is_the_architectures_whatever_forms_the_cpu_takes(monkeypatch):
    convs = [conv_macs(40, 3, 1, 32), conv_macs(40, 3, 32, 32), conv_macs(20, 3, 32, 64),
             conv_macs(20, 3, 64, 64), conv_macs(10, 3, 64, 128), conv_macs(10, 3, 128, 128),
             conv_macs(5, 3, 128, 256), conv_macs(5, 3, 256, 256)]
    dense = [2 * 2 * 256 * 1024, 1024 * 7]
    for winograd in ("0", "1"):
        monkeypatch.setenv("FER_WINOGRAD", winograd)
        flops = network_flops(get_network("V", im_dim=[40, 40]))
        assert flops.forward == 2 * (sum(convs) + sum(dense))
        assert flops.train == 2 * (2 * convs[0] + 3 * (sum(convs[1:]) + sum(dense)))
