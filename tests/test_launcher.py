"""The launcher: keywords, the methodology's phases, results, saved files, registry, failures."""
from __future__ import annotations

import csv
import itertools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from launcher_support import (build_public_private_dataset, nan_cost, quick_config,
                              sabotage_train_step)

import run_experiment as launcher
from utils.experiments import experiment as run
from utils.experiments import run_setup
from loaders.batches import BatchLoader
from loaders.hdf5 import read_split, read_test_aug_source_index
from loaders.sample import ensure_sample_dataset
from utils.models import model_io
from utils.experiments.registry import append_registry_row, csv_text
from utils.experiments.keywords import (KEYWORD_NAMES, KeywordError, help_text, parse_command_line,
                                        resolve)
from utils.models.networks import get_network
from utils.training.views import summed_view_logits


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def finished_run(sample, tmp_path_factory):
    """One complete run with validation, shared by the tests that inspect its outputs."""
    folder = tmp_path_factory.mktemp("finished")
    config = quick_config(folder, sample)
    experiment = run.Experiment(resolve(config))
    results = experiment.run()
    return folder, config, results, dict(experiment.steps.traces)


def scripted_validation(monkeypatch, values, criterion_index=0):
    """Make validation return scripted (cost, error) pairs, one per search epoch."""
    original = run.Experiment._evaluate
    calls = iter(values)

    def evaluate(self, split):
        return next(calls) if split == "val" else original(self, split)

    monkeypatch.setattr(run.Experiment, "_evaluate", evaluate)


# ---- keywords --------------------------------------------------------------------------------
def test_command_line_values_are_python_literals_or_bare_words():
    parsed = parse_command_line(["n_hidden=[1024,512]", "p_dropConv=[0.2,0.3,0.4,0.5]",
                                 "activation=relu", "network=A", "val=False",
                                 "dataset=datasets/x.h5", "learning_rate=1e-3"])
    assert parsed == {"n_hidden": [1024, 512], "p_dropConv": [0.2, 0.3, 0.4, 0.5],
                      "activation": "relu", "network": "A", "val": False,
                      "dataset": "datasets/x.h5", "learning_rate": 0.001}


def test_help_lists_every_keyword_with_its_default(capsys):
    assert launcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in KEYWORD_NAMES:
        assert f"  {name} " in out
    assert "(0.1; 0.002 on the built-in sample) initial learning rate" in out
    assert "(100) mini-batch size" in out
    assert help_text() in out


def test_the_built_in_sample_runs_fewer_epochs_unless_told_otherwise():
    on_sample, on_file = resolve({}), resolve({"dataset": "datasets/x.h5"})
    assert (on_sample["n_epochs"], on_sample["anneal_epochs"]) == (8, 3)
    assert (on_sample["network"], on_sample["augment"], on_sample["recipe"]) == (
        "S", "crop:4", "sample")
    assert (on_file["n_epochs"], on_file["anneal_epochs"]) == (10, 10)  # the thesis's
    assert (on_file["network"], on_file["augment"], on_file["recipe"]) == ("A", None, "thesis")
    assert resolve({"n_epochs": 3})["n_epochs"] == 3 and resolve({"n_epochs": 3})[
        "anneal_epochs"] == 3
    # The thesis's settings on the sample: one keyword.
    thesis_on_sample = resolve({"recipe": "thesis"})
    assert (thesis_on_sample["network"], thesis_on_sample["n_epochs"]) == ("A", 10)
    assert "(10; 8 on the built-in sample) epochs of the entropy-point search" in help_text()
    assert "  sample: network='S', optimizer='adam'" in help_text()


@pytest.mark.parametrize("keywords,message", [
    ({"learning_rat": 0.1}, r"unknown keyword 'learning_rat' \(did you mean 'learning_rate'\?\)"),
    ({"p_dropconv": [0.1]}, r"unknown keyword 'p_dropconv' \(did you mean 'p_dropConv'\?\)"),
    ({"learning_rate": -1}, r"learning_rate must be a number > 0, got -1"),
    ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
    ({"n_hidden": "big"}, r"n_hidden must be a list of positive layer sizes"),
    ({"optimizer": "adamm"}, r"optimizer must be one of .* got 'adamm' \(did you mean 'adam'\?\)"),
    ({"lr_schedule": "stepp"}, r"got 'stepp' \(did you mean 'step'\?\)"),
    ({"criterion": "loss"}, r"criterion must be one of 'entropy', 'error', got 'loss'"),
    ({"activation": "rellu"}, r"activation: unknown activation 'rellu' \(did you mean 'relu'\?\)"),
    ({"val": "yes"}, r"val must be True or False, got 'yes'"),
    ({"im_dim": [48]}, r"im_dim must be \[height, width\]"),
    ({"anneal_factor": 2}, r"anneal_factor must be a number in \(0, 1\], got 2"),
    ({"resume": True, "init_from": "x"}, r"resume=True continues a run; init_from starts"),
    ({"mixup": -1}, r"mixup must be a number >= 0, got -1"),
    ({"cutmix": "big"}, r"cutmix must be a number >= 0, got 'big'"),
    ({"label_smoothing": 1.5}, r"label_smoothing must be a number in \[0, 1\), got 1.5"),
    ({"weight_decay": -0.1}, r"weight_decay must be a number >= 0, got -0.1"),
    ({"warmup_epochs": 10, "n_epochs": 10}, r"warmup_epochs=10 \(given\) is not shorter than "
                                            r"the run, n_epochs=10 \(given\)"),
    ({"lr_schedule": "cosin"}, r"got 'cosin' \(did you mean 'cosine'\?\)"),
    ({"recipe": "thesys"}, r"recipe must be one of .* got 'thesys' \(did you mean 'thesis'\?\)"),
    ({"augment": "crop:-1"}, r"augment: crop must be a whole number of padding pixels"),
    ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\), got 1.0"),
    ({"ema_decay": 0.999, "bn_stats": "ema"}, r"ema_decay=0.999 \(given\) needs "
                                               r"bn_stats='population'"),
])
def test_impossible_keywords_are_refused(keywords, message):
    with pytest.raises(KeywordError, match=message):
        resolve(keywords)


@pytest.mark.parametrize("keywords,message", [
    ({"p_dropConv": [0.1, 0.2]}, r"p_dropConv=\[0.1, 0.2\] \(from the command line\) has 2 "
                                 r"values but network tiny_net:tiny \(from the command line\) "
                                 r"has 1 conv layers: give 1 value, or leave p_dropConv out"),
    ({"p_drop": 1.0}, r"p_drop must be a drop probability in \[0, 1\), got 1.0"),
    ({"im_dim": [42, 42]}, r"im_dim=\[42, 42\] but .*sample_mirror.h5 holds 48x48 images"),
    ({"network": "E"}, r"unknown network 'E'"),
    ({"batch_size": 5000}, r"batch_size=5000 is larger than the \d+ images of split 'train"),
    ({"optimizer_options": {"momentun": 0.9}, "optimizer": "momentum"},
     r"optimizer 'momentum' has no setting 'momentun' \(did you mean 'momentum'\?\)"),
    ({"dataset": "/nonexistent/x.h5"}, r"dataset='/nonexistent/x.h5': no such file"),
])
def test_configuration_is_refused_before_any_work(tmp_path, sample, capsys, keywords, message):
    config = {**quick_config(tmp_path, sample), **keywords}
    arguments = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]
    assert launcher.main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()  # nothing was started


# ---- the methodology's phases ----------------------------------------------------------------
def test_entropy_point_retraining_and_annealing_follow_a_scripted_validation(
        tmp_path, sample, monkeypatch):
    scripted_validation(monkeypatch, [(1.5, 0.6), (1.2, 0.5), (1.0, 0.55), (1.1, 0.4),
                                      (1.3, 0.45)])
    results = launcher.run_experiment(**quick_config(tmp_path, sample, n_epochs=5,
                                                     anneal_epochs=2, test_each_epoch=False))
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    phases = [row["phase"] for row in history]
    assert phases == ["search"] * 5 + ["retrain"] * 3 + ["anneal"] * 2
    assert results["entropy_epoch"] == 3 and results["best_val_cost"] == 1.0
    assert results["epochs"] == {"search": 5, "retrain": 3, "anneal": 2}
    rates = [float(row["learning_rate"]) for row in history]
    assert rates[:8] == pytest.approx([0.05] * 8)
    assert rates[8:] == pytest.approx([0.005] * 2)  # annealing at lr/10
    assert [int(row["epoch"]) for row in history] == [1, 2, 3, 4, 5, 1, 2, 3, 1, 2]


def test_each_phase_reads_the_data_epochs_the_methodology_gives_it(tmp_path, sample,
                                                                   monkeypatch):
    asked = []
    original = BatchLoader.batches

    def batches(self, epoch, start_batch=0):
        if self.shuffle:  # training loaders (evaluation reads in file order)
            asked.append((self.split, epoch))
        return original(self, epoch, start_batch)

    monkeypatch.setattr(BatchLoader, "batches", batches)
    scripted_validation(monkeypatch, [(1.5, 0.6), (1.0, 0.5), (1.2, 0.5)])  # entropy point: 2
    launcher.run_experiment(**quick_config(tmp_path, sample, n_epochs=3, anneal_epochs=2,
                                           test_each_epoch=False))
    offset = run.STATS_EPOCH_OFFSET
    # The retraining starts the data order again; the annealing continues the retraining's.
    assert [a for a in asked if a[1] < offset] == [
        ("train_noval", 0), ("train_noval", 1), ("train_noval", 2),
        ("train", 0), ("train", 1), ("train", 2), ("train", 3)]
    # BN population statistics: after each search epoch (for validation), then for the test
    # (data epoch `offset`), each from an order no training epoch uses.
    assert [(split, epoch - offset) for split, epoch in asked if epoch >= offset] == [
        ("train_noval", 0), ("train_noval", 1), ("train_noval", 2), ("train", offset)]


def test_error_criterion_and_patience(tmp_path, sample, monkeypatch):
    scripted_validation(monkeypatch, [(1.5, 0.6), (1.2, 0.5), (1.0, 0.55), (1.1, 0.4),
                                      (1.3, 0.45), (1.4, 0.5), (1.5, 0.5)])
    results = launcher.run_experiment(**quick_config(
        tmp_path, sample, n_epochs=7, criterion="error", patience=2, anneal_epochs=0,
        test_each_epoch=False))
    # Minimum error at epoch 4; epochs 5 and 6 do not improve on it, so the search stops.
    assert results["entropy_epoch"] == 4
    assert results["epochs"] == {"search": 6, "retrain": 4}


def test_without_validation_trains_n_epochs_then_anneals(tmp_path, sample):
    results = launcher.run_experiment(**quick_config(tmp_path, sample, val=False, n_epochs=2,
                                                     anneal_epochs=1))
    assert results["epochs"] == {"train": 2, "anneal": 1}
    assert results["entropy_epoch"] is None


def test_plateau_schedule_reduces_on_validation_and_retraining_replays_it(
        tmp_path, sample, monkeypatch):
    scripted_validation(monkeypatch, [(1.0, 0.5), (1.0, 0.5), (1.0, 0.5), (0.9, 0.5)])
    launcher.run_experiment(**quick_config(
        tmp_path, sample, n_epochs=4, anneal_epochs=0, lr_schedule="plateau",
        lr_schedule_options={"patience": 1, "factor": 0.5}, test_each_epoch=False))
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    search = [float(r["learning_rate"]) for r in history if r["phase"] == "search"]
    retrain = [float(r["learning_rate"]) for r in history if r["phase"] == "retrain"]
    # Epochs 2 and 3 fail to improve: the rate halves after each (patience 1).
    assert search == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    assert retrain == pytest.approx(search)


# ---- results ----------------------------------------------------------------------------------
def test_augmented_test_sums_pre_softmax_outputs_over_variants():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 7))
    source = rng.permutation(np.repeat(np.arange(4), 3))
    expected = np.zeros((4, 7))
    for row, src in enumerate(source):
        expected[src] += logits[row]
    np.testing.assert_allclose(summed_view_logits(logits, source, 4), expected)


def test_results_match_a_numpy_recomputation_from_the_saved_model(finished_run):
    folder, config, results, _ = finished_run
    header, trees = model_io.load(folder / "run", model_io.MODEL_FORMAT)
    net = get_network(config["network"], **header["network_options"])
    params, bn_state = net.init(jax.random.key(0))
    params = model_io.restore_into(params, trees["params"], "model", "params")
    bn_state = model_io.restore_into(bn_state, trees["bn_state"], "model", "bn_state")
    x_test, y_test = read_split(config["dataset"], "test")
    x_aug, _ = read_split(config["dataset"], "test_aug")
    source = read_test_aug_source_index(config["dataset"])

    def logits_of(images):
        x = jnp.asarray(images, jnp.float32)[..., None] * np.float32(1 / 255)
        return np.asarray(net.apply(params, bn_state, x, train=False)[0], np.float64)

    plain = logits_of(x_test)
    assert results["test_error"] == pytest.approx(np.mean(plain.argmax(1) != y_test))
    aug = logits_of(x_aug)
    summed = np.stack([aug[source == i].sum(axis=0) for i in range(len(y_test))])
    assert results["aug_test_error"] == pytest.approx(np.mean(summed.argmax(1) != y_test))
    assert len(source) == 2 * len(y_test)  # mirror: two variants per test image


def test_public_and_private_errors_are_reported_separately(tmp_path):
    dataset = build_public_private_dataset(tmp_path)
    results = launcher.run_experiment(**quick_config(tmp_path, dataset, n_epochs=1,
                                                     anneal_epochs=0, val=False))
    n_public, n_private = results["test_n_PublicTest"], results["test_n_PrivateTest"]
    assert n_public == 70 and n_private == 70
    for prefix in ("test", "aug_test"):
        combined = (n_public * results[f"{prefix}_error_PublicTest"]
                    + n_private * results[f"{prefix}_error_PrivateTest"]) / (n_public + n_private)
        assert results[f"{prefix}_error"] == pytest.approx(combined)


def test_saved_files(finished_run):
    folder, config, results, _ = finished_run
    run = folder / "run"
    for name in ("model.msgpack", "entropy_point.msgpack", "history.csv", "results.json"):
        assert (run / name).is_file()
    for name in ("cost.png", "confusion.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "checkpoint.msgpack").exists()  # finished: the model replaces it
    header, trees = model_io.load(run / "model.msgpack", model_io.MODEL_FORMAT)
    assert header["config"]["n_hidden"] == [8] and header["results"] == json.loads(
        json.dumps(results))
    assert len(header["history"]) == sum(results["epochs"].values())
    history = list(csv.DictReader(open(run / "history.csv")))
    assert len(history) == sum(results["epochs"].values())
    saved = json.loads((run / "results.json").read_text())
    assert saved["results"]["test_error"] == results["test_error"]
    assert np.asarray(results["confusion"]).sum() == results["test_n_PublicTest"]


def test_registry_gets_one_row_per_run_and_keeps_old_rows(finished_run, sample, tmp_path):
    folder, config, results, _ = finished_run
    registry = folder / "experiments.csv"
    rows = list(csv.DictReader(open(registry)))
    assert len(rows) == 1
    row = rows[0]
    for name in KEYWORD_NAMES:
        if name not in run_setup.RUN_MANAGEMENT:
            assert name in row
    assert float(row["test_error"]) == pytest.approx(results["test_error"])
    assert row["code_version"] and row["finished"]
    # A second run appends; the first row stays as it was.
    second = quick_config(tmp_path, sample, val=False, n_epochs=1, anneal_epochs=0,
                          registry=str(registry))
    launcher.run_experiment(**second)
    rows_after = list(csv.DictReader(open(registry)))
    assert len(rows_after) == 2 and rows_after[0] == row


def test_results_model_files_and_registry_row_name_the_devices_trained_on(finished_run,
                                                                         tmp_path):
    folder, _, results, _ = finished_run
    expected = {"device_platform": "cpu", "device_kind": jax.devices()[0].device_kind,
                "device_count": jax.device_count()}
    assert {k: results[k] for k in expected} == expected
    saved = json.loads((folder / "run" / "results.json").read_text())["results"]
    assert {k: saved[k] for k in expected} == expected
    for name in ("model.msgpack", "entropy_point.msgpack"):
        header, _ = model_io.load(folder / "run" / name, model_io.MODEL_FORMAT)
        assert {k: header[k] for k in expected} == expected
    row = next(csv.DictReader(open(folder / "experiments.csv")))
    assert {k: row[k] for k in expected} == {k: str(v) for k, v in expected.items()}
    # A registry written before these columns takes the row: they are added at the end, its
    # rows keep every cell and get empty device cells.
    old = tmp_path / "experiments.csv"
    old_row = {k: v for k, v in row.items() if k not in expected}
    old.write_text(csv_text(list(old_row), [old_row]))
    append_registry_row(old, row)
    rows = list(csv.DictReader(open(old)))
    assert list(rows[0])[-3:] == list(expected)
    assert rows == [{**old_row, **dict.fromkeys(expected, "")}, row]


# ---- run management ---------------------------------------------------------------------------
def test_an_existing_run_is_never_overwritten_silently(finished_run):
    folder, config, _, _ = finished_run
    before = (folder / "run" / "model.msgpack").read_bytes()
    with pytest.raises(KeywordError, match="already holds a finished run: pass resume=True"):
        launcher.run_experiment(**config)
    with pytest.raises(KeywordError, match="holds a finished run .* nothing to resume"):
        launcher.run_experiment(**{**config, "resume": True})
    assert (folder / "run" / "model.msgpack").read_bytes() == before


def test_init_from_starts_from_a_saved_model_and_refuses_another_architecture(finished_run,
                                                                              tmp_path):
    folder, config, _, _ = finished_run
    model = folder / "run" / "model.msgpack"
    _, trees = model_io.load(model, model_io.MODEL_FORMAT)
    experiment = run.Experiment(resolve({**config, "savename": str(tmp_path / "next"),
                                              "init_from": str(model)}))
    saved = jax.tree_util.tree_leaves(trees["params"])
    for got, want in zip(jax.tree_util.tree_leaves(experiment.initial[0]), saved):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(model_io.ModelFileError, match=r"params\['4'\]\['beta'\] has shape "
                                                      r"\(8,\) but the network expects \(16,\)"):
        run.Experiment(resolve({**config, "savename": str(tmp_path / "other"),
                                     "init_from": str(model), "n_hidden": [16]}))


def test_non_finite_cost_stops_and_keeps_the_last_good_checkpoint(tmp_path, sample):
    experiment = run.Experiment(resolve(quick_config(tmp_path, sample, n_epochs=3)))
    # The second epoch's 6th step (19 batches of 50 per epoch of train_noval).
    sabotage_train_step(experiment, 25, nan_cost)
    with pytest.raises(run.NonFiniteCost, match=r"became nan in phase search, epoch 2, "
                                                     r"batch 6: stopping"):
        experiment.run()
    header, _ = model_io.load(tmp_path / "run", model_io.CHECKPOINT_FORMAT)
    assert header["progress"]["epoch"] == 1 and header["progress"]["batch"] == 0


def test_the_whole_methodology_compiles_one_train_and_one_eval_step(finished_run):
    # Search, retraining and annealing share the train step; validation, the per-epoch and the
    # final tests share the eval step; BN population statistics have their own forward.
    *_, traces = finished_run
    assert traces == {"train": 1, "eval": 1, "batch_stats": 1}


def test_an_exception_saves_a_consistent_checkpoint_before_exiting(tmp_path, sample):
    experiment = run.Experiment(resolve(quick_config(tmp_path, sample, n_epochs=3)))

    def fail(*arguments):
        raise RuntimeError("disk on fire")

    sabotage_train_step(experiment, 25, fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        experiment.run()
    header, trees = model_io.load(tmp_path / "run", model_io.CHECKPOINT_FORMAT)
    progress = header["progress"]
    # 19 steps in epoch 1, then 5 of epoch 2 before the failing sixth.
    assert (progress["epoch"], progress["batch"], progress["sums"][2]) == (1, 5, 5)
    assert int(trees["train_state"]["step"]) == 24


def test_crop_to_trains_on_windows_and_tests_on_the_ten_crop(tmp_path, sample):
    results = launcher.run_experiment(**quick_config(
        tmp_path, sample, val=False, n_epochs=1, anneal_epochs=0, augment="crop_to:44,flip"))
    net, params, bn_state, header = model_io.load_model(tmp_path / "run")
    assert header["config"]["im_dim"] == [44, 44]  # the network's input: the window
    assert header["config"]["augment"] == "crop_to:44,flip"
    # The mirror variant's image + mirror, each in 5 windows (its mirrors are the variant's).
    x_aug, _ = read_split(header["config"]["dataset"], "test_aug")
    source = read_test_aug_source_index(header["config"]["dataset"])
    x_test, y_test = read_split(header["config"]["dataset"], "test")
    x = x_aug.astype(np.float32)[..., None] / 255
    windows = [x[:, 2:46, 2:46], x[:, :44, :44], x[:, :44, 4:], x[:, 4:, :44], x[:, 4:, 4:]]
    summed = np.zeros((len(y_test), 7))
    for window in windows:
        logits = np.asarray(net.apply(params, bn_state, jnp.asarray(window), train=False)[0])
        np.add.at(summed, source, logits)
    assert results["aug_test_error"] == pytest.approx(np.mean(summed.argmax(1) != y_test))
    plain = np.asarray(net.apply(params, bn_state, jnp.asarray(
        x_test.astype(np.float32)[:, 2:46, 2:46, None] / 255), train=False)[0])
    assert results["test_error"] == pytest.approx(np.mean(plain.argmax(1) != y_test))


def test_with_ema_decay_the_model_validated_tested_and_saved_is_the_moving_average(tmp_path,
                                                                                    sample):
    experiment = run.Experiment(resolve(quick_config(tmp_path, sample, ema_decay=0.9)))
    results = experiment.run()
    net, params, bn_state, header = model_io.load_model(tmp_path / "run")
    state = experiment.state
    for saved, average, raw in zip(*map(jax.tree_util.tree_leaves,
                                        (params, state.ema_params, state.params))):
        np.testing.assert_array_equal(saved, np.asarray(average))
        assert not np.array_equal(saved, np.asarray(raw))  # not the last step's weights
    # The saved BN statistics are the average's own, over the batches the final test reads
    # (data epoch STATS_EPOCH_OFFSET + STATS_EPOCH_OFFSET, bn_batches=3 of them).
    loader = experiment.loader("train", training=True)
    stats = experiment.steps.population_statistics(
        state.ema_params, bn_state,
        itertools.islice(loader.batches(2 * run_setup.STATS_EPOCH_OFFSET), 3))
    for got, want in zip(*map(jax.tree_util.tree_leaves, (bn_state, stats))):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
    x_test, y_test = read_split(header["config"]["dataset"], "test")
    logits = net.apply(params, bn_state, jnp.asarray(x_test[..., None] / 255, jnp.float32),
                       train=False)[0]
    assert results["test_error"] == pytest.approx(np.mean(np.argmax(logits, 1) != y_test))
