"""Interrupted runs resume bit for bit; device-resident and streamed data give the same run.

Each run is a real subprocess of the launcher, killed (SIGKILL: no chance to save) during the
entropy-point search, stopped (SIGTERM: checkpoint mid-epoch) during the retraining, and
resumed with the same command plus resume=True. Its TensorBoard event files then read back
(tensorboard's reader) with exactly one point per epoch, as the uninterrupted run's do. A
distilled run resumes the same way, and only with its own teachers' files.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from event_files import assert_one_point_per_epoch, raw_points
from launcher_support import PROJECT, TESTS, quick_config, train_teacher

from loaders.sample import ensure_sample_dataset
from utils.experiments.run_folder import RunFolder
from utils.models import model_io

# Long enough phases for a signal to land inside them: 39 batches per search epoch.
RUN = dict(n_epochs=3, anneal_epochs=1, batch_size=25, learning_rate=0.02)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


def command(config: dict) -> list[str]:
    return [sys.executable, str(PROJECT / "run_experiment.py")] + [
        f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]


def environment() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(PROJECT)]))
    env.pop("XLA_FLAGS", None)
    return env


def run_to_end(config: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command(config), capture_output=True, text=True, env=environment(),
                          cwd=PROJECT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_until(config: dict, trigger, signum, env=None) -> str:
    """Start a run, send ``signum`` once ``trigger(lines so far)`` holds; return its output."""
    process = subprocess.Popen(command(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env or environment(), cwd=PROJECT)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if trigger(lines):
                process.send_signal(signum)
                break
        rest, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + (rest or "")
    assert process.returncode != 0, output  # it was stopped, not finished
    return output


def final_model(run_dir):
    header, trees = model_io.load(run_dir, model_io.MODEL_FORMAT)
    return header["results"], jax.tree_util.tree_leaves((trees["params"], trees["bn_state"]))


def checkpoint_progress(run_dir) -> dict:
    header, _ = model_io.load(run_dir, model_io.CHECKPOINT_FORMAT)
    return header["progress"]


def assert_same_run(a, b):
    results_a, leaves_a = a
    results_b, leaves_b = b
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)  # bit for bit
    for key in ("test_error", "aug_test_error", "test_cost", "entropy_epoch", "best_val_cost"):
        assert results_a[key] == results_b[key], key


def test_killed_and_stopped_runs_resume_to_the_uninterrupted_result(sample, tmp_path):
    reference = quick_config(tmp_path / "reference", sample, **RUN)
    run_to_end(reference)
    expected = final_model(tmp_path / "reference" / "run")

    config = quick_config(tmp_path / "interrupted", sample, **RUN)
    # SIGKILL once search epoch 2 has been reported: the epoch-1 checkpoint (at least) exists.
    run_until(config, lambda lines: lines[-1].startswith("epoch 2, validation error"),
              signal.SIGKILL)
    progress = checkpoint_progress(tmp_path / "interrupted" / "run")
    assert progress["phase_index"] == 0 and progress["epoch"] >= 1  # inside the search

    # Resume, then SIGTERM during the retraining: a checkpoint is written mid-epoch.
    resumed = {**config, "resume": True}
    output = run_until(resumed, lambda lines: any(l.startswith("== retraining") for l in lines)
                       and lines[-1].startswith("epoch 1, train cost"), signal.SIGTERM)
    assert "resuming" in output and "stopped by SIGTERM in phase retrain" in output
    progress = checkpoint_progress(tmp_path / "interrupted" / "run")
    assert progress["phase_index"] == 1 and progress["batch"] > 0  # mid-epoch, retraining

    run_to_end(resumed)
    assert_same_run(final_model(tmp_path / "interrupted" / "run"), expected)
    assert_same_events(tmp_path / "interrupted" / "run", tmp_path / "reference" / "run")


def assert_same_events(resumed_dir, reference_dir):
    """One event file, one point per epoch and step, the same tags, steps and values (the
    model is bit for bit the same) as the uninterrupted run's."""
    header, _ = model_io.load(resumed_dir, model_io.MODEL_FORMAT)
    assert len(list(resumed_dir.glob("events.out.tfevents.*"))) == 1
    assert_one_point_per_epoch(resumed_dir, header["history"])
    resumed, reference = raw_points(resumed_dir), raw_points(reference_dir)
    assert sorted(resumed) == sorted(reference)
    for tag in reference:
        if "seconds" not in tag:  # times differ; everything else is the same run's
            assert [p[:2] for p in resumed[tag]] == [p[:2] for p in reference[tag]], tag


def test_device_resident_training_set_gives_the_same_run_as_streaming(sample, tmp_path):
    streamed = quick_config(tmp_path / "streamed", sample, **RUN, trainShared=False)
    shared = quick_config(tmp_path / "shared", sample, **RUN, trainShared=True)
    run_to_end(streamed)
    run_to_end(shared)
    assert_same_run(final_model(tmp_path / "shared" / "run"),
                    final_model(tmp_path / "streamed" / "run"))


def reference_and_killed_run(sample, tmp_path, keywords: dict):
    """(the uninterrupted run's final model, the configuration of the same run killed with
    SIGKILL in its second search epoch), for a run with these keywords."""
    run_to_end(quick_config(tmp_path / "reference", sample, **RUN, **keywords))
    config = quick_config(tmp_path / "interrupted", sample, **RUN, **keywords)
    run_until(config, lambda lines: lines[-1].startswith("epoch 2, validation error"),
              signal.SIGKILL)
    return final_model(tmp_path / "reference" / "run"), config


def test_a_run_with_every_modern_and_imbalance_keyword_resumes_bit_for_bit(sample, tmp_path):
    modern = dict(augment="rotate:10,scale:0.1,shift:1,crop:2,flip,brightness:0.1,contrast:0.1,"
                          "erase:0.5", mixup=0.2, cutmix=0.5, label_smoothing=0.1,
                  weight_decay=1e-3, lr_schedule="cosine", warmup_epochs=1, optimizer="nesterov",
                  ema_decay=0.95, class_weights="balanced", sampler="balanced")
    expected, config = reference_and_killed_run(sample, tmp_path, modern)
    run_to_end({**config, "resume": True})
    assert_same_run(final_model(tmp_path / "interrupted" / "run"), expected)
    assert_same_events(tmp_path / "interrupted" / "run", tmp_path / "reference" / "run")


def test_a_distilled_run_resumes_bit_for_bit_and_only_with_its_teachers(sample, tmp_path):
    teacher = train_teacher(tmp_path / "teacher", sample) / "model.msgpack"
    distil = dict(teacher=str(teacher), distill_weight=0.5, distill_temperature=3.0,
                  augment="rotate:10,crop_to:40,flip")
    expected, config = reference_and_killed_run(sample, tmp_path, distil)

    # Another teacher (the same network and weights, another file) is refused ...
    header, trees = model_io.load(teacher, model_io.MODEL_FORMAT)
    other = tmp_path / "other.msgpack"
    model_io.save(other, model_io.MODEL_FORMAT, {**header, "note": "another file"}, trees)
    refused = subprocess.run(command({**config, "resume": True, "teacher": str(other)}),
                             capture_output=True, text=True, env=environment(), cwd=PROJECT,
                             timeout=300)
    digest = {path: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
              for path in (teacher, other)}
    checkpoint = RunFolder(tmp_path / "interrupted" / "run").newest_checkpoint()
    assert refused.returncode == 2 and refused.stderr == (
        f"error: the teachers {other} (SHA-256 {digest[other]}...) are not those {checkpoint} "
        f"was trained with ({teacher} ({digest[teacher]}...)): resume with the run's teacher "
        f"files (the same contents, wherever they are now) or start a new run\n")
    # ... and the same teacher moved elsewhere is accepted: the run ends as the uninterrupted.
    moved = tmp_path / "moved" / "teacher.msgpack"
    moved.parent.mkdir()
    teacher.rename(moved)
    run_to_end({**config, "resume": True, "teacher": str(moved)})
    assert_same_run(final_model(tmp_path / "interrupted" / "run"), expected)
