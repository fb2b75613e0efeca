"""python -m utils.runs on run folders written by hand: ranking, seeds grouped, columns, filters,
refusals, the Markdown table and the HTML report. (tests/test_sweep.py checks it on real runs.)"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from utils.experiments.keywords import DEFAULTS
from utils.runs import cli
from utils.runs.collect import runs_of
from utils.runs.table import leaderboard, markdown_table, text_table

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def results(error: float, *, private: bool, views: bool = True, fear: float = 0.5) -> dict:
    recall = {name: 0.5 for name in CLASSES} | {"fear": fear}
    splits = {"all": recall, "PublicTest": recall, "PrivateTest": recall if private else None}
    figures = {"test_error": error, "test_error_PublicTest": error - 0.01,
               "test_error_PrivateTest": error + 0.01 if private else None,
               "test_n_PublicTest": 100, "test_n_PrivateTest": 100 if private else 0}
    if views:
        figures |= {f"aug_{k}": v - 0.02 if isinstance(v, float) else v
                    for k, v in figures.items() if k.startswith("test_error")}
    return {**figures, "per_class_recall": {"test": splits, "aug_test": splits if views else None},
            "class_names": CLASSES, "epochs": {"train": 3, "anneal": 1}, "train_seconds": 90.0}


def write_run(folder: Path, settings: dict, figures: dict) -> None:
    folder.mkdir(parents=True)
    config = {**DEFAULTS, **settings, "savename": str(folder)}
    (folder / "results.json").write_text(json.dumps({"config": config, "results": figures}))


@pytest.fixture
def sweep_folder(tmp_path):
    """Three settings of sampler and class_weights, two seeds each; one run stopped."""
    errors = {(None, None): (0.40, 0.42), ("balanced", None): (0.35, 0.39),
              (None, "balanced"): (0.38, 0.38)}
    for (weights, sampler), pair in errors.items():
        for seed, error in enumerate(pair):
            write_run(tmp_path / f"w={weights},s={sampler},seed={seed}",
                      {"class_weights": weights, "sampler": sampler, "seed": seed},
                      results(error, private=True, fear=error))
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "checkpoint.msgpack").write_bytes(b"")
    return tmp_path


def test_rows_are_ranked_settings_that_differ_and_seeds_grouped(sweep_folder):
    runs, stopped = runs_of(sweep_folder)
    assert len(runs) == 6 and stopped == ["stopped"]
    board = leaderboard(runs, recall=["fear"], stopped=stopped)
    assert board.settings == ["class_weights", "sampler"]
    assert [(row.settings["class_weights"], row.settings["sampler"]) for row in board.rows] == [
        ("balanced", None), (None, "balanced"), (None, None)]  # by the error with views
    best = board.rows[0]
    assert best.seeds == [0, 1]
    assert best.mean("aug_test_error") == pytest.approx(statistics.fmean([0.33, 0.37]))
    assert best.std("aug_test_error") == pytest.approx(statistics.stdev([0.33, 0.37]))
    keys = [f.key for f in board.figures]
    assert keys == ["test_error", "aug_test_error", "test_error_PublicTest",
                    "aug_test_error_PublicTest", "test_error_PrivateTest",
                    "aug_test_error_PrivateTest", "recall:fear:PublicTest",
                    "recall:fear:PrivateTest", "epochs", "train_seconds"]
    text = text_table(board)
    assert text.splitlines()[1].split()[:3] == ["1", "balanced", "None"]
    assert "35.00 ± 2.83" in text and "not finished (left out): stopped" in text
    by_fear = leaderboard(runs, recall=["fear"], by="recall:fear")
    assert by_fear.rows[0].settings == {"class_weights": None, "sampler": None}  # highest


def test_one_test_split_gives_its_columns_only_and_a_run_without_views_ranks_by_plain(tmp_path):
    write_run(tmp_path / "a", {"learning_rate": 0.1}, results(0.3, private=False, views=False))
    write_run(tmp_path / "b", {"learning_rate": 0.2}, results(0.2, private=False, views=False))
    board = leaderboard(runs_of(tmp_path)[0])
    assert [f.key for f in board.figures] == ["test_error_PublicTest", "epochs", "train_seconds"]
    assert board.ranked_by.key == "test_error_PublicTest"
    assert [row.settings["learning_rate"] for row in board.rows] == [0.2, 0.1]
    assert markdown_table(board).splitlines()[:3] == [
        "| # | learning_rate | seeds | PublicTest error % | epochs | time |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
        "| 1 | 0.2 | 0 | 19.00 | 4 | 1 min 30 s |"]


def test_where_filters_and_the_report_holds_the_table(sweep_folder, capsys):
    page = sweep_folder / "out" / "board.html"
    assert cli.main([str(sweep_folder), "--where", "sampler=None", "--where",
                     "class_weights=balanced", "--report", str(page)]) == 0
    printed = capsys.readouterr().out
    assert len([line for line in printed.splitlines() if line[:1].isdigit()]) == 1
    text = page.read_text()
    assert "<table>" in text and "35.00 ± 2.83" in text and "balanced" in text
    assert [p.name for p in page.parent.iterdir()] == ["board.html", "board_recall.png"]


@pytest.mark.parametrize("arguments, message", [
    (["--where", "sampler=balance"], "no run has sampler='balance' (the runs' sampler: "
                                     "'balanced', None): give one of those values"),
    (["--where", "sampler"], "--where 'sampler': expected KEY=VALUE"),
    (["--where", "sampeler=None"], "did you mean 'sampler'?"),
    (["--by", "test_eror"], "--by test_eror: expected one of test_error, aug_test_error"),
    (["--recall", "fearr"], "--recall fearr: the runs' classes are angry"),
])
def test_what_the_runs_cannot_answer_is_refused_in_one_sentence(sweep_folder, capsys,
                                                                arguments, message):
    assert cli.main([str(sweep_folder), "--no-report", *arguments]) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("error: ") and printed.err.count("\n") == 1
    assert message in printed.err and printed.out == ""


def test_a_folder_without_finished_runs_is_refused(tmp_path, capsys):
    assert cli.main([str(tmp_path), "--no-report"]) == 2
    assert "holds no finished run" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "nowhere")]) == 2
    assert "no such sweep folder, run folder or registry" in capsys.readouterr().err
