"""Optimisers and schedules: each takes a real step; schedules follow their formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_net  # noqa: F401  (registers "tiny")

from utils.models.networks import get_network
from utils.training.optim import OPTIMIZERS, make_optimizer, make_plateau, make_schedule
from utils.training.steps import Steps


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((8, 16, 16, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 7, 8, dtype=np.int32))
    return x, y


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_takes_a_step_at_the_scheduled_rate(name, batch):
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.0], p_drop=0.0)
    steps = Steps(net, make_optimizer(name, 0.05), make_schedule("constant", 0.05))
    state = steps.init_state(0, 1, epoch_length=4)
    before = jax.tree_util.tree_map(np.array, state.params)
    state, metrics = steps.train(state, *batch)
    assert float(metrics["learning_rate"]) == pytest.approx(0.05)
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state.params))]
    assert all(changed) and np.isfinite(float(metrics["cost"]))


def test_sgd_step_is_minus_learning_rate_times_the_gradient(batch):
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.0], p_drop=0.0)
    steps = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1), L2_reg=0.01)
    state = steps.init_state(0, 1)
    state = state._replace(lr_scale=jnp.asarray(0.5, jnp.float32))  # e.g. annealing
    before = jax.tree_util.tree_map(np.array, state.params)

    def cost(params):  # the cost written again, independently of Steps
        logits, _ = net.apply(params, state.bn_state, batch[0], train=True)
        log_p = jax.nn.log_softmax(logits)
        nll = -jnp.mean(log_p[jnp.arange(8), batch[1]])
        return nll + 0.01 * sum(jnp.sum(p["w"] ** 2) for p in params if "w" in p)

    grads = jax.grad(cost)(jax.tree_util.tree_map(jnp.asarray, before))
    state, _ = steps.train(state, *batch)
    for b, g, a in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(grads),
                       jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a, b - 0.05 * np.asarray(g), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,settings,formula", [
    ("constant", {}, lambda e: 0.1),
    ("step", {"drop_every": 2, "factor": 0.5}, lambda e: 0.1 * 0.5 ** np.floor(e / 2)),
    ("exponential", {"gamma": 0.9}, lambda e: 0.1 * 0.9 ** e),
    ("time", {"decay": 0.5}, lambda e: 0.1 / (1 + 0.5 * e)),
])
def test_schedules_follow_their_formulas_in_epochs(name, settings, formula):
    schedule = make_schedule(name, 0.1, settings)
    for epoch in (0.0, 0.5, 1.0, 2.0, 3.5, 7.0):
        assert float(schedule(jnp.float32(epoch))) == pytest.approx(formula(epoch), rel=1e-5)


def test_plateau_halves_after_patience_epochs_without_improvement():
    plateau = make_plateau({"factor": 0.5, "patience": 2})
    state = plateau.init(jnp.zeros(()))
    scales = []
    for value in [1.0, 0.9, 0.95, 0.92, 0.91, 0.5]:
        _, state = plateau.update(updates=jnp.zeros(()), state=state, value=jnp.asarray(value))
        scales.append(float(state.scale))
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match=r"optimizer 'adam' has no setting 'beta1'"):
        make_optimizer("adam", 0.1, {"beta1": 0.9})
    with pytest.raises(ValueError, match=r"lr_schedule 'step' has no setting 'every'"):
        make_schedule("step", 0.1, {"every": 3})
    assert isinstance(make_optimizer("nesterov", 0.1), optax.GradientTransformation)


# ---- modern schedules and decoupled weight decay ----------------------------------------------
def test_cosine_with_warmup_follows_its_formula():
    schedule = make_schedule("cosine", 0.1, {}, n_epochs=20, warmup_epochs=4)
    for epoch in (0.0, 1.0, 2.5, 4.0):
        assert float(schedule(epoch)) == pytest.approx(0.1 * epoch / 4, abs=1e-7)
    for epoch in (4.0, 7.0, 12.0, 19.5, 20.0, 25.0):
        t = min(epoch - 4, 16) / 16
        assert float(schedule(epoch)) == pytest.approx(0.05 * (1 + np.cos(np.pi * t)), abs=1e-7)
    floor = make_schedule("cosine", 0.1, {"final_factor": 0.1}, n_epochs=10)
    assert float(floor(10.0)) == pytest.approx(0.01) and float(floor(0.0)) == pytest.approx(0.1)


def test_onecycle_follows_its_formula():
    schedule = make_schedule("onecycle", 0.1, {}, n_epochs=10, warmup_epochs=3)
    start, peak, end = 0.1 / 25, 0.1, 0.1 / 25 / 1e4

    def cosine_between(a, b, fraction):
        return a + (b - a) * (1 - np.cos(np.pi * fraction)) / 2

    for epoch in (0.0, 1.0, 2.0, 3.0):
        assert float(schedule(epoch)) == pytest.approx(cosine_between(start, peak, epoch / 3),
                                                       rel=1e-5)
    for epoch in (3.0, 5.5, 9.0, 10.0):
        assert float(schedule(epoch)) == pytest.approx(
            cosine_between(peak, end, (epoch - 3) / 7), rel=1e-5, abs=1e-9)


def test_decoupled_weight_decay_shrinks_weights_only(batch):
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.0], p_drop=0.0)
    lr, wd = 0.1, 0.05
    steps = Steps(net, make_optimizer("sgd", lr, weight_decay=wd), make_schedule("constant", lr))
    plain = Steps(net, make_optimizer("sgd", lr), make_schedule("constant", lr))
    state = steps.init_state(0, 1)
    before = jax.tree_util.tree_map(np.array, state.params)
    after_plain, _ = plain.train(plain.init_state(0, 1), *batch)
    after, _ = steps.train(state, *batch)
    paths = jax.tree_util.tree_flatten_with_path(before)[0]
    for (path, w0), w_plain, w in zip(paths, jax.tree_util.tree_leaves(after_plain.params),
                                      jax.tree_util.tree_leaves(after.params)):
        decay = lr * wd * w0 if path[-1].key == "w" else 0.0  # -lr * (g + wd * w), weights only
        np.testing.assert_allclose(np.asarray(w), np.asarray(w_plain) - decay, rtol=1e-5,
                                   atol=1e-7)


def test_adam_with_weight_decay_is_adamw(batch):
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.0], p_drop=0.0)
    # eps well above the smallest gradients: adam's first step is g / (|g| + eps), which
    # float rounding of a near-zero gradient would otherwise swing between -1 and 1.
    steps = Steps(net, make_optimizer("adam", 0.01, {"eps": 1e-3}, weight_decay=0.1),
                  make_schedule("constant", 0.01))
    state = steps.init_state(0, 1)
    params = jax.tree_util.tree_map(jnp.array, state.params)
    mask = jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "w", params)
    reference = optax.adamw(0.01, eps=1e-3, weight_decay=0.1, mask=mask)
    cost = lambda p: jnp.mean(  # the step's cost, recomputed for the reference's gradient
        -jax.nn.log_softmax(net.apply(p, state.bn_state, batch[0], train=True, key=None)[0])
        [jnp.arange(8), batch[1]])
    updates, _ = reference.update(jax.grad(cost)(params), reference.init(params), params)
    want = optax.apply_updates(params, updates)
    after, _ = steps.train(state, *batch)
    for got, expected in zip(jax.tree_util.tree_leaves(after.params),
                             jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_moving_average_of_the_weights_follows_its_recurrence_and_leaves_training_alone(batch):
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.0], p_drop=0.0)
    make = lambda ema: Steps(net, make_optimizer("momentum", 0.05),
                             make_schedule("constant", 0.05), ema_decay=ema)
    averaged, plain = make(0.25), make(0.0)
    state, reference = averaged.init_state(0, 1), plain.init_state(0, 1)
    assert reference.ema_params == () and plain.model_params(reference) is reference.params
    ema = [np.array(w, np.float64) for w in jax.tree_util.tree_leaves(state.params)]
    for t in range(4):  # d = min(0.25, (1 + t) / (10 + t)): 0.1, 2/11, 3/12, then the cap
        state, _ = averaged.train(state, *batch)
        reference, _ = plain.train(reference, *batch)
        d = min(0.25, (1 + t) / (10 + t))
        ema = [d * e + (1 - d) * np.asarray(w, np.float64)
               for e, w in zip(ema, jax.tree_util.tree_leaves(state.params))]
    for got, want in zip(jax.tree_util.tree_leaves(averaged.model_params(state)), ema):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree_util.tree_leaves(state.params),
                         jax.tree_util.tree_leaves(reference.params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # training unchanged
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\), got 1.0"):
        make(1.0)
