"""python -m utils.gpu_check on the CPU (where these tests run): every check passes, with its
figure; the checks fail on a wrong primitive or a resumed model that differs; the XLA flag
and the refusals."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest
from launcher_support import PROJECT

from utils import rna
from utils.gpu_check import cli, primitives, resume
from utils.nn import cpu_kernels


def test_every_check_passes_on_the_cpu_with_its_figure():
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-m", "utils.gpu_check", "--epochs", "1"],
                          capture_output=True, text=True, env=env, cwd=PROJECT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("XLA_FLAGS: --xla_gpu_deterministic_ops=true")
    assert lines[1] == (f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; default backend "
                        f"cpu: 1 x {jax.devices()[0].device_kind}")
    checks = lines[2:-1]
    assert [line[:6] for line in checks] == ["PASS  "] * 13
    assert "dropout mask vs jax.random: 0 of 720 values differ (bit for bit expected)" in \
        done.stdout
    assert "launcher: stop request writes a checkpoint: checkpoint at phase 2, epoch 1, " \
           "batch 1" in done.stdout  # one search epoch: stopped in the retraining
    assert "launcher: stopped after epoch 1, resumed = uninterrupted: bit for bit (27 arrays" \
        in done.stdout
    assert "predict: faces found in a collage, probabilities written: 8 of 8 faces" in \
        done.stdout
    assert "the same label for 8 of 8 faces" in checks[-1]
    assert lines[-1] == "13 of 13 checks passed"


def failed_names(results) -> list[str]:
    return [result.name for result in results if not result.passed]


def test_a_wrong_convolution_or_random_draw_fails_its_check(monkeypatch):
    rng = np.random.default_rng(0)
    plain = rna.conv2d
    monkeypatch.setattr(rna, "conv2d", lambda x, w: plain(x, w[::-1]))  # kernel rows flipped
    assert failed_names(primitives.layer_checks(rng)) == [
        "conv2d 3x3 on one channel: the patch form", "conv2d 3x3 on 3 channels"]
    uniform = cpu_kernels.uniform
    monkeypatch.setattr(cpu_kernels, "uniform", lambda key, *args: uniform(
        jax.random.fold_in(key, 1), *args))
    results = primitives.random_checks(rng)
    assert failed_names(results) == ["dropout mask vs jax.random", "gaussian_noise vs jax.random"]
    assert results[1].figure.endswith(" of 720 values differ (bit for bit expected)")


def test_gradients_are_compared_at_the_scale_of_the_whole_tree():
    """A gradient of pure rounding noise (1e-7 where the others are 1e-1) differs by its own
    size between two sums: compared per leaf it looks wrong, at the tree's scale it is not;
    an error in a gradient of the usual size is still seen."""
    expected = {"w": np.array([0.3, -0.2], np.float32), "beta": np.array([1e-7], np.float32)}
    noise = {"w": expected["w"].copy(), "beta": np.array([-1e-7], np.float32)}
    wrong = {"w": np.array([0.3, -0.1], np.float32), "beta": expected["beta"].copy()}
    assert primitives.relative_difference(noise, expected) == pytest.approx(2.0)
    assert primitives.relative_difference_of_tree(noise, expected) == pytest.approx(
        2e-7 / 0.3, rel=1e-5)
    assert primitives.relative_difference_of_tree(wrong, expected) == pytest.approx(
        0.1 / 0.3, rel=1e-5)


def test_a_resumed_model_that_differs_passes_only_within_the_tolerance():
    leaves = [np.array([1.0, -2.0], np.float32), np.array([4.0], np.float32)]
    reference = ({"test_error": 0.5}, leaves)
    moved = ({"test_error": 0.25}, [leaves[0], np.array([4.0004], np.float32)])
    same = resume.compare(({"test_error": 0.5}, [a.copy() for a in leaves]), reference, 0.0)
    assert same.passed and same.figure == "bit for bit (2 arrays, 3 values); test error " \
                                          "50.00 % both"
    strict, loose = (resume.compare(moved, reference, tolerance) for tolerance in (0, 1e-3))
    assert not strict.passed and loose.passed
    assert loose.figure == ("not bit for bit: largest relative difference 1.0e-04 (tolerance "
                            "0.001); test error 25.00 % resumed, 50.00 % uninterrupted")


def test_the_deterministic_flag_is_added_unless_the_researcher_named_it(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert cli.deterministic_xla() == ("--xla_cpu_experimental_ynn_fusion_type= "
                                       "--xla_gpu_deterministic_ops=true")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
    assert cli.deterministic_xla() == "--xla_gpu_deterministic_ops=false"
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"


@pytest.mark.parametrize("arguments,message", [
    (["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (["--tolerance=-1e-6"], "--tolerance must be a relative difference of 0 (bit for bit) "
                               "or more, got -1e-06"),
    (["--tolerance", "nan"], "--tolerance must be a relative difference of 0 (bit for bit) "
                             "or more, got nan"),
])
def test_unusable_arguments_are_refused_in_one_sentence(arguments, message, capsys):
    assert cli.main(arguments) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""


def test_a_jax_platforms_without_the_cpu_is_refused_before_jax_starts(monkeypatch, capsys):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert cli.main([]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "error: JAX_PLATFORMS=cuda leaves out the CPU backend the checks compare with: unset "
        "it (JAX then picks the GPU as its default backend) or add cpu "
        "(JAX_PLATFORMS=cuda,cpu)\n")
    assert os.environ["XLA_FLAGS"] == ""  # refused before the flags are touched
