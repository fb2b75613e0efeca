"""Whole building blocks against independent NumPy references: the residual block, batch norm
where its epsilon matters, and the EMA statistics a training step keeps."""
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

from convnets.layers import residual_block
from convnets.networks import Conv, Pool, Residual, build_convnet
from utils import rna
from utils.training.optim import make_optimizer, make_schedule
from utils.training.steps import Steps

RNG = np.random.default_rng(2024)


def _as64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _randomised_bn(params, state):
    """Non-trivial gamma/beta and population statistics, so every term of BN is exercised."""
    def visit(p, s):
        if isinstance(p, dict) and "gamma" in p:
            n = p["gamma"].shape[0]
            p = {**p, "gamma": jnp.asarray(RNG.uniform(0.5, 1.5, n), jnp.float32),
                 "beta": jnp.asarray(RNG.normal(0, 0.3, n), jnp.float32)}
            s = {"mean": jnp.asarray(RNG.normal(0, 0.2, n), jnp.float32),
                 "var": jnp.asarray(RNG.uniform(0.5, 2.0, n), jnp.float32)}
            return p, s
        if isinstance(p, dict):
            pairs = {k: visit(p[k], s[k]) for k in p}
            return ({k: v[0] for k, v in pairs.items()},
                    {k: v[1] for k, v in pairs.items()})
        return p, s
    return visit(params, state)


def _numpy_conv_bn(x, p, s, train):
    z = ref.conv_same(x, p["w"])
    if train:
        return ref.batch_norm(z, p["gamma"], p["beta"])
    return ref.batch_norm(z, p["gamma"], p["beta"], s["mean"], s["var"])


def numpy_residual_block(x, params, state, width, train):
    """conv-BN-ReLU, conv-BN, shortcut added (zero-padded channels or 1x1 conv-BN), ReLU."""
    y = ref.relu(_numpy_conv_bn(x, params["conv_a"], state["conv_a"], train))
    y = _numpy_conv_bn(y, params["conv_b"], state["conv_b"], train)
    if "shortcut" in params:
        shortcut = _numpy_conv_bn(x, params["shortcut"], state["shortcut"], train)
    else:
        shortcut = np.pad(x, ((0, 0),) * 3 + ((0, width - x.shape[-1]),))
    return ref.relu(y + shortcut)


@pytest.mark.parametrize("c_in,projection", [(6, False), (4, False), (4, True)])
@pytest.mark.parametrize("train", [True, False])
def test_residual_block_matches_numpy(c_in, projection, train):
    width = 6
    block = residual_block(width, projection=projection)
    _, params, state = block.init(jax.random.key(3), (5, 5, c_in))
    params, state = _randomised_bn(params, state)
    x = RNG.normal(size=(3, 5, 5, c_in)).astype(np.float32)
    got, _ = block.apply(params, state, jnp.asarray(x), train=train, key=None)
    want = numpy_residual_block(x.astype(np.float64), _as64(params), _as64(state), width, train)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_a_network_with_a_residual_block_computes_its_reference():
    net = build_convnet("res", [Conv(4), Pool(), Residual(6), Pool()], im_dim=[8, 8], n_hidden=[5],
                        p_drop=0.0, p_dropConv=[0.0, 0.0, 0.0])
    params, state = net.init(jax.random.key(0))
    params, state = _randomised_bn(params, state)
    x = RNG.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    got, _ = net.apply(params, state, jnp.asarray(x), train=False)
    p, s = _as64(params), _as64(state)
    # conv 4 + BN, pooled before the activation (the layer order), then the residual block.
    z = ref.batch_norm(ref.conv_same(x.astype(np.float64), p[0]["w"]), p[0]["gamma"],
                       p[0]["beta"], s[0]["mean"], s[0]["var"])
    h = ref.relu(z.reshape(2, 4, 2, 4, 2, 4).max(axis=(2, 4)))
    h = numpy_residual_block(h, p[1], s[1], 6, train=False)
    h = h.reshape(2, 2, 2, 2, 2, 6).max(axis=(2, 4)).reshape(2, -1)
    # layers: conv+pool, residual, pool, flatten, hidden, softmax
    h = ref.relu(ref.batch_norm(h @ p[4]["w"], p[4]["gamma"], p[4]["beta"], s[4]["mean"],
                                s[4]["var"]))
    np.testing.assert_allclose(np.asarray(got), h @ p[5]["w"] + p[5]["b"], rtol=1e-4,
                               atol=1e-4)


def test_eval_batch_norm_puts_epsilon_inside_the_square_root_at_near_zero_variance():
    # With variances near 1e-6, (x - mean) / sqrt(var + eps) and (x - mean) / (sqrt(var) + eps)
    # differ by a factor of about 1.4: an epsilon in the wrong place cannot hide here.
    n = 4
    x = RNG.normal(0, 1e-3, size=(6, n)).astype(np.float32)
    gamma = RNG.uniform(0.5, 1.5, n).astype(np.float32)
    beta = RNG.normal(size=n).astype(np.float32)
    mean = RNG.normal(0, 1e-3, n).astype(np.float32)
    var = np.array([0.0, 1e-7, 1e-6, 1e-5], np.float32)
    got, _ = rna.batch_norm(jnp.asarray(x), {"gamma": jnp.asarray(gamma),
                                             "beta": jnp.asarray(beta)},
                            {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}, train=False)
    want = ref.batch_norm(x.astype(np.float64), gamma, beta, mean, var, eps=rna.BN_EPSILON)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_train_batch_norm_at_near_zero_variance_matches_numpy():
    x = (1.0 + RNG.normal(0, 1e-4, size=(8, 3, 3, 2))).astype(np.float32)
    params = {"gamma": jnp.asarray([1.2, 0.7]), "beta": jnp.asarray([0.1, -0.3])}
    got, _ = rna.batch_norm(jnp.asarray(x), params, rna.batch_norm_init(2)[1], train=True)
    want = ref.batch_norm(x.astype(np.float64), np.array([1.2, 0.7]), np.array([0.1, -0.3]),
                          eps=rna.BN_EPSILON)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)


def test_a_training_step_with_ema_statistics_moves_them_by_one_ema_step():
    momentum = 0.8
    net = build_convnet("ema", [Conv(3), Pool()], im_dim=[6, 6], n_hidden=[4], p_drop=0.0,
                        p_dropConv=[0.0])
    steps = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                  bn_stats="ema", bn_momentum=momentum)
    state = steps.init_state(jax.random.key(0), jax.random.key(1))
    params, before = _randomised_bn(state.params, state.bn_state)
    state = state._replace(params=params, bn_state=before)
    x = jnp.asarray(RNG.uniform(size=(5, 6, 6, 1)).astype(np.float32))
    y = jnp.asarray([0, 1, 2, 3, 4], jnp.int32)
    # This batch's statistics, from the parameters the step starts with (no dropout here).
    _, batch = net.apply(params, before, x, train=True, key=None)
    expected = jax.tree_util.tree_map(lambda old, new: momentum * np.asarray(old) +
                                      (1 - momentum) * np.asarray(new), before, batch)
    old_leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(before)]
    after, _ = steps.train(state, x, y)  # donates state (and so `before`)
    for got, want, old in zip(jax.tree_util.tree_leaves(after.bn_state),
                              jax.tree_util.tree_leaves(expected), old_leaves):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(got), old)  # they did move
