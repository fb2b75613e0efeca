"""python -m utils.sweep and python -m utils.runs on a 2 x 2 grid of the tiny network.

The sweep is a real process whose runs are real launcher processes (two at a time) on the
built-in sample: it must leave one run folder and one registry row per grid point; stopped by
SIGTERM halfway and run again, it must end with the same rows and every model bit for bit as
the uninterrupted sweep's. A bad grid is refused before anything starts. The leaderboard's
figures are checked against each run's results.json.
"""
from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from launcher_support import PROJECT
from soak import registry_rows
from test_resume import assert_same_run, checkpoint_progress, environment, final_model

from loaders.sample import ensure_sample_dataset
from utils.experiments.keywords import parse_command_line
from utils.models import model_io
from utils.runs import cli as runs_cli
from utils.runs.collect import runs_of
from utils.runs.table import leaderboard
from utils.sweep import cli as sweep_cli
from utils.sweep import runner
from utils.sweep.grid import GridRun

# Two learning rates x two seeds; 39 batches a search epoch, so a signal lands inside a run.
GRID = ["--vary", "learning_rate=[0.02, 0.05]", "--seeds", "2", "--parallel", "2"]
NAMES = ["learning_rate=0.02,seed=0", "learning_rate=0.05,seed=0",
         "learning_rate=0.02,seed=1", "learning_rate=0.05,seed=1"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


def fixed_keywords(sample: Path, **changes) -> list[str]:
    keywords = dict(network="tiny_net:tiny", dataset=str(sample), batch_size=25, n_hidden=[8],
                    n_epochs=2, anneal_epochs=1, bn_batches=3, progress=False)
    keywords.update(changes)
    return [f"{k}={v}" for k, v in keywords.items()]


def sweep_command(sample: Path, out: Path, *extra: str, **changes) -> list[str]:
    return [sys.executable, "-m", "utils.sweep", *fixed_keywords(sample, **changes), *GRID,
            "--out", str(out), *extra]


def sweep(sample: Path, out: Path, *extra: str, **changes) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(sample, out, *extra, **changes), capture_output=True,
                          text=True, env=environment(), cwd=PROJECT, timeout=600)


@pytest.fixture(scope="module")
def reference(sample, tmp_path_factory):
    """The grid swept once, uninterrupted: its folder and its output."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    done = sweep(sample, out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def rows_per_run(out: Path) -> dict[str, int]:
    rows, well_formed = registry_rows(out / "experiments.csv")
    assert well_formed
    return {name: sum(row["savename"] == str(out / name) for row in rows) for name in NAMES} | {
        "rows": len(rows)}


def test_a_2x2_sweep_leaves_4_run_folders_and_4_registry_rows(reference):
    out, output = reference
    assert sorted(p.name for p in out.iterdir() if (p / "results.json").exists()) == sorted(NAMES)
    assert rows_per_run(out) == {**{name: 1 for name in NAMES}, "rows": 4}
    assert output.count(": started") == 4 and output.count(": finished in") == 4
    for name in NAMES:
        assert (out / name / "model.msgpack").exists()
        assert not (out / name / "checkpoint.msgpack").exists()
        assert (out / "logs" / f"{name}.log").read_text().count("the sweep starts the run") == 1
    assert not list(out.rglob("*.lock"))


def in_search(run_folder: Path) -> bool:
    """The run holds a checkpoint of its search: several epochs from its end."""
    try:
        return checkpoint_progress(run_folder)["phase_index"] == 0
    except (model_io.ModelFileError, OSError):  # none yet, or replaced while read
        return False


def wait_for_half(out: Path, process: subprocess.Popen) -> None:
    """Until one run has finished and another is in its search, with a checkpoint."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        finished = [n for n in NAMES if (out / n / "results.json").exists()]
        if finished and any(in_search(out / n) for n in NAMES):
            return
        time.sleep(0.05)
    raise AssertionError(f"the sweep did not get halfway: {process.poll()}")


def test_a_sweep_stopped_by_sigterm_and_run_again_ends_as_the_uninterrupted_one(
        sample, reference, tmp_path):
    out = tmp_path / "sweep"
    process = subprocess.Popen(sweep_command(sample, out), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment(),
                               cwd=PROJECT)
    try:
        wait_for_half(out, process)
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output + errors
    assert "stopped by SIGTERM" in errors and "Traceback" not in errors
    finished = [n for n in NAMES if (out / n / "results.json").exists()]
    with_checkpoint = [n for n in NAMES if (out / n / "checkpoint.msgpack").exists()]
    assert 1 <= len(finished) < 4 and with_checkpoint  # stopped halfway, checkpoints kept
    assert not list(out.rglob(".run.lock")) and not (out / ".sweep.lock").exists()

    printed = sweep(sample, out, "--print-commands")  # what a cluster would be given now
    lines = printed.stdout.splitlines()
    assert printed.returncode == 0 and len(lines) == 4 - len(finished)
    for line in lines:
        keywords = parse_command_line(shlex.split(line)[2:])
        name = Path(keywords["savename"]).name
        assert keywords.get("resume", False) == (name in with_checkpoint)
        assert keywords["registry"] == str(out / "experiments.csv")

    again = sweep(sample, out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already finished, skipped") == len(finished)
    assert again.stdout.count("resumed from its checkpoint") == len(with_checkpoint)
    assert rows_per_run(out) == {**{name: 1 for name in NAMES}, "rows": 4}
    for name in NAMES:
        assert_same_run(final_model(out / name), final_model(reference[0] / name))


def test_a_finished_sweep_run_again_starts_nothing_and_other_settings_are_refused(
        sample, reference):
    out, _ = reference
    again = sweep(sample, out)
    assert again.returncode == 0 and again.stdout.count("already finished, skipped") == 4
    assert rows_per_run(out)["rows"] == 4
    other = sweep(sample, out, n_epochs=3)  # the same folders, another n_epochs
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "n_epochs=2 (now 3)" in other.stderr and "another --out" in other.stderr


@pytest.mark.parametrize("changes, extra, message", [
    ({}, ["--vary", "sampler=[None, 'balance']"],
     "the grid's run learning_rate=0.02 sampler=balance seed=0): sampler must be None"),
    ({}, ["--vary", "learning_rat=[0.1]"], "unknown keyword 'learning_rat' (did you mean "
                                           "'learning_rate'?)"),
    ({}, ["--vary", "class_weights=[None, [1, 2]]"], "class_weights has 2 values but"),
    ({}, ["--vary", "sampler=[None, balanced]"], "is not a Python list of literals"),
    ({}, ["--vary", "learning_rate=[0.1]"], "--vary learning_rate is given twice"),
    ({"savename": "x"}, [], "savename=x: the sweep sets savename itself"),
    ({"network": "nonet"}, [], "unknown network 'nonet'"),
])
def test_a_bad_grid_is_refused_before_anything_starts(sample, tmp_path, changes, extra,
                                                      message, capsys):
    out = tmp_path / "sweep"
    arguments = [*fixed_keywords(sample, **changes), *GRID, "--out", str(out), *extra]
    assert sweep_cli.main(arguments) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("error: ") and printed.err.count("\n") == 1, printed.err
    assert message in printed.err
    assert not out.exists() and printed.out == ""


def test_the_leaderboard_shows_the_runs_results_json_figures(reference, tmp_path, capsys):
    out, _ = reference
    page = tmp_path / "report" / "board.html"
    assert runs_cli.main([str(out), "--recall", "disgust,fear", "--report", str(page)]) == 0
    printed = capsys.readouterr().out
    runs, stopped = runs_of(out)
    assert len(runs) == 4 and stopped == []
    board = leaderboard(runs, recall=["disgust", "fear"])
    assert board.settings == ["learning_rate"] and len(board.rows) == 2  # seeds grouped
    saved = {run.name: run.results for run in runs}
    for row in board.rows:
        assert sorted(run.name for run in row.runs) == sorted(
            n for n in NAMES if f"learning_rate={row.settings['learning_rate']}," in n)
        assert row.seeds == [0, 1]
        for key in ("test_error_PublicTest", "aug_test_error_PublicTest", "train_seconds"):
            values = [saved[run.name][key] for run in row.runs]
            assert row.mean(key) == statistics.fmean(values)
            assert row.std(key) == statistics.stdev(values)
        fear = [saved[run.name]["per_class_recall"]["aug_test"]["PublicTest"]["fear"]
                for run in row.runs]
        assert row.mean("recall:fear:PublicTest") == statistics.fmean(fear)
        line = next(line for line in printed.splitlines()
                    if line.split()[1:2] == [str(row.settings["learning_rate"])])
        assert f"{100 * row.mean('aug_test_error_PublicTest'):.2f} ± " \
               f"{100 * row.std('aug_test_error_PublicTest'):.2f}" in line
    errors = [row.mean(board.ranked_by.key) for row in board.rows]
    assert board.ranked_by.key == "aug_test_error_PublicTest" and errors == sorted(errors)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 + 4  # costs, recall, 4 confusions
    assert all(name in text for name in NAMES)
    assert (tmp_path / "report" / "board_costs.png").stat().st_size > 0


def test_the_registry_gives_the_same_runs_with_or_without_their_folders(reference, tmp_path):
    out, _ = reference
    from_folders = {run.name: run for run in runs_of(out)[0]}
    from_registry = runs_of(out / "experiments.csv")[0]
    assert sorted(run.name for run in from_registry) == sorted(NAMES)
    for run in from_registry:  # each row found its folder, and took its results.json
        assert run.folder == out / run.name and run.results == from_folders[run.name].results
    moved = tmp_path / "experiments.csv"  # the folders gone: the rows alone
    moved.write_text((out / "experiments.csv").read_text().replace(str(out), str(tmp_path)))
    for run in runs_of(moved)[0]:
        saved = from_folders[run.name]
        assert run.folder is None and run.epochs == saved.epochs
        for key in ("test_error", "aug_test_error_PublicTest", "per_class_recall",
                    "train_seconds"):
            assert run.results[key] == saved.results[key]
        assert run.config["learning_rate"] == saved.config["learning_rate"]



CHILD = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
def note(signum, frame):
    with mark.open("a") as handle:
        handle.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGINT:
        sys.exit(130)
signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGINT, note)
mark.write_text("started\\n")
for _ in range(600):  # ends by itself after 30 s: a sweep that fails to stop it fails the test
    time.sleep(0.05)
"""


def test_a_stop_request_passes_sigterm_to_every_child_and_a_second_one_sigint(tmp_path,
                                                                              monkeypatch):
    # Children that only note the signals they get: the sweep's own loop, without training.
    monkeypatch.setattr(runner, "launcher_command", lambda run, resume: [
        sys.executable, "-c", CHILD, str(tmp_path / f"{run.name}.signals")])
    runs = [GridRun(f"run{i}", {"seed": i}, {"savename": str(tmp_path / f"run{i}")})
            for i in range(3)]
    marks = [tmp_path / f"run{i}.signals" for i in range(2)]

    def stop_twice():
        while not all(mark.exists() for mark in marks):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        while not all("SIGTERM" in mark.read_text() for mark in marks):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=stop_twice, daemon=True).start()
    with runner.StopSignals() as stop:
        tally = runner.SweepRunner(runs, {run.name: runner.NEW for run in runs}, tmp_path, 2,
                                   stop, lambda line: None).run()
    assert [mark.read_text().split() for mark in marks] == [["started", "SIGTERM", "SIGINT"]] * 2
    assert (tally.stop_signal, tally.stopped, tally.not_started) == ("SIGTERM", 2, 1)
    assert not (tmp_path / "run2.signals").exists()  # nothing started after the request
