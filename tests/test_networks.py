"""The named networks: shapes, parameter counts, configuration errors, compiled steps."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from utils.models.networks import get_network, network_names
from utils.training.optim import make_optimizer, make_schedule
from utils.training.steps import Steps

NETWORKS = ["A", "B", "C", "D", "mlp"]


def test_registry_lists_the_thesis_networks():
    assert set(NETWORKS) <= set(network_names())


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_shapes_and_finite_logits_at_every_dataset_size(name):
    x = jax.random.uniform(jax.random.key(0), (2, 48, 48, 1))
    for size in (48, 44, 42):
        net = get_network(name, im_dim=[size, size], n_hidden=[16])
        params, state = net.init(jax.random.key(1))

        def forward(params, state, x):
            return net.apply(params, state, x, train=True, key=jax.random.key(2))

        # Every size traced (its shapes: the flatten width follows the pooled map's side); run
        # at the thesis's 48x48 only: the other sizes run the same layers on smaller maps.
        run = forward if size == 48 else functools.partial(jax.eval_shape, forward)
        logits, batch_states = run(params, state, x[:, :size, :size])
        assert logits.shape == (2, 7)
        if size == 48:
            assert bool(jnp.all(jnp.isfinite(logits)))
        # Train mode reports one statistic per BN state entry, with the same shapes.
        assert jax.tree_util.tree_structure(batch_states) == jax.tree_util.tree_structure(state)
        assert [a.shape for a in jax.tree_util.tree_leaves(batch_states)] == \
            [a.shape for a in jax.tree_util.tree_leaves(state)]


def _true_count(convs, fc_in, hidden, batch_norm=True):
    """Parameters by hand: kernels k*k*c_in*c_out, plus 2 per filter (BN) or 1 (bias)."""
    per_unit = 2 if batch_norm else 1
    total = sum(k * k * c_in * c_out + per_unit * c_out for k, c_in, c_out in convs)
    sizes = [fc_in] + hidden
    total += sum(a * b + per_unit * b for a, b in zip(sizes, sizes[1:]))
    return total + sizes[-1] * 7 + 7


def test_true_parameter_counts():
    a_convs = [(3, 1, 64), (3, 64, 128), (3, 128, 256), (3, 256, 256)]
    assert get_network("A").param_count() == _true_count(a_convs, 6 * 6 * 256, [1024])
    assert get_network("A", batch_norm=False, n_hidden=[1024, 512]).param_count() == \
        _true_count(a_convs, 6 * 6 * 256, [1024, 512], batch_norm=False)
    # D: the 128-wide residual block adds two 3x3 128->128 convs; 48 -> 24 -> 12 -> 6.
    d_convs = [(3, 1, 64), (3, 64, 128), (3, 128, 128), (3, 128, 128)]
    assert get_network("D").param_count() == _true_count(d_convs, 6 * 6 * 128, [1024])
    # B without its last pooling: 48 -> 24 -> 12 -> 6 -> 6 (512 channels).
    b_convs = a_convs + [(3, 256, 512), (3, 512, 512)]
    assert get_network("B", last_pool=False).param_count() == \
        _true_count(b_convs, 6 * 6 * 512, [1024])
    c_convs = [(5, 1, 64)] + [(3, 64, 64)] * 4 + [(3, 64, 128)] + [(3, 128, 128)] * 3 + \
        [(3, 128, 256)] + [(3, 256, 256)] * 3
    assert get_network("C").param_count() == _true_count(c_convs, 6 * 6 * 256, [1024])
    assert get_network("mlp", n_hidden=[100]).param_count() == _true_count([], 48 * 48, [100])


def test_thesis_conv_parameter_convention():
    assert get_network("A", batch_norm=False).thesis_conv_params == 7040
    assert get_network("B", batch_norm=False).thesis_conv_params == 17280
    assert get_network("C", batch_norm=True).thesis_conv_params == 21440
    assert get_network("D", batch_norm=True).thesis_conv_params == 4928


def test_projection_shortcut_adds_a_1x1_conv_only_where_widths_differ():
    plain, projected = get_network("C"), get_network("C", projection_shortcut=True)
    # 64->128 and 128->256: 1x1 kernels plus BN gamma/beta.
    extra = (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256)
    assert projected.param_count() - plain.param_count() == extra


def test_conv_layer_counts_match_the_default_conv_dropout():
    for name, n_conv in [("A", 4), ("B", 6), ("C", 13), ("D", 4), ("mlp", 0)]:
        net = get_network(name)
        assert net.n_conv_layers == n_conv
        assert len(net.options["p_dropConv"]) == n_conv


# ---- bad configuration fails early and clearly ---------------------------------------------
@pytest.mark.parametrize("name,options,message", [
    ("A", {"p_dropConv": [0.2, 0.3, 0.4]},
     r"p_dropConv has 3 values but network A has 4 conv layers"),
    ("C", {"p_dropConv": [0.2, 0.3, 0.4, 0.5]},
     r"p_dropConv has 4 values but network C has 13 conv layers"),
    ("mlp", {"p_dropConv": [0.2]}, r"p_dropConv has 1 values but network mlp has 0 conv"),
    ("A", {"p_dropConv": [0.2, 0.3, 1.2, 0.5]},
     r"p_dropConv\[2\] must be a drop probability in \[0, 1\), got 1.2"),
    ("A", {"p_drop": 1.0}, r"p_drop must be a drop probability in \[0, 1\), got 1.0"),
    ("D", {"p_drop": -0.5}, r"p_drop must be a drop probability in \[0, 1\), got -0.5"),
    ("A", {"activation": "sigmoidd"},
     r"unknown activation 'sigmoidd' \(did you mean 'sigmoid'\?\)"),
    ("B", {"im_dim": [12, 12]},
     r"network B pools 2x2 4 times, so it needs inputs of at least 16x16; got 12x12"),
    ("A", {"im_dim": [48]}, r"im_dim must be \[height, width\] in pixels, got \[48\]"),
    ("A", {"n_hidden": [1024, 0]}, r"n_hidden must be a list of positive layer sizes"),
    ("mlp", {"last_pool": False}, r"network mlp has no pooling"),
])
def test_bad_configuration_is_refused_with_a_clear_message(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_network(name, **options)


def test_unknown_network_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown network 'a' \(did you mean 'A'\?\)"):
        get_network("a")
    with pytest.raises(ValueError, match=r"unknown network 'mpl' \(did you mean 'mlp'\?\)"):
        get_network("mpl")


def test_a_researchers_own_network_registers_in_a_few_lines():
    from convnets.networks import Conv, Pool, Residual, build_convnet
    from utils.models.networks import register_network

    @register_network("tiny_test_net")
    def tiny(**options):
        return build_convnet("tiny_test_net", [Conv(4), Pool(), Residual(6), Pool()], **options)

    net = get_network("tiny_test_net", im_dim=[8, 8], n_hidden=[5], p_dropConv=[0.1, 0, 0])
    assert net.n_conv_layers == 3
    params, state = net.init(jax.random.key(0))
    logits, _ = net.apply(params, state, jnp.zeros((3, 8, 8, 1)), train=False)
    assert logits.shape == (3, 7)


# ---- exactly two compiled step functions -----------------------------------------------------
def test_train_and_eval_steps_are_each_traced_once():
    net = get_network("A", im_dim=[16, 16], n_hidden=[8])
    steps = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1))
    state = steps.init_state(0, 1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = jnp.asarray(rng.random((4, 16, 16, 1), dtype=np.float32))
        y = jnp.asarray(rng.integers(0, 7, 4, dtype=np.int32))
        state, metrics = steps.train(state, x, y)
        logits = steps.eval(state.params, state.bn_state, x)
    assert int(state.step) == 3 and logits.shape == (4, 7)
    assert np.isfinite(float(metrics["cost"]))
    assert dict(steps.traces) == {"train": 1, "eval": 1}
