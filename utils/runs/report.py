"""The leaderboard as a self-contained HTML page, and its pictures as PNGs beside it.

``leaderboard.html`` holds the table, the runs' training costs overlaid (``leaderboard_costs.png``),
the recall of every class per row (``leaderboard_recall.png``), and for each run its confusion
matrix (the launcher's ``confusion.png``) and its recall per class and split; every picture is
inside the page (data: URLs), so the one file can be mailed or archived. Every file is written
under a temporary name and renamed into place.
"""
from __future__ import annotations

import base64
import csv
import html
import time
from pathlib import Path

import numpy as np

from utils.experiments.records import pyplot, save_figure
from utils.runs.collect import Run
from utils.runs.table import Leaderboard, Row, cells, figure_value, notes, shown, test_splits
from utils.support.safe_files import atomic_write

LINE_STYLES = ("-", "--", ":", "-.")  # one per seed of a row; a row has one colour
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f2f4f7; } td.setting, th.setting { text-align: left; }
tr.best td { font-weight: bold; } p.note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
img { max-width: 100%; } .run { display: flex; gap: 2em; align-items: flex-start; }
.run table { font-size: 0.9em; } h3 { margin-top: 2em; }
"""


def history_of(run: Run) -> list[dict]:
    """The run's epochs from its history.csv; [] when its folder is gone."""
    if run.folder is None or not (run.folder / "history.csv").is_file():
        return []
    with open(run.folder / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def row_label(rank: int, row: Row) -> str:
    settings = " ".join(f"{k}={shown(v)}" for k, v in row.settings.items())
    return f"#{rank} {settings}".strip()


def plot_costs(board: Leaderboard, path: Path) -> bytes | None:
    """Training cost per epoch of every run's final training (and validation cost of its
    search, where it had one), a colour per row, a line style per seed."""
    plt = pyplot()
    curves = [(rank, i, run, history_of(run)) for rank, row in enumerate(board.rows, 1)
              for i, run in enumerate(row.runs)]
    curves = [c for c in curves if c[3]]
    if not curves:
        return None
    searched = any(h["val_cost"] for *_, history in curves for h in history)
    fig, axes = plt.subplots(1, 1 + searched, figsize=(7 + 6 * searched, 4.5), squeeze=False)
    for rank, i, run, history in curves:
        style = dict(color=f"C{(rank - 1) % 10}", linestyle=LINE_STYLES[i % len(LINE_STYLES)])
        label = f"{row_label(rank, board.rows[rank - 1])} seed {run.setting('seed')}"
        final = [float(h["train_cost"]) for h in history if not h["val_cost"]]
        axes[0][0].plot(range(1, len(final) + 1), final, label=label, **style)
        if searched:
            validation = [float(h["val_cost"]) for h in history if h["val_cost"]]
            axes[0][1].plot(range(1, len(validation) + 1), validation, **style)
    axes[0][0].set_title("training cost of the final training (train or retrain, then anneal)")
    if searched:
        axes[0][1].set_title("validation cost of the entropy-point search")
    for ax in axes[0]:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cost (cross-entropy)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_recall(board: Leaderboard, path: Path) -> bytes | None:
    """Each class's recall (the test with views where there is one, all test images), a bar
    per row: the mean over its seeds, the standard deviation as an error bar."""
    plt = pyplot()
    names = list(board.rows[0].runs[0].results.get("class_names") or [])
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(names)), 4.5))
    width = 0.8 / len(board.rows)
    for rank, row in enumerate(board.rows, 1):
        keys = [f"recall:{name}:all" for name in names]
        means = [100 * (row.mean(k) or 0) for k in keys]
        stds = [100 * (row.std(k) or 0) for k in keys]
        ax.bar(np.arange(len(names)) + (rank - 1 - (len(board.rows) - 1) / 2) * width, means,
               width, yerr=stds, color=f"C{(rank - 1) % 10}",
               label=row_label(rank, row), capsize=2)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("recall %")
    ax.set_ylim(0, 100)
    ax.set_title("recall per class (test with views, all test images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def picture(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p class=note>({html.escape(alt)}: no data)</p>"
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(headers: list[str], rows: list[list[str]], left: int, best: bool = False) -> str:
    def line(tag: str, texts: list[str], extra: str = "") -> str:
        return f"<tr{extra}>" + "".join(
            f"<{tag}{' class=setting' if 0 < i < left else ''}>{html.escape(t)}</{tag}>"
            for i, t in enumerate(texts)) + "</tr>"

    body = [line("td", row, " class=best" if best and not n else "") for n, row in enumerate(rows)]
    return "<table>" + line("th", headers) + "".join(body) + "</table>"


def recall_table(run: Run) -> str:
    """A run's recall per class: plain and with views, all test images and each split."""
    recall = run.results.get("per_class_recall") or {}
    splits = test_splits([run])
    splits = splits if len(splits) == 1 else ["all", *splits]  # one split: all is that one
    columns = [(test, split) for test in ("test", "aug_test") if recall.get(test)
               for split in splits if recall[test].get(split)]
    names = list(run.results.get("class_names") or [])
    headers = ["class"] + [f"{'views' if t == 'aug_test' else 'plain'} {s}" for t, s in columns]
    rows = [[name] + [f"{100 * recall[t][s][name]:.1f}" if recall[t][s].get(name) is not None
                      else "-" for t, s in columns] for name in names]
    return html_table(headers, rows, 1)


def run_sections(board: Leaderboard) -> list[str]:
    parts = []
    for rank, row in enumerate(board.rows, 1):
        for run in row.runs:
            confusion = (run.folder / "confusion.png") if run.folder else None
            png = confusion.read_bytes() if confusion and confusion.is_file() else None
            figures = ", ".join(f"{f.header} {100 * figure_value(run, f.key):.2f}"
                                for f in board.figures if "error" in f.key
                                and figure_value(run, f.key) is not None)
            parts += [f"<h3>{html.escape(row_label(rank, row))}, seed "
                      f"{html.escape(str(run.setting('seed')))}: {html.escape(run.name)}</h3>",
                      f"<p class=note>{html.escape(figures)}</p>",
                      f"<div class=run>{picture(png, 'confusion matrix')}"
                      f"{recall_table(run)}</div>"]
    return parts


def write_report(board: Leaderboard, source: Path, page: Path) -> list[Path]:
    """The page and its two PNGs (beside it, named after it); their paths."""
    costs = page.with_name(f"{page.stem}_costs.png")
    recall = page.with_name(f"{page.stem}_recall.png")
    headers, rows = cells(board)
    costs_png, recall_png = plot_costs(board, costs), plot_recall(board, recall)
    title = f"Leaderboard of {source}"
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class=note>{sum(len(r.runs) for r in board.rows)} runs in {len(board.rows)} "
             f"rows, written {time.strftime('%Y-%m-%d %H:%M')} by python -m utils.runs</p>",
             html_table(headers, rows, 1 + len(board.settings), best=True),
             *(f"<p class=note>{html.escape(line)}</p>" for line in notes(board)),
             "<h2>Training cost</h2>", picture(costs_png, "training cost"),
             "<h2>Recall per class</h2>", picture(recall_png, "recall"),
             "<h2>Each run</h2>", *run_sections(board), "</body></html>"]
    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(page, "\n".join(parts).encode())
    return [page] + [p for p, png in ((costs, costs_png), (recall, recall_png)) if png]
