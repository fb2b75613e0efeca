"""The command line of ``python -m utils.runs``.

    python -m utils.runs runs/imbalance --recall disgust,fear
    python -m utils.runs trained_models/experiments.csv --where network=S --by test_error
    python -m utils.runs runs/imbalance --markdown --no-report

Prints the leaderboard of a sweep folder, a run folder or a registry (default: the launcher's
registry, trained_models/experiments.csv) and writes its HTML report with its PNGs (default:
leaderboard.html in the folder, or beside the registry). Exit status 2, with one sentence, for
a path without finished runs or an option the runs cannot answer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.experiments.keywords import DEFAULTS
from utils.runs.collect import RunsError, matching, parse_where, runs_of
from utils.runs.report import write_report
from utils.runs.table import leaderboard, markdown_table, text_table

REPORT = "leaderboard.html"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.runs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=Path(DEFAULTS["registry"]),
                        help="a sweep folder (python -m utils.sweep's --out), a run folder or "
                             f"a registry CSV (default {DEFAULTS['registry']})")
    parser.add_argument("--by", metavar="FIGURE",
                        help="what ranks the rows: test_error, aug_test_error (with views), "
                             "test_error_PublicTest ..., recall:CLASS (with --recall), epochs, "
                             "train_seconds (default: the error with views)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only the runs with this keyword value (as on the launcher's "
                             "command line); several: all of them")
    parser.add_argument("--recall", default="", metavar="CLASS,CLASS",
                        help="recall columns for these classes, e.g. disgust,fear")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (for a README)")
    parser.add_argument("--report", type=Path, metavar="PAGE.html",
                        help=f"where the HTML report goes (default: {REPORT} in the folder, "
                             f"or beside the registry)")
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def report_path(args: argparse.Namespace) -> Path:
    if args.report is not None:
        return args.report
    return (args.path if args.path.is_dir() else args.path.parent) / REPORT


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        conditions = [parse_where(text) for text in args.where]
        runs, stopped = runs_of(args.path)
        runs = matching(runs, conditions)
        classes = [name.strip() for name in args.recall.split(",") if name.strip()]
        board = leaderboard(runs, by=args.by, recall=classes, stopped=stopped)
    except RunsError as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    print(markdown_table(board) if args.markdown else text_table(board))
    if not args.no_report:
        try:
            written = write_report(board, args.path, report_path(args))
        except OSError as error:
            print(f"error: could not write the report {error.filename}: {error.strerror}; "
                  f"give --report another place, or --no-report", file=sys.stderr)
            return 2
        print("\nreport: " + ", ".join(map(str, written)))
    return 0
