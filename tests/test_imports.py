"""Importing the product changes nothing in the process (environment, Ctrl-C handling); entry
points apply host tuning."""
import os
import subprocess
import sys

from launcher_support import PROJECT

PRODUCT_MODULES = ["utils", "utils.rna", "utils.training.steps", "utils.models.networks",
                   "utils.experiments.keywords", "utils.models.model_io",
                   "utils.experiments.records", "utils.predict", "utils.predict.cli",
                   "utils.benchmark", "convnets.networks", "mlp.networks", "loaders.batches",
                   "run_experiment", "utils.experiments.registry", "utils.support.safe_files",
                   "utils.experiments.run_folder", "utils.experiments.signals",
                   "loaders.integrity", "utils.evaluate", "utils.evaluation.inference",
                   "utils.sweep.cli", "utils.sweep.runner", "utils.runs.cli"]


def test_importing_the_product_leaves_xla_flags_and_the_environment_alone():
    # Third-party libraries set variables of their own on import (OpenCV, JAX): import them
    # first, so that what is compared is what our modules do.
    code = ("import os, json, signal, jax, cv2, h5py, optax, flax, matplotlib; "
            "before = dict(os.environ); ctrl_c = signal.getsignal(signal.SIGINT); "
            + "; ".join(f"import {m}" for m in PRODUCT_MODULES)
            + "; print(json.dumps([os.environ.get('XLA_FLAGS'), dict(os.environ) == before, "
              "signal.getsignal(signal.SIGINT) is ctrl_c]))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[null, true, true]"


def test_host_tuning_apply_sets_the_kernel_flag_once_and_can_be_declined():
    code = ("import os; from utils.support import host_tuning; a = host_tuning.apply(); "
            "b = host_tuning.apply(); print(repr(os.environ.get('XLA_FLAGS')), len(a) == len(b))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=PROJECT, env=env, timeout=120)
    declined = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=PROJECT, env=dict(env, FER_HOST_TUNING="0"), timeout=120)
    import jaxlib.version

    from utils.support import host_tuning

    if jaxlib.version.__version__.startswith("0.10."):
        assert tuned.stdout.split() == [repr(host_tuning.kernel_flag()), "True"]
        assert host_tuning.kernel_flag().startswith("--xla_cpu_experimental_ynn_fusion_type=")
    assert declined.stdout.split() == ["None", "True"]
