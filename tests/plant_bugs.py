"""Plant realistic bugs in the code, one at a time, and report which ones the tests let through.

    python tests/plant_bugs.py              # every bug below, each against its test files
    python tests/plant_bugs.py --list       # the bugs only
    python tests/plant_bugs.py ema-swapped residual-late-shortcut

Each bug is a one-line change a person could plausibly make (a swapped argument, a term in the
wrong place, an off-by-one), written as (file, the exact text, its replacement). The project is
copied to a temporary folder, the bug planted there, and the named test files run with
``pytest -x``; a bug is *caught* when a test fails (any other failure, as a collection error,
is reported as *not run*). A bug whose text is no longer in the file is reported as *stale*
(the code moved: update the entry). Exit status 1 when any bug is missed, stale or not run.
Not a test itself (its name does not start with test_): it runs the suite many times.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

PROJECT = Path(__file__).resolve().parent.parent


class Bug(NamedTuple):
    name: str
    file: str
    text: str
    replacement: str
    tests: tuple  # test files that should catch it


BUGS = [
    # The layout: a module of the layer importing a room above it, lazily
    Bug("layer-imports-the-run", "utils/nn/network.py",
        '        """(params, state) for this network; the same key always gives the same values."""',
        '        """(params, state) for this network; the same key always gives the same values."""\n'
        "        from utils.experiments import console  # noqa: F401", ("tests/test_layout.py",)),
    Bug("residual-late-shortcut", "convnets/layers.py", "y = activation(y + shortcut)",
        "y = activation(y) + shortcut", ("tests/test_blocks.py",)),
    Bug("residual-no-final-activation", "convnets/layers.py", "y = activation(y + shortcut)",
        "y = y + shortcut", ("tests/test_blocks.py",)),
    Bug("bn-eval-epsilon-outside-root", "utils/rna.py",
        'scale = params["gamma"] * lax.rsqrt(state["var"] + eps)',
        'scale = params["gamma"] / (jnp.sqrt(state["var"]) + eps)', ("tests/test_blocks.py",)),
    Bug("ema-swapped", "utils/training/steps.py",
        "rna.ema_statistics(state.bn_state, batch_states, self.bn_momentum)",
        "rna.ema_statistics(batch_states, state.bn_state, self.bn_momentum)",
        ("tests/test_blocks.py",)),
    Bug("anneal-data-order-restarts", "utils/experiments/methodology.py",
        "    while run_phases[index].continues_data_order and index > 0:",
        "    while False:", ("tests/test_launcher.py",)),
    Bug("dropout-keep-probability", "utils/rna.py", "keep = 1.0 - p", "keep = p",
        ("tests/test_rna.py",)),
    Bug("population-variance-unbiased-factor-dropped", "utils/rna.py",
        'return {"mean": mean, "var": var * (m / max(m - 1, 1))}',
        'return {"mean": mean, "var": var}', ("tests/test_rna.py",)),
    Bug("glorot-fan-out-not-pooled", "utils/rna.py",
        "return c_in * kernel * kernel, c_out * kernel * kernel / pool_area",
        "return c_in * kernel * kernel, c_out * kernel * kernel", ("tests/test_rna.py",)),
    Bug("entropy-point-keeps-the-worst", "utils/experiments/methodology.py",
        "return best is None or row[CRITERIA[criterion][0]] < best[\"value\"]",
        "return best is None or row[CRITERIA[criterion][0]] > best[\"value\"]",
        ("tests/test_launcher.py",)),
    Bug("retrain-continues-the-search", "utils/experiments/methodology.py",
        "split=\"train\", epochs=entropy_point, fresh=True, key_stream=2,",
        "split=\"train\", epochs=entropy_point, fresh=False, key_stream=2,",
        ("tests/test_launcher.py",)),
    Bug("anneal-factor-ignored", "utils/experiments/methodology.py",
        "return lambda config, previous: previous * config[name]",
        "return lambda config, previous: previous", ("tests/test_launcher.py",)),
    Bug("augmented-test-averages-probabilities", "utils/training/views.py",
        "np.add.at(summed, source_index, logits)",
        "np.add.at(summed, source_index, np.exp(logits))", ("tests/test_launcher.py",)),
    Bug("step-key-ignores-the-step", "utils/training/steps.py",
        "key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)",
        "key = jax.random.wrap_key_data(state.key)", ("tests/test_rna.py", "tests/test_resume.py",
                                                       "tests/test_pinned_run.py")),
    Bug("l2-penalises-biases", "utils/rna.py",
        'return [leaf for path, leaf in leaves if getattr(path[-1], "key", None) == "w"]',
        'return [leaf for path, leaf in leaves]', ("tests/test_rna.py",)),
    # The CPU fast paths beside the thesis math
    Bug("patch-moments-unbiased-covariance", "utils/nn/cpu_batch_norm.py",
        "covariance = jnp.matmul(centred.T, centred) / m",
        "covariance = jnp.matmul(centred.T, centred) / (m - 1)", ("tests/test_rna_kernels.py",)),
    Bug("bfloat16-input-gradient-unflipped", "utils/nn/cpu_bfloat16.py",
        "dx = _bfloat16_conv_forward(g, input_gradient_filters(low), tap_matmuls)",
        "dx = _bfloat16_conv_forward(g, jnp.transpose(low, (0, 1, 3, 2)), tap_matmuls)",
        ("tests/test_rna_kernels.py",)),
    Bug("bfloat16-weight-gradient-in-bfloat16", "utils/nn/cpu_bfloat16.py",
        "return dx, dw.astype(w.dtype)", "return dx, dw.astype(x.dtype).astype(w.dtype)",
        ("tests/test_rna_kernels.py",)),
    # Online augmentation, targets, test views
    Bug("augment-flips-upside-down", "utils/training/online_augmentation.py",
        "return x[:, :, ::-1, :]",
        "return x[:, ::-1, :, :]", ("tests/test_online_augmentation.py",)),
    Bug("erase-probability-inverted", "utils/training/online_augmentation.py",
        "applied = jax.random.uniform(k_apply, (n,)) < probability",
        "applied = jax.random.uniform(k_apply, (n,)) > probability",
        ("tests/test_online_augmentation.py",)),
    Bug("label-smoothing-keeps-the-full-target", "utils/nn/losses.py",
        "return (1.0 - smoothing) * targets + smoothing / targets.shape[-1]",
        "return targets + smoothing / targets.shape[-1]", ("tests/test_objective.py",)),
    Bug("ten-crop-corner-off-by-one", "utils/training/views.py",
        "corners = ((0, 0), (0, margin_w), (margin_h, 0), (margin_h, margin_w))",
        "corners = ((0, 0), (0, margin_w), (margin_h, 0), (margin_h - 1, margin_w))",
        ("tests/test_online_augmentation.py",)),
    # FER+ labels
    Bug("ferplus-majority-accepts-a-tie", "loaders/ferplus.py",
        "has_majority = counts[rows, top] > 0.5 * counts.sum(axis=1)",
        "has_majority = counts[rows, top] >= 0.5 * counts.sum(axis=1)",
        ("tests/test_loaders_ferplus.py",)),
    # Recipes, class imbalance, TensorBoard
    Bug("recipe-dropout-from-the-first-layer-not-the-centre", "utils/experiments/recipes.py",
        "return [profile[(2 * i + 1) * m // (2 * n_conv)] for i in range(n_conv)]",
        "return [profile[i * m // n_conv] for i in range(n_conv)]", ("tests/test_recipes.py",)),
    Bug("balanced-weights-are-the-frequencies", "utils/training/objective.py",
        "return (counts.sum() / (len(counts) * counts)).tolist()",
        "return (len(counts) * counts / counts.sum()).tolist()", ("tests/test_imbalance.py",)),
    Bug("class-weights-averaged-over-the-weights", "utils/training/objective.py",
        "return losses.cross_entropy(logits, distribution * weights)",
        "return losses.cross_entropy(logits, distribution * weights) / jax.numpy.mean(weights)",
        ("tests/test_objective.py",)),
    Bug("sampler-streams-restart-every-epoch", "loaders/sampler.py",
        "used = (first - position + n_classes - 1) // n_classes", "used = 0",
        ("tests/test_imbalance.py",)),
    Bug("recall-over-every-split", "utils/evaluation/results.py",
        "n = np.bincount(labels[mask], minlength=len(class_names))",
        "n = np.bincount(labels, minlength=len(class_names))", ("tests/test_imbalance.py",)),
    Bug("event-files-of-a-killed-run-kept", "utils/experiments/event_log.py",
        "            path.unlink()", "            pass", ("tests/test_tensorboard.py",)),
    # Nothing lost
    Bug("registry-appends-without-the-lock", "utils/experiments/registry.py",
        "    with exclusive_lock(lock_path(path)):", "    if True:", ("tests/test_registry.py",)),
    Bug("checksum-not-verified", "utils/models/model_io.py",
        "        raise DamagedFile(path)  # checked before a byte of the contents is believed",
        "        pass", ("tests/test_reliability.py",)),
    # Distillation: the soft term's T^2, the soft targets' mixing, resume's teacher check
    Bug("distill-without-temperature-squared", "utils/training/distillation.py",
        "self.weight * self.temperature ** 2 * kl", "self.weight * kl",
        ("tests/test_distillation.py",)),
    Bug("distill-soft-targets-not-mixed", "utils/training/distillation.py",
        "        if objective.mixup or objective.cutmix:\n            # The same draws",
        "        if False:\n            # The same draws", ("tests/test_distillation.py",)),
    Bug("resume-accepts-other-teachers", "utils/experiments/teachers.py",
        "    if saved_sums == now_sums:", "    if True:", ("tests/test_resume.py",)),
    # The export: a view mirrored upside down; the app: a crop's region, the plain view
    Bug("export-mirror-flips-rows", "utils/export/views.py", "return lax.rev(x, (2,))",
        "return lax.rev(x, (1,))", ("tests/test_export_views.py",)),
    Bug("crop-region-width-height-swapped", "utils/predict/inputs.py",
        "regions = np.array([[width / 2, height / 2, width, height, 0.0]])",
        "regions = np.array([[width / 2, height / 2, height, width, 0.0]])",
        ("tests/test_predict_runs.py",)),
    Bug("views-plain-ignored", "utils/predict/cli.py",
        'return predict(args.input, model, args.out, finder=finder, augment=args.views != "plain",',
        "return predict(args.input, model, args.out, finder=finder, augment=True,",
        ("tests/test_predict_shipped.py",)),
    Bug("winograd-input-transform-sign", "utils/nn/winograd.py",
        "[0, -1, 1, 0], [0, 1, 0, -1]]", "[0, -1, 1, 0], [0, 1, 0, 1]]",
        ("tests/test_winograd.py",)),
    Bug("winograd-weight-gradient-cut-outputs-padded-first", "utils/nn/winograd.py",
        "jnp.pad(g, ((0, 0), (0, m * rows - h), (0, m * cols - width), (0, 0)))",
        "jnp.pad(g, ((0, 0), (m * rows - h, 0), (m * cols - width, 0), (0, 0)))",
        ("tests/test_winograd.py",)),
    # The outputs kept for a pooling that drops a ragged border
    Bug("kept-outputs-tiles-read-one-row-short", "utils/nn/winograd.py",
        "x = x[:, :m * rows + 1, :m * cols + 1]", "x = x[:, :m * rows, :m * cols]",
        ("tests/test_winograd.py",)),
    Bug("same-even-window-padded-first-at-the-top", "utils/nn/cpu_kernels.py",
        "return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)",
        "return (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2)", ("tests/test_rna.py",)),
    Bug("kept-outputs-in-training-too", "convnets/layers.py",
        "if pool and not train else None", "if pool else None", ("tests/test_rna.py",)),
    Bug("kept-outputs-gradient-of-the-cut-outputs-misplaced", "utils/nn/winograd.py",
        "g = jnp.pad(g, ((0, 0), (0, x.shape[1] - kept[0]), (0, x.shape[2] - kept[1]), (0, 0)))",
        "g = jnp.pad(g, ((0, 0), (x.shape[1] - kept[0], 0), (x.shape[2] - kept[1], 0), (0, 0)))",
        ("tests/test_rna.py",)),
    # The XLA kernels chosen by CPU kind
    Bug("ynn-matmuls-for-every-family-of-a-vendor", "utils/support/host_tuning.py",
        "measured in (None, family)", "measured in (None, family) or True",
        ("tests/test_precision.py",)),
    Bug("winograd-4x4-output-transform-sign", "utils/nn/winograd.py",
        "[0, 1, -1, 8, -8, 1]]", "[0, 1, -1, 8, 8, 1]]", ("tests/test_winograd.py",)),
    Bug("winograd-input-gradient-filters-unflipped", "utils/nn/cpu_kernels.py",
        "jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))", "jnp.transpose(w, (0, 1, 3, 2))",
        ("tests/test_winograd.py",)),
    Bug("weight-gradient-padding-at-the-wrong-end", "utils/nn/cpu_kernels.py",
        "return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)",
        "return (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2)",
        ("tests/test_rna_kernels.py",)),
    Bug("pooling-window-maxima-not-stored", "utils/nn/cpu_batch_norm.py",
        "return computed_apart(partial(_select_in_windows, size=size), x, scale)",
        "return _select_in_windows(x, scale, size)",
        ("tests/test_rna_kernels.py",)),
    Bug("inference-batch-counted-in-faces", "utils/evaluation/batching.py",
        "BATCH_ROWS // rows_per_image // SMALL_BATCH", "BATCH_ROWS // SMALL_BATCH",
        ("tests/test_predict_models.py",)),
    Bug("time-budget-resumed-run-timed-again", "utils/experiments/experiment.py",
        'elif self.config["time_budget"] is not None:',
        'if self.config["time_budget"] is not None:', ("tests/test_time_budget.py",)),
    Bug("time-budget-annealing-not-counted", "utils/experiments/time_budget.py",
        '/ epoch_seconds) - config["anneal_epochs"]', '/ epoch_seconds)',
        ("tests/test_time_budget.py",)),
    Bug("inference-rest-padded-to-a-large-batch-at-any-size", "utils/evaluation/batching.py",
        "if (n - full) * 2 > large:", "if n > full:", ("tests/test_predict_models.py",)),
    Bug("report-run-probabilities-in-reverse", "utils/predict/report.py",
        "np.concatenate([item.probabilities for item, _ in with_faces])",
        "np.concatenate([item.probabilities for item, _ in with_faces[::-1]])",
        ("tests/test_predict.py",)),
    Bug("folder-names-sorted-as-strings", "utils/predict/inputs.py",
        "key=lambda name: os.path.normcase(name).split(os.sep))", "key=os.path.normcase)",
        ("tests/test_predict_runs.py",)),
    Bug("model-loaded-before-the-first-images-are-read", "utils/predict/cli.py",
        "model = LoadingModel(lambda: load_model(args))", "model = load_model(args)",
        ("tests/test_predict_runs.py",)),
    Bug("model-load-begun-before-the-input-is-found-usable", "utils/predict/loading.py",
        "self._begun = threading.Lock()\n",
        "self._begun = threading.Lock()\n        self.begin()\n",
        ("tests/test_predict_runs.py",)),
    Bug("yunet-onnx-grid-rows-and-columns-swapped", "utils/predict/yunet_onnx.py",
        "grid = np.stack([cols, rows], axis=1)", "grid = np.stack([rows, cols], axis=1)",
        ("tests/test_predict_faces.py",)),
    Bug("crops-last-read-job-dropped", "utils/predict/pipeline.py",
        "for start in range(0, len(names), per_job))",
        "for start in range(0, len(names) - per_job + 1, per_job))", ("tests/test_predict.py",)),
    Bug("paired-variant-started-outside-its-setting", "utils/benchmark/paired.py",
        "with environment(setting):  # the process starts",
        "with environment({}):  # the process starts", ("tests/test_benchmark.py",)),
    Bug("peer-backward-read-as-a-forward", "utils/benchmark/peers/torch_profile.py",
        'operands = shapes[:2] if part == "forward" else shapes[1:3]',
        "operands = shapes[:2]", ("tests/test_benchmark.py",)),
    Bug("breakdown-conv-pieces-carried-to-the-next-layer", "utils/benchmark/breakdown.py",
        "layers.append((layer, forward, backward, ms))\n            forward, backward = 0.0, 0.0",
        "layers.append((layer, forward, backward, ms))", ("tests/test_benchmark.py",)),
    Bug("bfloat16-layer-in-float32-keeps-a-float32-output", "convnets/layers.py",
        "return y.astype(x.dtype), state", "return y, state", ("tests/test_precision.py",)),
    Bug("bfloat16-wide-layer-judged-by-one-side", "utils/nn/cpu_bfloat16.py",
        "and min(w.shape[2], w.shape[3]) >= TAP_MATMUL_MIN_CHANNELS)",
        "and max(w.shape[2], w.shape[3]) >= TAP_MATMUL_MIN_CHANNELS)", ("tests/test_precision.py",)),
    Bug("winograd-map-side-of-a-cpu-kind-ignored", "utils/nn/winograd.py",
        "and min(height, width) >= self.min_side)", ")", ("tests/test_winograd.py",)),
    Bug("load-check-traced-apart-from-the-call", "utils/evaluation/inference.py",
        "outputs = jax.eval_shape(self._on_plain, self.params, self.bn_state, batch)",
        "outputs = jax.eval_shape(lambda p, s, x: self.network.apply(p, s, self.online.plain("
        "scale_pixels(x)), train=False)[0], self.params, self.bn_state, batch)",
        ("tests/test_predict_models.py",)),
]


def project_copy(folder: Path) -> Path:
    """The files git tracks or would track (not ignored), copied into ``folder``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        source = PROJECT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def try_bug(bug: Bug, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="plant-") as temporary:
        root = project_copy(Path(temporary))
        target = root / bug.file
        text = target.read_text()
        if text.count(bug.text) != 1:
            return "stale"
        target.write_text(text.replace(bug.text, bug.replacement))
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0",
                                   "-p", "no:cacheprovider", *bug.tests], cwd=root,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "caught (timeout)"
        if done.returncode == 0:
            return "missed"
        # Caught only where a test failed: any other failure (no pytest, a collection or usage
        # error, no tests) says nothing about the bug.
        if done.returncode == 1 and re.search(r"\b\d+ failed\b", done.stdout):
            return "caught"
        return f"not run (exit {done.returncode})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bugs to plant (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and stop")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per bug")
    args = parser.parse_args(argv)
    chosen = [bug for bug in BUGS if not args.names or bug.name in args.names]
    unknown = set(args.names) - {bug.name for bug in BUGS}
    if unknown:
        print(f"unknown bug(s): {', '.join(sorted(unknown))}; --list shows them")
        return 2
    if args.list:
        for bug in chosen:
            print(f"{bug.name:45} {bug.file}")
        return 0
    outcomes = {}
    for bug in chosen:
        started = time.perf_counter()
        outcomes[bug.name] = try_bug(bug, args.timeout)
        print(f"{bug.name:45} {outcomes[bug.name]:17} {time.perf_counter() - started:6.1f} s",
              flush=True)
    bad = [name for name, outcome in outcomes.items() if not outcome.startswith("caught")]
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} caught"
          + (f"; let through, stale or not run: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
