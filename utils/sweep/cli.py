"""The command line of ``python -m utils.sweep``.

    python -m utils.sweep network=tiny_net:tiny n_epochs=2 --vary "learning_rate=[0.05, 0.1]" \\
        --seeds 2 --parallel 2 --out runs/lr
    python -m utils.sweep ... --out runs/lr --print-commands   # one launcher command per line

Runs every run of the grid as an ordinary launcher run in ``--out/<run>`` (its name: the varied
values and the seed), all into one registry (``--out/experiments.csv``, or ``registry=``), and
prints a line as each one starts and ends. The same command again skips the finished runs and
resumes the stopped ones. Exit status: 0 when every run has finished, 1 when one failed, 2 for
a grid refused before anything started, 130 when stopped by Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from utils.experiments.console import duration
from utils.experiments.keywords import KeywordError, parse_command_line
from utils.support.safe_files import LockHeld, exclusive_lock
from utils.sweep.grid import GridError, GridRun, check_grid, grid_runs, launcher_arguments, \
    parse_vary
from utils.sweep.runner import FINISHED, STOPPED, StopSignals, SweepRunner, folder_state

SWEEP_LOCK = ".sweep.lock"  # in --out: one sweep at a time per folder


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m utils.sweep", description=__doc__.split("\n\n")[0],
        epilog="Values are Python literals, as on the launcher's command line "
               "(python run_experiment.py --help lists the keywords).")
    parser.add_argument("keywords", nargs="*", metavar="key=value",
                        help="keywords every run takes, as the launcher takes them")
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=[v1, v2, ...]",
                        help="a keyword and a Python list of its values; several --vary make "
                             "the product")
    parser.add_argument("--seeds", type=positive_int, default=1, metavar="K",
                        help="each point K times, seeds S .. S+K-1 (S: seed=, default 0)")
    parser.add_argument("--parallel", type=positive_int, default=1, metavar="N",
                        help="runs at a time on this machine (default 1)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the sweep's folder: a run folder per run, the registry, logs/")
    parser.add_argument("--print-commands", action="store_true",
                        help="print the launcher command of every run not finished yet (one a "
                             "line, for a cluster's scheduler) instead of running them")
    return parser.parse_intermixed_args(argv)


def planned_grid(args: argparse.Namespace) -> tuple[list[GridRun], dict[str, str]]:
    """The grid's runs, checked by the launcher, and what each one's folder holds."""
    if args.out.exists() and not args.out.is_dir():
        raise GridError(f"--out {args.out} is a file: give the sweep a folder")
    fixed = parse_command_line(args.keywords)
    runs = grid_runs(fixed, [parse_vary(text) for text in args.vary], args.seeds, args.out)
    definitions = check_grid(runs)
    return runs, {run.name: folder_state(run, definitions[run.name]) for run in runs}


def print_commands(runs: list[GridRun], states: dict[str, str]) -> None:
    """One launcher command per run to do, from the project's folder; stopped ones resume."""
    finished = 0
    for run in runs:
        if states[run.name] == FINISHED:
            finished += 1
            continue
        resume = {"resume": True} if states[run.name] == STOPPED else {}
        print(shlex.join(["python", "run_experiment.py",
                          *launcher_arguments({**run.keywords, **resume})]))
    if finished:
        print(f"# {finished} of {len(runs)} runs have finished and are left out", file=sys.stderr)


def run_grid(args: argparse.Namespace, runs: list[GridRun], states: dict[str, str],
             stop: StopSignals) -> int:
    started = time.perf_counter()
    echo = lambda line: print(line, flush=True)  # noqa: E731
    registry = runs[0].keywords["registry"]
    echo(f"sweep {args.out}: {len(runs)} runs, {args.parallel} at a time; registry {registry}")
    tally = SweepRunner(runs, states, args.out, args.parallel, stop, echo).run()
    done = tally.finished_before + tally.finished_now
    echo(f"{done} of {len(runs)} runs finished ({tally.finished_now} now, "
         f"{tally.finished_before} before), {tally.stopped} stopped, {len(tally.failed)} failed,"
         f" {tally.not_started} not started, in {duration(time.perf_counter() - started)}")
    if tally.stop_signal:
        print(f"stopped by {tally.stop_signal}: every stopped run kept its checkpoint (or had "
              f"none yet); the same command goes on from there", file=sys.stderr)
        return 130
    if tally.failed:
        print(f"error: {len(tally.failed)} run(s) failed ({', '.join(tally.failed)}): see "
              f"their logs in {args.out / 'logs'}; the same command retries them",
              file=sys.stderr)
        return 1
    echo(f"leaderboard: python -m utils.runs {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    with StopSignals() as stop:  # from here Ctrl-C and SIGTERM are requests the sweep honours
        try:
            runs, states = planned_grid(args)
        except (GridError, KeywordError) as refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        if stop.first:
            print(f"stopped by {stop.first} while the sweep was checking its grid: no run was "
                  f"started", file=sys.stderr)
            return 130
        if args.print_commands:
            print_commands(runs, states)
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive_lock(args.out / SWEEP_LOCK, wait=False):
                return run_grid(args, runs, states, stop)
        except LockHeld as held:
            print(f"error: --out {args.out} is in use by another sweep ({held.holder}): wait "
                  f"for it to end or stop it, or give this one another --out", file=sys.stderr)
            return 2
