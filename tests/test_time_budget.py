"""time_budget: n_epochs fixed from the run's own timed steps, then a run like any other."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from launcher_support import quick_config, sabotage_train_step

import run_experiment as launcher
from loaders.sample import ensure_sample_dataset
from utils.experiments import experiment as run
from utils.experiments import recipes, time_budget
from utils.experiments.keywords import KeywordError, resolve
from utils.models import model_io

STEP = 0.125  # seconds a step takes by the fake clock


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


def test_the_epochs_fill_the_budget_share_with_the_annealing_counted():
    config = {"anneal_epochs": 1, "warmup_epochs": 0}
    # an epoch of 20 steps of 0.5 s: 10 s; 0.95 * 100 s holds 9 of them, one the annealing's
    assert time_budget.epochs_for_budget(100, 0.5, 20, config) == 8
    assert time_budget.epochs_for_budget(100, 0.5, 20, {**config, "anneal_epochs": 0}) == 9
    assert time_budget.epochs_for_budget(105.3, 0.5, 20, {**config, "anneal_epochs": 0}) == 10
    with pytest.raises(KeywordError, match=r"time_budget=30 s affords 1 epochs of training "
                                           r"here \(an epoch: about 10.0 s, 20 steps of "
                                           r"0.500 s\) but the run needs at least 3 "
                                           r"\(warmup_epochs=2, then at least one more\) "
                                           r"besides anneal_epochs=1"):
        time_budget.epochs_for_budget(30, 0.5, 20, {"anneal_epochs": 1, "warmup_epochs": 2})


def test_steps_are_timed_as_the_loop_dispatches_them_after_the_warm_up(monkeypatch):
    calls = []
    monkeypatch.setattr(time_budget, "CLOCK", lambda: len(calls) * 0.25)  # 0.25 s a step

    def step(state, x, y, targets):
        calls.append((state, x))
        return state + 1, {"cost": 0.0}

    batches = iter([SimpleNamespace(x=name, y=None, targets=None) for name in "abcdefg"])
    assert time_budget.time_steps(step, 0, batches, warmup=2, timed=3) == 0.25
    assert calls == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]
    assert next(batches).x == "f"  # no batch read past the timed ones


@pytest.mark.parametrize("keywords,message", [
    ({"time_budget": 60, "n_epochs": 5, "val": False},
     r"time_budget=60.0 \(given\) fixes n_epochs, but n_epochs=5 \(given\) is given too"),
    ({"time_budget": 60}, r"time_budget=60.0 \(given\) needs val=False .* val=True \(the "
                          r"default\) searches"),
    ({"time_budget": 60, "val": False, "coordinator_address": "host:1234",
      "num_processes": 2, "process_id": 0}, r"is for a run on one host"),
    ({"time_budget": 0}, r"time_budget must be a number > 0, got 0"),
])
def test_a_budget_that_cannot_fix_the_length_is_refused(keywords, message):
    with pytest.raises(KeywordError, match=message):
        resolve(keywords)


def test_a_recipes_budget_yields_to_a_given_n_epochs(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "budgeted", {"val": False, "time_budget": 60.0,
                                                      "n_epochs": 3, "warmup_epochs": 5})
    config = resolve({"recipe": "budgeted", "n_epochs": 7})
    assert (config["time_budget"], config["n_epochs"]) == (None, 7)
    # with the budget in force, warm-up is checked against the fitted length, not the recipe's
    assert resolve({"recipe": "budgeted"})["time_budget"] == 60.0
    # the GPU recipe: the modern one fitted to 330 s of training
    gpu, modern = resolve({"recipe": "gpu"}), resolve({"recipe": "modern"})
    assert gpu["time_budget"] == 330.0 and modern["time_budget"] is None
    own = ("recipe", "time_budget", "n_epochs")  # gpu's length is its budget's, not 74
    assert {k: v for k, v in gpu.items() if k not in own} == {
        k: v for k, v in modern.items() if k not in own}
    assert "n_epochs" not in recipes.RECIPES["gpu"]


def final_leaves(folder):
    _, trees = model_io.load(folder, model_io.MODEL_FORMAT)
    return jax.tree_util.tree_leaves(trees)


def budget_for(epochs: int, config: dict, batches: int) -> float:
    """A budget the fake clock turns into ``epochs`` training epochs (mid-way between two)."""
    return (epochs + config["anneal_epochs"] + 0.5) * STEP * batches / time_budget.BUDGET_SHARE


def test_a_budgeted_run_trains_as_the_n_epochs_it_fixed_and_resumes_with_them(
        sample, tmp_path, monkeypatch):
    # the clock, read before and after the timed steps, makes each take STEP seconds
    ticks = itertools.count()
    monkeypatch.setattr(time_budget, "CLOCK", lambda: next(ticks) * STEP * time_budget.TIMED_STEPS)
    base = quick_config(tmp_path / "budgeted", sample, val=False, anneal_epochs=1,
                        test_each_epoch=False)
    counting = run.Experiment(resolve(base))
    batches = counting.loader("train", training=True).n_batches
    counting.close_loaders()
    config = {**{k: v for k, v in base.items() if k != "n_epochs"},
              "time_budget": budget_for(2, base, batches)}
    results = launcher.run_experiment(**config)
    estimate = results["time_budget_estimate"]
    assert (estimate["n_epochs"], estimate["steps_timed"], estimate["step_seconds"]) == (
        2, time_budget.TIMED_STEPS, STEP)
    assert results["epochs"] == {"train": 2, "anneal": 1}
    # the same run with the length given: bit for bit
    launcher.run_experiment(**quick_config(tmp_path / "given", sample, val=False,
                                           anneal_epochs=1, test_each_epoch=False, n_epochs=2))
    budgeted = final_leaves(tmp_path / "budgeted" / "run")
    for a, b in zip(budgeted, final_leaves(tmp_path / "given" / "run"), strict=True):
        np.testing.assert_array_equal(a, b)

    # Stopped in the second epoch and resumed under a clock twice as fast: the checkpoint's
    # length stands (not timed again), and the run ends where the uninterrupted one did.
    stopped = {**config, "savename": str(tmp_path / "stopped")}
    experiment = run.Experiment(resolve(stopped))
    fit = experiment.set_n_epochs

    def fit_then_stop(n_epochs):
        fit(n_epochs)
        sabotage_train_step(experiment, batches + 3, request_stop)

    def request_stop(real_train, *arguments):
        experiment.stop.requested = "SIGINT"
        return real_train(*arguments)

    experiment.set_n_epochs = fit_then_stop
    with pytest.raises(run.RunStopped, match="epoch 2, batch 3"):
        experiment.run()
    monkeypatch.setattr(time_budget, "CLOCK",
                        lambda: next(ticks) * STEP * time_budget.TIMED_STEPS / 2)
    resumed = launcher.run_experiment(**stopped, resume=True)
    assert resumed["epochs"] == {"train": 2, "anneal": 1}
    assert resumed["time_budget_estimate"] == estimate
    for a, b in zip(final_leaves(tmp_path / "stopped"), budgeted, strict=True):
        np.testing.assert_array_equal(a, b)
