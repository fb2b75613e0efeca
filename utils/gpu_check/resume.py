"""A short launcher run stopped after its first epoch and resumed, against the same run left
uninterrupted, on JAX's default backend.

Both runs train the check network (``utils.gpu_check.network``) on the built-in sample with
the thesis's methodology (entropy-point search, retraining, annealing, the augmented test).
The interrupted one is asked to stop, as Ctrl-C asks, at the first training step after its
first epoch (a checkpoint mid-epoch, or in the retraining when the search has one epoch),
then resumed with ``resume=True`` as the launcher's users do. The figure is how far its
final model lies from the uninterrupted run's: bit for bit, or the largest difference
relative to each array's largest value, within the tolerance asked for (0: bit for bit).
On a GPU that takes XLA's deterministic mode (``--xla_gpu_deterministic_ops=true``, set by
``python -m utils.gpu_check``): otherwise reductions with atomics and autotuned
convolution algorithms may differ from run to run.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import jax
import numpy as np

from loaders.sample import ensure_sample_dataset
from run_experiment import run_experiment
from utils.experiments.experiment import Experiment, RunStopped
from utils.experiments.keywords import resolve
from utils.gpu_check.network import LAUNCHER_NAME
from utils.gpu_check.primitives import Result, relative_difference
from utils.models import model_io

STOPPER = "the GPU check"  # named as the signal would be in the launcher's message


def run_config(folder: Path, dataset: Path, name: str, epochs: int) -> dict:
    return dict(network=LAUNCHER_NAME, dataset=str(dataset), savename=str(folder / name),
                registry=str(folder / "experiments.csv"), n_epochs=epochs, anneal_epochs=1,
                batch_size=50, n_hidden=[16], learning_rate=0.05, bn_batches=3,
                progress=False, seed=25)


def stop_after_first_epoch(config: dict) -> str:
    """Run ``config`` until the first training step after its first epoch, then stop it as
    Ctrl-C would (a checkpoint is written); the launcher's message."""
    experiment = Experiment(resolve(config))
    train = experiment.steps.train

    def train_then_stop(state, x, y, targets=None):
        progress = experiment.progress
        if progress.epoch >= 1 or progress.phase_index > 0:
            experiment.stop.requested = STOPPER
        return train(state, x, y, targets)

    experiment.steps.train = train_then_stop
    try:
        experiment.run()
    except RunStopped as stopped:
        return str(stopped)
    raise RuntimeError("the run ended without being stopped")


def final_model(run_dir: str):
    header, trees = model_io.load(Path(run_dir), model_io.MODEL_FORMAT)
    return header["results"], (trees["params"], trees["bn_state"])


def compare(resumed, reference, tolerance: float) -> Result:
    (results, trees), (reference_results, reference_trees) = resumed, reference
    leaves, expected = jax.tree_util.tree_leaves(trees), jax.tree_util.tree_leaves(
        reference_trees)
    same = len(leaves) == len(expected) and all(
        np.array_equal(a, b) for a, b in zip(leaves, expected))
    errors = (100 * results["test_error"], 100 * reference_results["test_error"])
    if same:
        return Result("launcher: stopped after epoch 1, resumed = uninterrupted", True,
                      f"bit for bit ({len(leaves)} arrays, "
                      f"{sum(np.size(a) for a in leaves):,} values); test error "
                      f"{errors[0]:.2f} % both")
    difference = relative_difference(leaves, expected)
    return Result("launcher: stopped after epoch 1, resumed = uninterrupted",
                  difference <= tolerance,
                  f"not bit for bit: largest relative difference {difference:.1e} "
                  f"(tolerance {tolerance:g}); test error {errors[0]:.2f} % resumed, "
                  f"{errors[1]:.2f} % uninterrupted")


def run_check(work: Path, epochs: int, tolerance: float) -> list[Result]:
    """The two runs in ``work`` (the launcher's output kept out of the check's lines)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        dataset = ensure_sample_dataset("mirror", folder=work)
        reference = run_config(work, dataset, "uninterrupted", epochs)
        run_experiment(**reference)
        interrupted = run_config(work, dataset, "interrupted", epochs)
        message = stop_after_first_epoch(interrupted)
        checkpoint = model_io.load(Path(interrupted["savename"]),
                                   model_io.CHECKPOINT_FORMAT)[0]["progress"]
        run_experiment(**interrupted, resume=True)
    where = f"phase {checkpoint['phase_index'] + 1}, epoch {checkpoint['epoch'] + 1}, batch " \
            f"{checkpoint['batch']}"
    stopped = Result("launcher: stop request writes a checkpoint",
                     message.startswith(f"stopped by {STOPPER}") and checkpoint["batch"] > 0,
                     f"checkpoint at {where}")
    return [stopped, compare(final_model(interrupted["savename"]),
                             final_model(reference["savename"]), tolerance)]
