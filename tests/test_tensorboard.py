"""TensorBoard event files: what a run writes, read back with tensorboard's event reader; the
files follow the checkpoint, so a run killed after writing points its checkpoint never saw
and then resumed has exactly one point per epoch (the kill in a real launcher subprocess is
in tests/test_resume.py)."""
import copy
import csv
import json

import cv2
import numpy as np
import pytest
from event_files import accumulator, assert_one_point_per_epoch, hparams_of, raw_points
from launcher_support import quick_config

import run_experiment as launcher
from loaders.sample import ensure_sample_dataset
from utils.experiments import methodology
from utils.experiments.event_log import EventLog, hparam_values, result_scalars
from utils.experiments.methodology import Progress

PHASES = methodology.phases({"val": True, "anneal_epochs": 2})


def row(phase, epoch, cost, val=None):
    return {"phase": phase, "epoch": epoch, "train_cost": cost, "train_error": cost / 4,
            "val_cost": val, "val_error": None if val is None else val / 4, "test_error": None,
            "learning_rate": 0.1, "epoch_seconds": 2.0}


def live_epoch(log, progress, new_row, walltime):
    """What the launcher does at an epoch's end."""
    progress.history.append(new_row)
    progress.epoch_walltimes.append(walltime)
    log.epoch(progress.history, walltime)


def test_a_restart_rewrites_the_checkpoints_points_and_drops_what_came_after(tmp_path):
    saved = Progress(history=[row("search", 1, 2.0, 1.9), row("search", 2, 1.8, 1.7)],
                     epoch_walltimes=[1000.0, 1010.0],
                     step_costs=[["search", 10, 2.1, 1001.0], ["search", 20, 1.9, 1005.0]])
    first = EventLog(tmp_path, PHASES, enabled=True)
    first.start(copy.deepcopy(saved))
    # Two more epochs and a step cost are written after the checkpoint, then the run is
    # killed: the next start only knows the checkpoint's two epochs.
    ahead = copy.deepcopy(saved)
    first.step_cost("search", 30, 1.7, 1012.0)
    live_epoch(first, ahead, row("search", 3, 1.6, 1.65), 1020.0)
    live_epoch(first, ahead, row("retrain", 1, 2.2), 1030.0)
    # On disk, as a killed run may have left them. Closed, not flushed: tensorboardX's
    # flush() writes out only what its thread has already taken from its queue.
    first.close()
    assert len(raw_points(tmp_path)["search/train_cost"]) == 3

    second = EventLog(tmp_path, PHASES, enabled=True)
    second.start(saved)
    live_epoch(second, saved, row("search", 3, 1.55, 1.6), 2000.0)
    live_epoch(second, saved, row("retrain", 1, 2.25), 2010.0)
    live_epoch(second, saved, row("retrain", 2, 2.0), 2020.0)
    live_epoch(second, saved, row("anneal", 1, 1.9), 2030.0)
    second.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    points = raw_points(tmp_path)
    assert points["search/train_cost"] == [(1, 2.0, 1000.0), (2, pytest.approx(1.8), 1010.0),
                                           (3, pytest.approx(1.55), 2000.0)]
    assert [p[:2] for p in points["search/step_cost"]] == [(10, pytest.approx(2.1)),
                                                          (20, pytest.approx(1.9))]
    # The annealing continues the retraining's curve: epoch 3 of the retrain training.
    assert [p[0] for p in points["retrain/train_cost"]] == [1, 2, 3]
    assert "anneal/train_cost" not in points and "retrain/val_cost" not in points
    assert [p[0] for p in points["search/val_error"]] == [1, 2, 3]
    assert_one_point_per_epoch(tmp_path, saved.history)


def test_without_tensorboard_a_run_leaves_no_event_files(tmp_path):
    EventLog(tmp_path, PHASES, enabled=True).start(Progress(history=[row("search", 1, 2.0)]))
    assert list(tmp_path.glob("events.out.tfevents.*"))
    log = EventLog(tmp_path, PHASES, enabled=False)
    log.start(Progress())
    log.epoch([row("search", 1, 2.0)], 1.0)
    log.close()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_hparams_and_result_scalars_are_what_tensorboard_takes():
    values = hparam_values({"n_hidden": [256], "network": "S", "val": False, "patience": None,
                            "learning_rate": 0.05, "optimizer_options": {"momentum": 0.9}})
    assert values == {"n_hidden": "[256]", "network": "S", "val": False, "patience": None,
                      "learning_rate": 0.05, "optimizer_options": '{"momentum": 0.9}'}
    scalars = result_scalars({"test_error": 0.5, "test_n_PublicTest": 10, "entropy_epoch": None,
                              "class_names": ["a", "b"], "per_class_recall": {
                                  "test": {"all": {"a": 0.25, "b": None}, "PrivateTest": None}}})
    assert scalars == {"results/test_error": 0.5, "recall/test_all/a": 0.25}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logged")
    sample = ensure_sample_dataset("mirror", folder=folder)
    config = quick_config(folder, sample, tensorboard_every=7)
    arguments = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]
    assert launcher.main(arguments) == 0
    return folder / "run"


def test_a_run_logs_every_epoch_every_nth_step_and_its_confusion_image(logged_run):
    history = list(csv.DictReader(open(logged_run / "history.csv")))
    assert [h["phase"] for h in history] == ["search", "search", "retrain", "retrain", "anneal"]
    assert_one_point_per_epoch(logged_run, history)
    points = raw_points(logged_run)
    for tag, n in [("search/epoch_seconds", 2), ("search/test_error", 2),
                   ("retrain/learning_rate", 3), ("retrain/test_error", 3)]:
        assert len(points[tag]) == n, tag
    assert [value for _, value, _ in points["retrain/learning_rate"]] == pytest.approx(
        [0.05, 0.05, 0.005])
    # 976 train_noval images in batches of 50: 19 steps an epoch; 1,120 train images: 22.
    assert [step for step, _, _ in points["search/step_cost"]] == [7, 14, 21, 28, 35]
    assert [step for step, _, _ in points["retrain/step_cost"]] == list(range(7, 67, 7))
    results = json.loads((logged_run / "results.json").read_text())["results"]
    assert points["results/aug_test_error"][0][1] == pytest.approx(results["aug_test_error"])
    recall = results["per_class_recall"]["aug_test"]["PublicTest"]["fear"]
    assert points["recall/aug_test_PublicTest/fear"][0][1] == pytest.approx(recall)
    image = accumulator(logged_run).Images("test/confusion")
    png = cv2.imread(str(logged_run / "confusion.png"))
    assert len(image) == 1 and (image[0].height, image[0].width) == png.shape[:2]
    shown = cv2.imdecode(np.frombuffer(image[0].encoded_image_string, np.uint8),
                         cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(shown, png)  # the same picture as confusion.png


def test_the_keywords_are_the_runs_hparams(logged_run):
    hparams = hparams_of(logged_run)
    assert hparams["network"] == "tiny_net:tiny" and hparams["batch_size"] == 50
    assert hparams["n_hidden"] == "[8]" and hparams["val"] is True
    assert "tensorboard_every" not in hparams and "resume" not in hparams  # run management
