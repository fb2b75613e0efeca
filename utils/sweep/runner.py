"""A sweep's runs on this machine: each one the launcher in a child process, N at a time.

A run's folder says what it needs, by the launcher's own rules (``RunFolder``): a finished model
and no checkpoint, nothing to do (once its saved definition is checked against the grid's); a
checkpoint, ``resume=True``; else a fresh start. Each child writes its output to
``--out/logs/<run>.log`` (appended on every start). Ctrl-C or SIGTERM to the sweep starts no
more runs and passes SIGTERM to every child, which saves a checkpoint at its current
mini-batch and exits (a second one: SIGINT, which stops them at once, the last checkpoint
standing); the sweep waits for them all and exits 130, and the same command goes on from there.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from utils.experiments.console import duration
from utils.experiments.run_folder import MODEL, RunFolder, RunFolderError, check_same_definition
from utils.experiments.run_setup import RUN_MANAGEMENT
from utils.models import model_io
from utils.sweep.grid import GridError, GridRun, describe, launcher_arguments

FINISHED, STOPPED, NEW = "finished", "stopped", "new"  # what a run's folder holds
# How a stopped child ends: with its checkpoint (130), or by the signal itself (before the
# launcher had set its handlers: nothing of the run was written yet).
STOPPED_EXITS = (130, -signal.SIGTERM, -signal.SIGINT)
POLL_SECONDS = 0.2


def folder_state(run: GridRun, definition: dict) -> str:
    """FINISHED, STOPPED or NEW; a finished run of other settings is refused, naming them."""
    folder = RunFolder(run.keywords["savename"])
    if folder.newest_checkpoint() is not None:
        return STOPPED  # the launcher checks the checkpoint's settings when it resumes
    if not folder.file(MODEL).exists():
        return NEW
    try:
        header, _ = model_io.load(folder.file(MODEL), model_io.MODEL_FORMAT)
        now = {k: v for k, v in definition.items() if k not in RUN_MANAGEMENT}
        check_same_definition(folder.file(MODEL), header["config"], now)
    except (RunFolderError, model_io.ModelFileError) as refusal:
        raise GridError(f"the grid's run {describe(run.varied)}: {refusal}, or give the sweep "
                        f"another --out") from None
    return FINISHED


def launcher_command(run: GridRun, resume: bool, python: str = sys.executable) -> list[str]:
    """The child's command: this checkout's launcher (found without importing it)."""
    launcher = importlib.util.find_spec("run_experiment").origin
    keywords = {**run.keywords, **({"resume": True} if resume else {})}
    return [python, launcher, *launcher_arguments(keywords)]


@dataclass
class Child:
    number: str  # "[3/8]"
    run: GridRun
    process: subprocess.Popen
    log: IO
    started: float


@dataclass
class Tally:
    finished_before: int = 0
    finished_now: int = 0
    stopped: int = 0
    failed: list = field(default_factory=list)  # run names
    not_started: int = 0
    stop_signal: str | None = None  # SIGINT or SIGTERM when the sweep was stopped


class StopSignals:
    """Ctrl-C and SIGTERM as requests the sweep's loop acts on, never an exception raised in
    the middle of starting a child: the first stops the sweep, a later one its runs at once."""

    def __init__(self):
        self.first: str | None = None  # the first signal's name
        self.count = 0
        self._previous = {}

    def _receive(self, signum, frame) -> None:
        self.first = self.first or signal.Signals(signum).name
        self.count += 1

    def __enter__(self) -> "StopSignals":
        self._previous = {signum: signal.signal(signum, self._receive)
                          for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exception) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class SweepRunner:
    def __init__(self, runs: list[GridRun], states: dict[str, str], out: Path, parallel: int,
                 stop: StopSignals, echo: Callable[[str], None]):
        self.runs, self.states, self.out, self.parallel = runs, states, Path(out), parallel
        self.stop, self.echo = stop, echo
        self.tally = Tally()

    def run(self) -> Tally:
        """Every run not finished yet, ``parallel`` at a time, until done or stopped: on the
        first stop request each child gets SIGTERM (a checkpoint, then its exit), on a later
        one SIGINT (the launcher's second Ctrl-C: at once); the sweep waits for them all."""
        queue, running, forwarded = [], [], 0
        for index, run in enumerate(self.runs, 1):
            number = f"[{index}/{len(self.runs)}]"
            if self.states[run.name] == FINISHED:
                self.tally.finished_before += 1
                self.echo(f"{number} {run.name}: already finished, skipped")
            else:
                queue.append((number, run))
        while queue or running:
            if self.stop.count > forwarded:
                for child in running:
                    child.process.send_signal(signal.SIGINT if forwarded else signal.SIGTERM)
                forwarded = self.stop.count
            while queue and len(running) < self.parallel and not self.stop.first:
                running.append(self._start(*queue.pop(0)))
            for child in [c for c in running if c.process.poll() is not None]:
                running.remove(child)
                self._account(child)
            if self.stop.first and not running:
                break
            time.sleep(POLL_SECONDS)  # a signal cuts it short
        self.tally.not_started = len(queue)
        self.tally.stop_signal = self.stop.first
        return self.tally

    def _start(self, number: str, run: GridRun) -> Child:
        resume = self.states[run.name] == STOPPED
        command = launcher_command(run, resume)
        log_path = self.out / "logs" / f"{run.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a")
        log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} the sweep "
                  f"{'resumes' if resume else 'starts'} the run: {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.echo(f"{number} {run.name}: {'resumed from its checkpoint' if resume else 'started'}"
                  f" (log {log_path})")
        return Child(number, run, process, log, time.perf_counter())

    def _account(self, child: Child) -> None:
        child.log.close()
        code, run = child.process.returncode, child.run
        folder = RunFolder(run.keywords["savename"])
        if code == 0:
            self.tally.finished_now += 1
            self.states[run.name] = FINISHED
            self.echo(f"{child.number} {run.name}: finished in "
                      f"{duration(time.perf_counter() - child.started)}: "
                      f"{figures(folder.file('results.json'))}")
        elif code in STOPPED_EXITS:
            self.tally.stopped += 1
            self.states[run.name] = STOPPED if folder.newest_checkpoint() else NEW
            kept = ("its checkpoint is kept" if folder.newest_checkpoint() else
                    "it had no checkpoint yet")
            self.echo(f"{child.number} {run.name}: stopped ({kept})")
        else:
            self.tally.failed.append(run.name)
            self.echo(f"{child.number} {run.name}: failed (exit {code}): "
                      f"{last_error(Path(child.log.name))} (log {child.log.name})")


def figures(results_path: Path) -> str:
    """``test error 53.93 %, with views 52.14 %`` from a finished run's results.json."""
    try:
        results = json.loads(results_path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return f"no results in {results_path}"
    text = f"test error {100 * results['test_error']:.2f} %"
    if results.get("aug_test_error") is not None:
        text += f", with views {100 * results['aug_test_error']:.2f} %"
    return text


def last_error(log_path: Path) -> str:
    """The launcher's ``error:`` line (its refusal), else the log's last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
             if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1]
