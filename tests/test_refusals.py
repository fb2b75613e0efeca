"""The failures people hit end in one sentence (what happened, what is safe, what to do) and
an exit status, never a traceback: the issue's list, probe by probe."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import h5py
import pytest
from launcher_support import PROJECT, nan_cost, quick_config, sabotage_train_step
from test_registry import dead_pid
from test_reliability import arguments, stopped_run
from test_resume import sample  # noqa: F401 - the module-scoped built-in sample fixture
from test_resume import command, environment

import run_experiment as launcher
from loaders import build_dataset
from loaders.sample import SAMPLE_CSV
from utils.experiments import experiment as run
from utils.experiments.keywords import resolve
from utils.experiments.signals import STARTING


def refusal(capsys, config: dict, *extra: str) -> str:
    """What the launcher prints when it refuses ``config`` (exit status 2, no traceback)."""
    assert launcher.main(arguments(config) + list(extra)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err[len("error: "):-1]


def damaged_copy(sample, tmp_path, change) -> str:
    path = tmp_path / "damaged.h5"
    shutil.copy(sample, path)
    with h5py.File(path, "r+") as file:
        change(file)
    return str(path)


def test_a_split_without_labels_is_named(sample, tmp_path, capsys):
    dataset = damaged_copy(sample, tmp_path, lambda f: f["test"].pop("labels"))
    assert refusal(capsys, quick_config(tmp_path, dataset)) == (
        f"{dataset}: split 'test' has no labels: the file is incomplete or was not written by "
        f"loaders.build_dataset; rebuild it with python -m loaders.build_dataset")
    assert not (tmp_path / "run").exists()


def test_a_label_outside_the_files_classes_is_refused_when_the_dataset_is_opened(
        sample, tmp_path, capsys):
    def label_nine(file):
        labels = file["train/labels"][...]
        labels[17] = 9
        file["train/labels"][...] = labels

    dataset = damaged_copy(sample, tmp_path, label_nine)
    assert refusal(capsys, quick_config(tmp_path, dataset)) == (
        f"{dataset}: split 'train', row 17: label 9, but the file's class_names has 7 classes, "
        f"so labels must be 0-6 (1 row is not); rebuild it with python -m "
        f"loaders.build_dataset")


@pytest.mark.parametrize("given,message", [
    (["learning_rate=1e309"], "learning_rate=inf: numbers must be finite (a literal beyond "
                              "1.8e308, such as 1e309, reads as inf)"),
    (["optimizer=momentum", "optimizer_options={'momentum': 2}"],
     "optimizer_options: momentum must be a number in [0, 1), got 2"),
    (["optimizer=adam", "optimizer_options={'eps': -1e-8}"],
     "optimizer_options: eps must be a number > 0, got -1e-08"),
    (["lr_schedule=step", "lr_schedule_options={'drop_every': 0}"],
     "lr_schedule_options: drop_every must be a whole number >= 1, got 0"),
    (["n_epochs=3", "n_epochs=4"],
     "n_epochs is given twice (the second time as 'n_epochs=4'): give each keyword once"),
])
def test_impossible_values_and_repeated_keywords_are_refused(sample, tmp_path, capsys, given,
                                                             message):
    config = {k: v for k, v in quick_config(tmp_path, sample).items()
              if k not in ("learning_rate", "n_epochs")}
    assert refusal(capsys, config, *given) == message


def test_a_savename_that_is_a_file_is_refused_and_the_file_kept(sample, tmp_path, capsys):
    before = sample.read_bytes()
    assert refusal(capsys, quick_config(tmp_path, sample, savename=str(sample))) == (
        f"savename={str(sample)!r} is a file, not a folder: give the run a folder of its own")
    assert sample.read_bytes() == before


def test_a_build_never_replaces_its_own_source(tmp_path, capsys):
    source = tmp_path / "fer2013.csv.gz"
    shutil.copy(SAMPLE_CSV, source)
    os.link(source, tmp_path / "linked.h5")
    before = source.read_bytes()
    for out in (source, tmp_path / "linked.h5", f"{tmp_path}/./fer2013.csv.gz"):
        assert build_dataset.main([str(source), "--variant", "raw", "--out", str(out),
                                   "--overwrite", "--quiet"]) == 2
        assert capsys.readouterr().err == (
            f"error: {out}: is the build's own input {source}; writing it would replace what "
            f"the dataset is built from; give --out another file name\n".replace(
                f"{tmp_path}/./", f"{tmp_path}/"))
    assert source.read_bytes() == before


def test_partial_files_of_killed_writers_are_removed_when_the_run_resumes(sample, tmp_path,
                                                                           capsys):
    config = quick_config(tmp_path, sample, n_epochs=1, anneal_epochs=0)
    folder = stopped_run(config, stop_after=5)
    killed = folder / f".checkpoint.msgpack.tmp{dead_pid()}"
    killed.write_bytes(b"half a checkpoint")
    alive = folder / f".notes.txt.tmp{os.getpid()}"  # a live writer's: left alone
    alive.write_bytes(b"")
    assert launcher.main(arguments({**config, "resume": True})) == 0
    assert f"note: removed {killed}, a partial file left by a stopped writer" in \
        capsys.readouterr().out
    assert not killed.exists() and alive.exists()


def test_a_non_finite_cost_before_any_checkpoint_says_there_is_none(sample, tmp_path):
    experiment = run.Experiment(resolve(quick_config(tmp_path, sample)))
    sabotage_train_step(experiment, 1, nan_cost)
    with pytest.raises(run.NonFiniteCost, match=r"became nan in phase search, epoch 1, batch 1: "
                                                r"stopping; no checkpoint had been written yet\. "
                                                r"A lower learning_rate"):
        experiment.run()
    assert not (tmp_path / "run").exists()  # nothing written: not even an empty folder left


@pytest.mark.parametrize("delay", [0.3, 1.0, 1.7])
def test_ctrl_c_in_the_launchers_first_seconds_is_one_sentence_and_status_130(
        sample, tmp_path, delay):
    process = subprocess.Popen(command(quick_config(tmp_path, sample)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment(), cwd=PROJECT)
    time.sleep(delay)  # while JAX loads, the dataset is checked, the network is built...
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err  # never 139 (a crash at exit) nor a traceback
    assert "Traceback" not in err and "Fatal Python error" not in err
    assert err.strip() == STARTING or err.strip().startswith(
        ("stopped at once (Ctrl-C): ", "stopped by SIGINT in phase search")), err
