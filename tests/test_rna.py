"""The intermediate layer's primitives against independent references (NumPy, flax.linen)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
from jaxpr_products import products_and_operands
import pytest

from convnets.layers import conv_layer
from mlp.layers import hidden_layer
from utils import rna

RNG = np.random.default_rng(1234)


@pytest.mark.parametrize("kernel", [3, 5])
def test_conv2d_matches_numpy(kernel):
    x = RNG.normal(size=(2, 9, 7, 3)).astype(np.float32)
    w = RNG.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    got = np.asarray(rna.conv2d(jnp.asarray(x), jnp.asarray(w)))
    np.testing.assert_allclose(got, numpy_reference.conv_same(x.astype(np.float64), w), rtol=1e-4,
                               atol=1e-4)


def conv_shapes(function, *args) -> list:
    """The output shapes of the convolutions and matrix products ``function`` traces."""
    return [tuple(eqn.outvars[0].aval.shape)
            for eqn, _ in products_and_operands(jax.make_jaxpr(function)(*args).jaxpr)]


# The outputs a pooling after the conv reads, when it drops a ragged border: each form of
# conv2d (the small window's, XLA's, Winograd's, the plain forms; an even window, whose 'same'
# pads one more at the end) gives the whole conv's values there, and XLA's and Winograd's
# compute no more than those.
@pytest.mark.parametrize("kernel, c_in, c_out, winograd, computes_fewer", [
    (3, 1, 8, "0", False), (3, 8, 16, "0", True), (2, 8, 8, "0", True), (5, 8, 4, "0", True),
    (3, 64, 64, "1", True), (3, 64, 64, "0", True)])
@pytest.mark.parametrize("forms", ["fast", "plain", "whole"])  # whole: FER_KEPT_OUTPUTS=0
def test_conv2d_of_the_kept_outputs_is_the_whole_conv_cut(kernel, c_in, c_out, winograd,
                                                         computes_fewer, forms, monkeypatch):
    monkeypatch.setenv("FER_WINOGRAD", winograd)
    monkeypatch.setenv("FER_KEPT_OUTPUTS", "0" if forms == "whole" else "1")
    plain = forms == "plain"
    x = RNG.normal(size=(2, 7, 5, c_in)).astype(np.float32)
    w = RNG.normal(size=(kernel, kernel, c_in, c_out)).astype(np.float32)
    kept = (6, 4)
    expected = numpy_reference.conv_same(x.astype(np.float64), w)[:, :6, :4]

    def conv(x, w):
        if plain:
            with rna.plain_forms():
                return rna.conv2d(x, w, kept)
        return rna.conv2d(x, w, kept)
    got = np.asarray(jax.jit(conv)(x, w))
    assert got.shape == (2, 6, 4, c_out)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # XLA's convolution outputs the kept map, Winograd's products its 2x2 tiles (3 x 2 a map;
    # the whole one's: 4 x 3); the plain forms and FER_KEPT_OUTPUTS=0 compute the whole map
    shapes = set(conv_shapes(conv, x, w))
    kept_shapes = {(2, 6, 4, c_out), (2 * 3 * 2, c_out)}
    whole_shapes = {(2, 7, 5, c_out), (2 * 4 * 3, c_out)}
    whole = forms != "fast"
    if plain or computes_fewer:  # the small window's fast form has no product to see
        assert bool(kept_shapes & shapes) != whole and bool(whole_shapes & shapes) == whole, \
            shapes


def test_conv2d_of_the_kept_outputs_differentiates_as_the_whole_conv_cut(monkeypatch):
    monkeypatch.setenv("FER_WINOGRAD", "1")
    g = RNG.normal(size=(2, 4, 4, 64)).astype(np.float32)
    x = RNG.normal(size=(2, 5, 5, 64)).astype(np.float32)
    w = RNG.normal(size=(3, 3, 64, 64)).astype(np.float32)
    for c_in in (64, 8):  # Winograd's form and XLA's
        def kept_cost(x, w):
            return jnp.sum(rna.conv2d(x, w, (4, 4)) * g)

        def cut_cost(x, w):
            with rna.plain_forms():
                return jnp.sum(rna.conv2d(x, w)[:, :4, :4] * g)
        args = (x[..., :c_in], w[:, :, :c_in])
        for got, expected in zip(jax.grad(kept_cost, (0, 1))(*args),
                                 jax.grad(cut_cost, (0, 1))(*args)):
            expected = np.asarray(expected)
            np.testing.assert_allclose(np.asarray(got), expected, rtol=0,
                                       atol=1e-5 * np.abs(expected).max())


# at test time the kept outputs only; in training the batch statistics still cover the whole map
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("side", [5, 6])
def test_a_conv_layer_pools_what_the_whole_conv_would_give(side, train):
    layer = conv_layer(6, pool=2)
    _, params, state = layer.init(jax.random.key(3), (side, side + 1, 3))
    state = {"mean": jnp.asarray(RNG.normal(size=6), jnp.float32),
             "var": jnp.asarray(RNG.uniform(0.5, 2, size=6), jnp.float32)}
    x = RNG.normal(size=(2, side, side + 1, 3)).astype(np.float32)
    got, new_state = layer.apply(params, state, jnp.asarray(x), train=train)
    z = numpy_reference.conv_same(x.astype(np.float64), np.asarray(params["w"]))
    statistics = (None, None) if train else (np.asarray(state["mean"]), np.asarray(state["var"]))
    z_normalised = numpy_reference.batch_norm(z, np.asarray(params["gamma"]),
                                              np.asarray(params["beta"]), *statistics,
                                              eps=rna.BN_EPSILON)
    rows, cols = side // 2, (side + 1) // 2
    pooled = z_normalised[:, :2 * rows, :2 * cols].reshape(2, rows, 2, cols, 2, 6).max(
        axis=(2, 4))
    assert got.shape == (2, rows, cols, 6)
    np.testing.assert_allclose(np.asarray(got), numpy_reference.relu(pooled), rtol=1e-4,
                               atol=1e-4)
    if train:
        np.testing.assert_allclose(np.asarray(new_state["mean"]), z.mean(axis=(0, 1, 2)),
                                   rtol=1e-4, atol=1e-4)


def test_dense_matches_numpy():
    x = RNG.normal(size=(5, 11)).astype(np.float32)
    w = RNG.normal(size=(11, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rna.dense(jnp.asarray(x), jnp.asarray(w))),
                               x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


def test_max_pool_matches_numpy_and_floors_odd_sizes():
    x = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32)
    expected = x[:, :6, :6, :].reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    got = np.asarray(rna.max_pool(jnp.asarray(x), 2))
    assert got.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(got, expected)


# ---- batch norm ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5, 5)])
def test_batch_norm_train_and_eval_match_flax(shape):
    x = RNG.normal(2.0, 3.0, size=shape).astype(np.float32)
    n_features = shape[-1]
    gamma = RNG.normal(size=n_features).astype(np.float32)
    beta = RNG.normal(size=n_features).astype(np.float32)
    mean = RNG.normal(size=n_features).astype(np.float32)
    var = RNG.uniform(0.5, 2.0, size=n_features).astype(np.float32)
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}
    state = {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}
    variables = {"params": {"scale": gamma, "bias": beta},
                 "batch_stats": {"mean": mean, "var": var}}

    ours_eval, same_state = rna.batch_norm(jnp.asarray(x), params, state, train=False)
    flax_eval = nn.BatchNorm(use_running_average=True, epsilon=rna.BN_EPSILON).apply(
        variables, x)
    np.testing.assert_allclose(ours_eval, flax_eval, rtol=1e-5, atol=1e-5)
    assert same_state is state

    ours_train, batch_state = rna.batch_norm(jnp.asarray(x), params, state, train=True)
    flax_train, updated = nn.BatchNorm(use_running_average=False, momentum=0.0,
                                       epsilon=rna.BN_EPSILON).apply(
        variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(ours_train, flax_train, rtol=1e-4, atol=1e-4)
    # flax with momentum 0 keeps exactly the batch mean and the biased batch variance;
    # ours reports the unbiased variance m/(m-1) * biased, m = values per feature.
    m = x.size // n_features
    np.testing.assert_allclose(batch_state["mean"], updated["batch_stats"]["mean"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(batch_state["var"], updated["batch_stats"]["var"] * m / (m - 1),
                               rtol=1e-4)


def test_population_statistics_follow_the_bn_paper():
    # Conv features: m = batch * height * width values per feature.
    batches = [RNG.normal(1.0, 2.0, size=(4, 3, 3, 2)).astype(np.float32) for _ in range(5)]
    states = [rna.batch_norm(jnp.asarray(b), *rna.batch_norm_init(2), train=True)[1]
              for b in batches]
    population = rna.population_statistics(states)
    m = 4 * 3 * 3
    batch_means = np.array([b.reshape(-1, 2).mean(axis=0) for b in batches], np.float64)
    batch_vars = np.array([b.reshape(-1, 2).var(axis=0) for b in batches], np.float64)
    np.testing.assert_allclose(population["mean"], batch_means.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(population["var"], m / (m - 1) * batch_vars.mean(axis=0),
                               rtol=1e-5)


def test_ema_statistics():
    old = {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([3.0, 4.0])}
    new = {"mean": jnp.array([5.0, 6.0]), "var": jnp.array([7.0, 8.0])}
    got = rna.ema_statistics(old, new, 0.9)
    np.testing.assert_allclose(got["mean"], [0.9 * 1 + 0.1 * 5, 0.9 * 2 + 0.1 * 6], rtol=1e-6)
    np.testing.assert_allclose(got["var"], [0.9 * 3 + 0.1 * 7, 0.9 * 4 + 0.1 * 8], rtol=1e-6)


# ---- dropout and noise ----------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_drops_a_binomial_fraction_and_keeps_the_expectation(p):
    n = 200_000
    x = jnp.full((n,), 3.0)
    y = np.asarray(rna.dropout(x, p, train=True, key=jax.random.key(7)))
    dropped = np.mean(y == 0.0)
    # 5 standard deviations of a binomial proportion: fails only if the rate is wrong.
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[y != 0], 3.0 / (1 - p), rtol=1e-6)
    assert abs(y.mean() - 3.0) < 5 * 3.0 * math.sqrt(p / (1 - p) / n)


def test_dropout_is_identity_at_test_for_p_zero_and_without_key():
    x = jnp.asarray(RNG.normal(size=(3, 4)).astype(np.float32))
    assert rna.dropout(x, 0.5, train=False, key=jax.random.key(0)) is x
    assert rna.dropout(x, 0.0, train=True, key=jax.random.key(0)) is x
    assert rna.dropout(x, 0.5, train=True, key=None) is x


def test_dropout_masks_differ_by_key_and_repeat_for_the_same_key():
    x = jnp.ones((1000,))
    a = rna.dropout(x, 0.5, train=True, key=jax.random.key(1))
    b = rna.dropout(x, 0.5, train=True, key=jax.random.key(1))
    c = rna.dropout(x, 0.5, train=True, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(c))


def test_gaussian_noise_has_the_requested_std_and_is_absent_at_test():
    x = jnp.full((100_000,), 2.0)
    y = np.asarray(rna.gaussian_noise(x, 0.3, train=True, key=jax.random.key(3))) - 2.0
    assert abs(y.mean()) < 5 * 0.3 / math.sqrt(y.size)
    assert abs(y.std() - 0.3) < 0.01
    assert rna.gaussian_noise(x, 0.3, train=False, key=jax.random.key(3)) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", True])
def test_probabilities_outside_the_unit_interval_are_refused(p):
    with pytest.raises(ValueError, match=r"p_drop must be a drop probability in \[0, 1\)"):
        hidden_layer(8, p_drop=p)


# ---- activations ----------------------------------------------------------------------------
def test_activations_by_call_and_by_name():
    z = jnp.array([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_allclose(rna.relu()(z), [0, 0, 0, 1.5])
    np.testing.assert_allclose(rna.get_activation("sigmoid")(z), 1 / (1 + np.exp(-np.asarray(z))),
                               rtol=1e-6)
    np.testing.assert_allclose(rna.get_activation("rna.tanh()")(z), np.tanh(z), rtol=1e-6)
    np.testing.assert_allclose(rna.get_activation("leaky_relu(0.2)")(z), [-0.4, -0.1, 0, 1.5],
                               rtol=1e-6)
    np.testing.assert_allclose(rna.leaky_relu()(z), [-0.02, -0.005, 0, 1.5], rtol=1e-6)


def test_unknown_activation_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown activation 'rellu' \(did you mean 'relu'\?\)"):
        rna.get_activation("rellu")


# ---- initialisation -------------------------------------------------------------------------
@pytest.mark.parametrize("activation,gain", [("relu", 1.0), ("tanh", 1.0), ("sigmoid", 4.0)])
def test_glorot_bounds_of_dense_layers(activation, gain):
    _, params, _ = hidden_layer(300, activation=activation).init(jax.random.key(0), (200,))
    r = gain * math.sqrt(6.0 / (200 + 300))
    w = np.asarray(params["w"])
    assert np.abs(w).max() <= r
    assert np.abs(w).max() > 0.99 * r  # 60,000 uniform draws reach the edge
    assert abs(w.std() - r / math.sqrt(3)) < 0.01 * r


def test_glorot_bound_of_a_conv_layer_divides_fan_out_by_the_pooling_area():
    _, params, _ = conv_layer(64, pool=2).init(jax.random.key(0), (8, 8, 32))
    r = math.sqrt(6.0 / (32 * 9 + 64 * 9 / 4))
    w = np.asarray(params["w"])
    assert w.shape == (3, 3, 32, 64)
    assert r * 0.99 < np.abs(w).max() <= r
    assert set(params) == {"w", "gamma", "beta"}  # BN replaces the bias


def test_biases_start_at_zero_and_exist_only_without_batch_norm():
    _, params, state = conv_layer(4, batch_norm=False).init(jax.random.key(0), (5, 5, 1))
    assert set(params) == {"w", "b"} and state == {}
    np.testing.assert_array_equal(params["b"], np.zeros(4))


def test_l1_l2_penalty_counts_weights_only():
    params = {"conv": {"w": jnp.array([[1.0, -2.0]]), "gamma": jnp.array([5.0]),
                       "beta": jnp.array([7.0])},
              "out": [{"w": jnp.array([3.0]), "b": jnp.array([11.0])}]}
    got = float(rna.l1_l2_penalty(params, 0.1, 0.01))
    assert got == pytest.approx(0.1 * (1 + 2 + 3) + 0.01 * (1 + 4 + 9))


# ---- losses: one implementation on the device and on the host --------------------------------
def test_losses_agree_on_device_and_host_and_match_numpy():
    from utils.nn import losses

    logits = RNG.normal(0, 3, size=(9, 7)).astype(np.float32)
    labels = RNG.integers(0, 7, size=9)
    z = logits.astype(np.float64)
    reference_log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(losses.log_softmax(logits), reference_log_p, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(losses.log_softmax(jnp.asarray(logits))),
                               reference_log_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.softmax(logits).sum(axis=1), 1.0, rtol=1e-12)
    cost, error = losses.cost_and_error(logits, labels)
    assert cost == pytest.approx(-reference_log_p[np.arange(9), labels].mean(), rel=1e-12)
    assert error == np.mean(logits.argmax(axis=1) != labels)
    device_cost = losses.negative_log_likelihood(jnp.asarray(logits), jnp.asarray(labels))
    assert float(device_cost) == pytest.approx(cost, rel=1e-5)
    assert float(losses.errors(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(error)
