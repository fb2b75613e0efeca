"""What a training step minimises: label smoothing, mixup, CutMix, FER+ target rules, against
hand computations in NumPy; the plain NLL as the one-hot special case, bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convnets.networks import Conv, Pool, build_convnet
from utils.nn import losses
from utils.training.mixing import MIX_STREAM, cutmix, mix_batch, mixup
from utils.training.objective import Objective, data_cost, prepare_batch
from utils.training.online_augmentation import parse
from utils.training.optim import make_optimizer, make_schedule
from utils.training.steps import Steps

RNG = np.random.default_rng(5)
K = 7


def numpy_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def small_network(n_classes=K):
    # No dropout: the logits do not depend on the step's key, so a step's cost can be
    # recomputed by hand from the parameters alone.
    return build_convnet("obj", [Conv(3), Pool()], im_dim=[6, 6], n_hidden=[5], p_drop=0.0,
                         p_dropConv=[0.0], n_classes=n_classes)


def one_step(objective, x, y, targets=None, n_classes=K):
    net = small_network(n_classes)
    steps = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                  objective=objective)
    state = steps.init_state(jax.random.key(0), jax.random.key(1))
    params = jax.tree_util.tree_map(np.asarray, state.params)
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    _, metrics = steps.train(state, jnp.asarray(x), jnp.asarray(y),
                             None if targets is None else jnp.asarray(targets))
    return net, params, state.bn_state, step_key, metrics


def logits_of(net, params, bn_state, x):
    return np.asarray(net.apply(params, bn_state, jnp.asarray(x), train=True, key=None)[0])


def test_label_smoothing_cost_matches_a_hand_computation():
    x = RNG.uniform(size=(8, 6, 6, 1)).astype(np.float32)
    y = RNG.integers(0, K, size=8).astype(np.int32)
    net, params, bn_state, _, metrics = one_step(Objective(label_smoothing=0.1), x, y)
    log_p = numpy_log_softmax(logits_of(net, params, bn_state, x))
    target = np.full((8, K), 0.1 / K)
    target[np.arange(8), y] += 0.9
    assert float(metrics["nll"]) == pytest.approx(-(target * log_p).sum(axis=1).mean(),
                                                  rel=1e-5)


def test_mixup_cost_is_the_blend_of_the_two_labels_costs():
    x = RNG.uniform(size=(8, 6, 6, 1)).astype(np.float32)
    y = RNG.integers(0, K, size=8).astype(np.int32)
    net, params, bn_state, step_key, metrics = one_step(Objective(mixup=0.4), x, y)
    # The same draws the step made (its key's mixing stream), then the cost by hand.
    one_hot = np.eye(K, dtype=np.float32)[y]
    _, _, lam, perm = mix_batch(jax.random.fold_in(step_key, MIX_STREAM), jnp.asarray(x),
                                jnp.asarray(one_hot), 0.4, 0.0)
    lam, perm = float(lam), np.asarray(perm)
    assert 0 < lam < 1 and sorted(perm) == list(range(8))
    mixed = lam * x + (1 - lam) * x[perm]
    log_p = numpy_log_softmax(logits_of(net, params, bn_state, mixed))
    rows = np.arange(8)
    want = -(lam * log_p[rows, y] + (1 - lam) * log_p[rows, y[perm]]).mean()
    assert float(metrics["nll"]) == pytest.approx(want, rel=1e-5)


def test_mixup_and_cutmix_blend_images_and_targets_as_stated():
    x = RNG.uniform(size=(4, 10, 10, 1)).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    perm = np.array([2, 0, 3, 1])
    images, targets = mixup(jnp.asarray(x), jnp.asarray(t), 0.3, perm)
    np.testing.assert_allclose(images, 0.3 * x + 0.7 * x[perm], rtol=1e-6)
    np.testing.assert_allclose(targets, 0.3 * t + 0.7 * t[perm], rtol=1e-6)
    # A box of area 1 - 0.64 = 0.36 of a 10x10 image centred at (5, 5): rows and cols 2..7.
    images, targets, kept = cutmix(jnp.asarray(x), jnp.asarray(t), 0.64, perm,
                                   jnp.array([0.5, 0.5]))
    want = x.copy()
    want[:, 2:8, 2:8] = x[perm][:, 2:8, 2:8]
    np.testing.assert_array_equal(images, want)
    assert float(kept) == pytest.approx(0.64)
    np.testing.assert_allclose(targets, 0.64 * t + 0.36 * t[perm], rtol=1e-6)


def test_cutmix_at_a_border_counts_the_area_actually_pasted():
    x = np.zeros((2, 10, 10, 1), np.float32)
    _, _, kept = cutmix(jnp.asarray(x), jnp.eye(2), 0.64, np.array([1, 0]), jnp.array([0, 0]))
    assert float(kept) == pytest.approx(1 - 3 * 3 / 100)  # rows/cols 0..2 of the 6x6 box


def test_a_one_hot_distribution_gives_the_labels_cost():
    # The same number up to float32 rounding (XLA sums the one-hot products in its own order);
    # runs without distributions take the labels' path, whose costs tests/test_pinned_run.py
    # pins.
    x = RNG.uniform(size=(8, 6, 6, 1)).astype(np.float32)
    y = RNG.integers(0, K, size=8).astype(np.int32)
    one_hot = np.eye(K, dtype=np.float32)[y]
    *_, by_label = one_step(Objective(), x, y)
    *_, by_distribution = one_step(Objective(targets="distribution"), x, y, one_hot)
    assert float(by_label["nll"]) == pytest.approx(float(by_distribution["nll"]), rel=1e-6)


def test_ferplus_target_rules_against_hand_computations():
    x = RNG.uniform(size=(6, 6, 6, 1)).astype(np.float32)
    votes = RNG.integers(0, 6, size=(6, 8)).astype(np.float32) + 0.5
    distribution = votes / votes.sum(axis=1, keepdims=True)
    y = distribution.argmax(axis=1).astype(np.int32)
    net, params, bn_state, _, metrics = one_step(Objective(targets="distribution"), x, y,
                                                 distribution, n_classes=8)
    log_p = numpy_log_softmax(logits_of(net, params, bn_state, x))
    assert float(metrics["nll"]) == pytest.approx(-(distribution * log_p).sum(1).mean(),
                                                  rel=1e-5)
    marked = 0.999 * (distribution > 0.15) + 0.001
    net, params, bn_state, _, metrics = one_step(Objective(targets="multi_target"), x, y,
                                                 marked.astype(np.float32), n_classes=8)
    p = np.exp(numpy_log_softmax(logits_of(net, params, bn_state, x)))
    assert float(metrics["nll"]) == pytest.approx(-np.log((marked * p).max(axis=1)).mean(),
                                                  rel=1e-5)


def test_probability_mode_samples_each_class_as_often_as_its_share():
    distribution = np.tile(np.array([[0.6, 0.3, 0.1, 0, 0, 0, 0, 0]], np.float32), (4000, 1))
    x = np.zeros((4000, 2, 2, 1), np.float32)
    _, labels, dist = prepare_batch(Objective(targets="sample"), jax.random.key(3),
                                    jnp.asarray(x), None, jnp.asarray(distribution), 8)
    assert dist is None
    shares = np.bincount(np.asarray(labels), minlength=8) / 4000
    np.testing.assert_allclose(shares[:3], [0.6, 0.3, 0.1], atol=0.03)
    assert shares[3:].sum() == 0


def test_augmentation_is_absent_at_evaluation():
    x = RNG.uniform(size=(4, 6, 6, 1)).astype(np.float32)
    net = small_network()
    plain = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1))
    augmented = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                      objective=Objective(parse("crop:2,flip,rotate:20,erase:0.9")))
    params, bn_state = net.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(plain.eval(params, bn_state, x)),
                                  np.asarray(augmented.eval(params, bn_state, x)))


def test_the_data_cost_without_any_distribution_is_the_thesis_nll():
    logits = jnp.asarray(RNG.normal(size=(5, K)).astype(np.float32))
    y = jnp.asarray(RNG.integers(0, K, size=5))
    assert float(data_cost(Objective(), logits, y, None)) == float(
        losses.negative_log_likelihood(logits, y))


# ---- class weights ---------------------------------------------------------------------------
WEIGHTS = (0.5, 3.0, 1.0, 0.25, 2.0, 1.0, 0.75)


def test_class_weights_scale_each_labels_cost_by_its_weight():
    x = RNG.uniform(size=(8, 6, 6, 1)).astype(np.float32)
    y = np.array([0, 1, 1, 3, 4, 6, 2, 1], np.int32)
    net, params, bn_state, _, metrics = one_step(Objective(class_weights=WEIGHTS), x, y)
    log_p = numpy_log_softmax(logits_of(net, params, bn_state, x))
    w = np.asarray(WEIGHTS)
    want = (w[y] * -log_p[np.arange(8), y]).mean()  # a mean over images, not over weights
    assert float(metrics["nll"]) == pytest.approx(want, rel=1e-5)


def test_class_weights_on_soft_targets_weigh_each_class_term():
    # -mean_i sum_k w_k t_ik log p_ik: FER+ distributions and smoothed labels alike, what
    # sampling each image's label from its target would weigh on average.
    logits = RNG.normal(size=(6, K)).astype(np.float32)
    targets = RNG.dirichlet(np.ones(K), size=6).astype(np.float32)
    log_p, w = numpy_log_softmax(logits), np.asarray(WEIGHTS)
    weighted = Objective(targets="distribution", class_weights=WEIGHTS)
    got = float(data_cost(weighted, jnp.asarray(logits), None, jnp.asarray(targets)))
    assert got == pytest.approx(-(w * targets * log_p).sum(axis=1).mean(), rel=1e-5)
    y = targets.argmax(axis=1)
    smoothed = np.full((6, K), 0.1 / K) + 0.9 * np.eye(K)[y]
    _, labels, distribution = prepare_batch(Objective(label_smoothing=0.1,
                                                      class_weights=WEIGHTS),
                                            jax.random.key(0), jnp.asarray(np.zeros((6, 2, 2, 1),
                                                                                   np.float32)),
                                            jnp.asarray(y), None, K)
    got = float(data_cost(Objective(label_smoothing=0.1, class_weights=WEIGHTS),
                          jnp.asarray(logits), labels, distribution))
    assert got == pytest.approx(-(w * smoothed * log_p).sum(axis=1).mean(), rel=1e-5)


def test_class_weights_in_multi_target_weigh_the_class_the_maximum_picks():
    logits = RNG.normal(size=(6, 8)).astype(np.float32)
    marked = (0.999 * (RNG.uniform(size=(6, 8)) > 0.6) + 0.001).astype(np.float32)
    weights = (1.0, 2.0, 0.5, 1.5, 1.0, 4.0, 3.0, 0.25)
    p = np.exp(numpy_log_softmax(logits))
    picked = (marked * p).argmax(axis=1)
    want = (np.asarray(weights)[picked] * -np.log((marked * p).max(axis=1))).mean()
    got = data_cost(Objective(targets="multi_target", class_weights=weights),
                    jnp.asarray(logits), None, jnp.asarray(marked))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_unit_class_weights_give_the_unweighted_cost():
    logits = jnp.asarray(RNG.normal(size=(5, K)).astype(np.float32))
    y = jnp.asarray(RNG.integers(0, K, size=5))
    ones = Objective(class_weights=(1.0,) * K)
    assert float(data_cost(ones, logits, y, None)) == pytest.approx(
        float(data_cost(Objective(), logits, y, None)), rel=1e-6)
