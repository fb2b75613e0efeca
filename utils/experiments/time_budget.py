"""A run as long as a time budget affords: ``time_budget=SECONDS`` fixes ``n_epochs`` from this
run's own training step, timed on this machine before training starts.

    python run_experiment.py recipe=modern dataset=datasets/fer2013_raw.h5 time_budget=7200

The launcher compiles the step, runs it from a copy of the first phase's initial state on the
first batches of the training split (``WARMUP_STEPS`` untimed, then ``TIMED_STEPS`` dispatched as
the training loop dispatches them), throws that state away, and fixes

    epochs = floor(BUDGET_SHARE * time_budget / (mean step seconds * batches an epoch))

of which the annealing's take ``anneal_epochs`` and the training phase the rest. The 5 % kept
back is for what an epoch does besides its steps (the checkpoint it writes; the data loader's
share is in the timed steps) and the step's second compilation; a machine whose speed drifts
after the timing, or a per-epoch test (``test_each_epoch``), is not covered. Nothing of the
training depends on the timing but ``n_epochs``: the run then trains exactly as one given
that ``n_epochs``, bit for bit, and a resumed run takes the ``n_epochs`` its checkpoint holds
(it is not timed again). The estimate (step seconds, epoch seconds, epochs) goes in
results.json beside the run's real ``train_seconds``. It costs one more compilation (the
schedule, whose length is in the compiled step, is only known after the timing) and the timed
steps.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Iterator

import jax

from utils.experiments import console
from utils.experiments.keywords import KeywordError

BUDGET_SHARE = 0.95
WARMUP_STEPS = 2  # the first compiles; the second settles allocations
TIMED_STEPS = 20
CLOCK = time.perf_counter  # what time_steps reads (a test gives its own)


def time_steps(train_step, state, batches: Iterator, warmup: int = WARMUP_STEPS,
               timed: int = TIMED_STEPS) -> float:
    """Mean seconds a step, over ``timed`` steps dispatched as the training loop dispatches
    them (the batches streamed from the loader, each step queued after the one before, waited
    for at the end), after ``warmup`` steps each waited for; the state is consumed (the step
    may donate it). On the 2-core AMD EPYC, V's steps waited for one by one gave medians of
    0.64-0.78 s in three rounds where the loop's pace was 0.66-0.69 s."""
    for _, batch in zip(range(warmup), batches):
        state, metrics = train_step(state, batch.x, batch.y, batch.targets)
        jax.block_until_ready((state, metrics))
    started = CLOCK()
    n = 0
    for _, batch in zip(range(timed), batches):
        state, metrics = train_step(state, batch.x, batch.y, batch.targets)
        n += 1
    jax.block_until_ready((state, metrics))
    return (CLOCK() - started) / n


def epochs_for_budget(budget: float, step_seconds: float, batches_per_epoch: int,
                      config: dict) -> int:
    """The training phase's epochs that, with the annealing's, fill BUDGET_SHARE of the
    budget; refused when that is not even one epoch past the warm-up."""
    epoch_seconds = step_seconds * batches_per_epoch
    n_epochs = math.floor(BUDGET_SHARE * budget / epoch_seconds) - config["anneal_epochs"]
    needed = config["warmup_epochs"] + 1
    if n_epochs < needed:
        raise KeywordError(
            f"time_budget={budget:g} s affords {max(n_epochs, 0)} epochs of training here (an "
            f"epoch: about {epoch_seconds:.1f} s, {batches_per_epoch} steps of "
            f"{step_seconds:.3f} s) but the run needs at least {needed} (warmup_epochs="
            f"{config['warmup_epochs']}, then at least one more) besides anneal_epochs="
            f"{config['anneal_epochs']}: give a larger time_budget, or n_epochs instead")
    return n_epochs


def fit_to_budget(run) -> dict:
    """Time ``run``'s step as the docstring says, set ``run.config['n_epochs']`` and rebuild
    its steps and phases; returns the estimate recorded in the results."""
    config = run.config
    phase = run.phases[0]
    loader = run.loader(phase.split, training=True)
    state = run.fresh_state(phase, loader.n_batches)
    console.log(f"timing {TIMED_STEPS} training steps to fit time_budget="
                f"{config['time_budget']:g} s")
    stream = _epochs_of_batches(loader)
    try:
        step_seconds = time_steps(run.steps.train, state, stream)
    finally:
        stream.close()
    n_epochs = epochs_for_budget(config["time_budget"], step_seconds, loader.n_batches, config)
    run.set_n_epochs(n_epochs)
    estimate = {"time_budget": config["time_budget"], "budget_share": BUDGET_SHARE,
                "steps_timed": TIMED_STEPS, "step_seconds": round(step_seconds, 4),
                "epoch_seconds": round(step_seconds * loader.n_batches, 2),
                "n_epochs": n_epochs, "anneal_epochs": config["anneal_epochs"]}
    console.log(f"time_budget={config['time_budget']:g} s: a step takes {step_seconds:.3f} s "
                f"(mean of {TIMED_STEPS}), an epoch of {loader.n_batches} steps about "
                f"{estimate['epoch_seconds']:.1f} s: n_epochs={n_epochs}"
                + (f" and anneal_epochs={config['anneal_epochs']}"
                   if config["anneal_epochs"] else "")
                + (" (each epoch also tests, which is not timed here: give "
                   "test_each_epoch=False for a run that keeps to its budget)"
                   if config["test_each_epoch"] else ""))
    return estimate


def _epochs_of_batches(loader):
    """The loader's batches, epoch 0's first (as the training will read them), then the next
    epochs' for a split of fewer batches than the timing takes."""
    for epoch in itertools.count():
        stream = loader.batches(epoch)
        try:
            yield from stream
        finally:
            stream.close()
