"""Data parallelism on 1, 2 and 4 CPU devices (forced with XLA_FLAGS in subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from launcher_support import PROJECT, TESTS, quick_config
from test_resume import assert_same_run, command, final_model, run_until

from loaders.sample import ensure_sample_dataset

FOUR_DEVICES = "--xla_force_host_platform_device_count=4"


def four_device_environment() -> dict:
    return dict(os.environ, XLA_FLAGS=FOUR_DEVICES,
                PYTHONPATH=os.pathsep.join([str(TESTS), str(PROJECT)]))


def test_training_gives_the_same_costs_and_parameters_on_1_2_and_4_devices():
    # Distilled too: the teacher's trees replicated, the batch (and its views) split.
    done = subprocess.run([sys.executable, str(TESTS / "parallel_worker.py")],
                          capture_output=True, text=True, env=four_device_environment(),
                          cwd=PROJECT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["n_devices"] == 4
    for devices in ("2", "4", "distilled 4"):
        assert report[devices]["replicated_on"] == int(devices[-1])
        for key in ("costs", "params", "stats", "logits"):
            assert report[devices][key] <= 1e-5, (devices, key, report[devices][key])
    assert report["refusal"] == ("batch_size=50 does not split evenly across 3 devices: use a "
                                 "multiple of 3 (e.g. 48)")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


def run_on_devices(config: dict) -> str:
    """A launcher run on the forced host devices, to the end; its output."""
    done = subprocess.run(command(config), capture_output=True, text=True,
                          env=four_device_environment(), cwd=PROJECT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stop_and_resume_on_devices(config: dict) -> None:
    """SIGTERM a run on the forced devices during its retraining, then resume it to the end."""
    run_until(config, lambda lines: lines[-1].startswith("epoch 1, train cost"), signal.SIGTERM,
              env=four_device_environment())
    assert "resuming" in run_on_devices({**config, "resume": True})


def test_launcher_on_four_devices_validates_tests_and_resumes(sample, tmp_path):
    settings = dict(n_epochs=2, anneal_epochs=1, batch_size=24, devices=4)
    reference = quick_config(tmp_path / "reference", sample, **settings)
    assert "devices: 4 x cpu" in run_on_devices(reference)
    results, _ = final_model(tmp_path / "reference" / "run")
    assert results["entropy_epoch"] in (1, 2) and results["aug_test_error"] is not None

    config = quick_config(tmp_path / "interrupted", sample, **settings)
    stop_and_resume_on_devices(config)
    assert_same_run(final_model(tmp_path / "interrupted" / "run"),
                    final_model(tmp_path / "reference" / "run"))


def test_a_batch_that_does_not_split_across_devices_is_refused(sample, tmp_path):
    config = quick_config(tmp_path, sample, devices=3, batch_size=50)
    done = subprocess.run(command(config), capture_output=True, text=True,
                          env=four_device_environment(), cwd=PROJECT, timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: batch_size=50 does not split evenly across 3 "
                                   "devices: use a multiple of 3 (e.g. 48)")
