"""The finished runs a leaderboard shows: from a sweep folder, a run folder or a registry.

A folder is searched for run folders (every ``results.json`` below it, as the launcher writes
it: the keywords as run and the results); a CSV file is a registry (one row per finished run,
``utils.experiments.registry``), each row read back into the keywords and results it was made
from. A registry row whose run folder is still there, holding the same run, takes that folder's
``results.json`` (the confusion matrix, the epochs of each phase) and pictures.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from utils.experiments.keywords import DEFAULTS, KEYWORD_NAMES, parse_value
from utils.experiments.registry import read_registry
from utils.experiments.run_folder import CHECKPOINT, PREVIOUS_CHECKPOINT
from utils.experiments.run_setup import RUN_MANAGEMENT
from utils.support.names import closest_name

RESULTS = "results.json"
# Keywords that say where a run is, or which repetition: never a setting that tells runs apart.
NOT_SETTINGS = ("savename", "seed") + RUN_MANAGEMENT


class RunsError(ValueError):
    """What the leaderboard cannot show: one sentence naming the path or value."""


@dataclass
class Run:
    name: str  # its folder's name, or its path below the folder given
    config: dict  # the keywords as run
    results: dict
    folder: Path | None  # its run folder, where its history and pictures are; None: gone

    def setting(self, name: str):
        """A keyword's value; one the run's launcher did not have yet counts as its default."""
        return self.config.get(name, DEFAULTS.get(name))

    @property
    def epochs(self) -> int | None:
        """Epochs trained, all phases; a registry row without its folder: from its timing."""
        if isinstance(self.results.get("epochs"), dict):
            return sum(self.results["epochs"].values())
        seconds, per_epoch = self.results.get("train_seconds"), self.results.get(
            "seconds_per_epoch")
        return round(seconds / per_epoch) if seconds and per_epoch else None


def read_results(path: Path) -> Run | None:
    """The run whose results.json this is; None when it is not one (unreadable, another file)."""
    try:
        saved = json.loads(path.read_text())
        config, results = saved["config"], saved["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Run(path.parent.name, config, results, path.parent)


def folder_runs(folder: Path) -> tuple[list[Run], list[str]]:
    """(finished runs below the folder, names of its run folders stopped before the end)."""
    runs = []
    for path in sorted(folder.rglob(RESULTS)):
        run = read_results(path)
        if run is not None:
            run.name = str(path.parent.relative_to(folder)) if path.parent != folder else run.name
            runs.append(run)
    stopped = sorted(str(path.parent.relative_to(folder)) for path in folder.rglob("*.msgpack")
                     if path.name in (CHECKPOINT, PREVIOUS_CHECKPOINT)
                     and not (path.parent / RESULTS).exists())
    return runs, sorted(set(stopped))


def cell_value(text: str | None):
    """A registry cell as the value it was written from (lists and dicts as JSON, None as '')."""
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)  # True, False
    except (ValueError, SyntaxError):
        return text


def registry_runs(path: Path) -> list[Run]:
    """Each well-formed row of a registry as a run; its folder's files where they are its own."""
    runs = []
    for row in read_registry(path):
        values = {k: cell_value(v) for k, v in row.items() if k is not None}
        if values.get("test_error") is None:
            continue  # a row cut short by a crash
        config = {k: v for k, v in values.items() if k in KEYWORD_NAMES}
        results = {k: v for k, v in values.items()
                   if k not in KEYWORD_NAMES and k not in ("finished", "code_version")}
        folder = Path(config["savename"]) if config.get("savename") else None
        saved = read_results(folder / RESULTS) if folder else None
        same = saved is not None and all(saved.results.get(k) == results.get(k)
                                         for k in ("test_error", "train_seconds", "test_cost"))
        name = folder.name if folder else f"row {len(runs) + 1}"
        runs.append(Run(name, saved.config if same else config,
                        saved.results if same else results, folder if same else None))
    return runs


def runs_of(path: Path) -> tuple[list[Run], list[str]]:
    """(finished runs, stopped run folders) of a sweep folder, a run folder or a registry."""
    if path.is_file():
        try:
            return registry_runs(path), []
        except (OSError, UnicodeDecodeError, KeyError) as error:
            raise RunsError(f"{path}: not a registry the launcher wrote ({error}): give a "
                            f"sweep folder, a run folder or an experiments.csv") from None
    if not path.is_dir():
        raise RunsError(f"{path}: no such sweep folder, run folder or registry")
    runs, stopped = folder_runs(path)
    if not runs:
        raise RunsError(f"{path} holds no finished run (no {RESULTS} in it or below it"
                        + (f"; {len(stopped)} stopped: resume them first" if stopped else "")
                        + "): give a sweep folder, a run folder or a registry")
    return runs, stopped


def parse_where(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (the value as on the launcher's command line)."""
    name, equals, value = text.partition("=")
    if not equals or name.strip() not in KEYWORD_NAMES:
        hint = closest_name(name.strip(), KEYWORD_NAMES) if equals else ""
        raise RunsError(f"--where {text!r}: expected KEY=VALUE with KEY one of the launcher's "
                        f"keywords{hint}")
    return name.strip(), parse_value(value.strip())


def matching(runs: list[Run], conditions: list[tuple[str, object]]) -> list[Run]:
    """The runs whose keywords have every given value; none is refused, naming the values."""
    for name, value in conditions:
        kept = [run for run in runs if run.setting(name) == value]
        if not kept:
            present = sorted({repr(run.setting(name)) for run in runs})
            raise RunsError(f"no run has {name}={value!r} (the runs' {name}: "
                            f"{', '.join(present)}): give one of those values")
        runs = kept
    return runs
