"""The leaderboard: runs ranked by a chosen figure, as the thesis's tables 6-12 rank them.

Its columns are the keywords whose values differ between the runs (the rest is what they
share), the seeds, the test error plain and with the test-time views (PublicTest and PrivateTest
apart when the test holds both; else the one split the test is), the recall of the classes asked
for, the epochs trained and the training time. Runs that differ only by their seed form one row:
each figure their mean ± sample standard deviation (n - 1); epochs and time their means.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from utils.experiments.console import duration
from utils.experiments.keywords import KEYWORD_NAMES
from utils.runs.collect import NOT_SETTINGS, Run, RunsError
from utils.support.names import closest_name

SPLITS = ("PublicTest", "PrivateTest")


@dataclass(frozen=True)
class Figure:
    key: str  # test_error, aug_test_error_PublicTest, recall:fear:PublicTest, epochs, train_seconds
    header: str
    higher_is_better: bool = False


def figure_value(run: Run, key: str) -> float | None:
    if key == "epochs":
        return run.epochs
    if key.startswith("recall:"):
        _, name, split = key.split(":")
        recall = run.results.get("per_class_recall") or {}
        by_split = recall.get("aug_test") or recall.get("test") or {}
        return (by_split.get(split) or {}).get(name)
    return run.results.get(key)


@dataclass
class Row:
    settings: dict  # keyword -> value, of the keywords that differ between runs
    runs: list[Run]

    @property
    def seeds(self) -> list:
        return sorted({run.setting("seed") for run in self.runs}, key=str)

    def values(self, key: str) -> list[float]:
        return [v for v in (figure_value(run, key) for run in self.runs) if v is not None]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Leaderboard:
    settings: list[str]  # the keywords that differ between the runs
    figures: list[Figure]
    rows: list[Row]  # best first
    ranked_by: Figure
    stopped: list[str] = field(default_factory=list)  # run folders not finished


def comparable(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_settings(runs: list[Run]) -> list[str]:
    """The keywords (in the launcher's order) whose values are not the same in every run."""
    return [name for name in KEYWORD_NAMES if name not in NOT_SETTINGS
            and len({comparable(run.setting(name)) for run in runs}) > 1]


def grouped(runs: list[Run], names: list[str]) -> list[Row]:
    """One row per combination of the differing keywords (the runs of its seeds)."""
    rows: dict[str, Row] = {}
    for run in runs:
        settings = {name: run.setting(name) for name in names}
        rows.setdefault(comparable(settings), Row(settings, [])).runs.append(run)
    return list(rows.values())


def test_splits(runs: list[Run]) -> list[str]:
    """The splits any run's test had images of (the shared FER2013 copy: PublicTest only)."""
    return [s for s in SPLITS if any(run.results.get(f"test_n_{s}") for run in runs)]


def error_figures(runs: list[Run]) -> list[Figure]:
    """Plain and with views; all and per split when the test holds both, else its one split."""
    views = any(run.results.get("aug_test_error") is not None for run in runs)
    splits = test_splits(runs)
    parts = [(f"_{s}", s) for s in splits]
    if len(parts) != 1:
        parts.insert(0, ("", "test"))  # all test images: both splits, or no split recorded
    figures = []
    for suffix, label in parts:
        figures.append(Figure(f"test_error{suffix}", f"{label} error %"))
        if views:
            figures.append(Figure(f"aug_test_error{suffix}", f"{label} views %"))
    return figures


def recall_figures(runs: list[Run], classes: list[str]) -> list[Figure]:
    """Recall of the classes asked for (the test with views where there is one), per split."""
    names = list(runs[0].results.get("class_names") or [])
    for name in classes:
        if name not in names:
            raise RunsError(f"--recall {name}: the runs' classes are {', '.join(names)}"
                            f"{closest_name(name, names)}")
    splits = test_splits(runs) or ["all"]
    return [Figure(f"recall:{name}:{split}",
                   f"{name} recall{' ' + split if len(splits) > 1 else ''} %", True)
            for name in classes for split in splits]


def ranking_figure(figures: list[Figure], rows: list[Row], by: str | None) -> Figure:
    """--by's figure; by default the first error with views that every row has, else the
    first plain error."""
    if by is None:
        errors = [f for f in figures if "error" in f.key]
        with_views = [f for f in errors if "aug_" in f.key
                      and all(row.mean(f.key) is not None for row in rows)]
        return (with_views or errors)[0]
    recall = {f"recall:{f.key.split(':')[1]}": f for f in figures if f.key.startswith("recall:")}
    choices = {f.key: f for f in figures} | recall
    if by not in choices:
        raise RunsError(f"--by {by}: expected one of {', '.join(choices)}"
                        f"{closest_name(by, list(choices))} (recall:CLASS needs --recall CLASS)")
    return choices[by]


def leaderboard(runs: list[Run], *, by: str | None = None, recall: list[str] = (),
                stopped: list[str] = ()) -> Leaderboard:
    names = differing_settings(runs)
    rows = grouped(runs, names)
    figures = (error_figures(runs) + recall_figures(runs, list(recall))
               + [Figure("epochs", "epochs"), Figure("train_seconds", "time")])
    ranked_by = ranking_figure(figures, rows, by)
    sign = -1 if ranked_by.higher_is_better else 1

    def rank(row: Row):
        value = row.mean(ranked_by.key)
        return (value is None, 0 if value is None else sign * value, comparable(row.settings))

    return Leaderboard(names, figures, sorted(rows, key=rank), ranked_by, list(stopped))


def shown(value) -> str:
    """A keyword's value in a cell: strings bare, a path as its file name, the rest as literals."""
    if isinstance(value, str):
        return Path(value).name if "/" in value else value
    return repr(value)


def figure_text(row: Row, figure: Figure) -> str:
    mean, std = row.mean(figure.key), row.std(figure.key)
    if mean is None:
        return "-"
    if figure.key == "train_seconds":
        return duration(mean)
    if figure.key == "epochs":
        return f"{mean:g}" if not std else f"{mean:.1f} ± {std:.1f}"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def cells(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """(headers, one list of cell texts per row): what every form of the table shows."""
    headers = ["#", *board.settings, "seeds", *(f.header for f in board.figures)]
    rows = [[str(rank), *(shown(row.settings[name]) for name in board.settings),
             ", ".join(map(str, row.seeds)), *(figure_text(row, f) for f in board.figures)]
            for rank, row in enumerate(board.rows, 1)]
    return headers, rows


def notes(board: Leaderboard) -> list[str]:
    order = "highest first" if board.ranked_by.higher_is_better else "lowest first"
    lines = [f"ranked by {board.ranked_by.key} ({order}); errors and recalls in %, the mean ± "
             f"sample standard deviation over a row's seeds; epochs and time (training only) "
             f"their means",
             "views: the test with the model's test-time views (the augmented test); recall: "
             "the test with views where there is one"]
    if board.stopped:
        lines.append(f"not finished (left out): {', '.join(board.stopped)}")
    return lines


def text_table(board: Leaderboard) -> str:
    headers, rows = cells(board)
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]
    left = 1 + len(board.settings)  # the settings read left-aligned, the figures right-aligned
    lines = ["  ".join(text.ljust(w) if 0 < i < left else text.rjust(w)
                       for i, (text, w) in enumerate(zip(line, widths)))
             for line in [headers, *rows]]
    return "\n".join(lines + [""] + notes(board))


def markdown_table(board: Leaderboard) -> str:
    headers, rows = cells(board)
    left = 1 + len(board.settings)
    rule = ["---" if 0 < i < left else "---:" for i in range(len(headers))]
    lines = [f"| {' | '.join(line)} |" for line in [headers, rule, *rows]]
    return "\n".join(lines)
