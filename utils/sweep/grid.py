"""A sweep's grid: its runs' keywords and folder names, refused as a whole before any run starts.

Every ``--vary KEY=[v1, v2, ...]`` multiplies the grid by its values, ``--seeds K`` repeats each
point with seeds S, S + 1, ..., S + K - 1 (S: the ``seed`` keyword, 0 by default), and the fixed
keywords (as the launcher takes them) apply to every run. Each run's keywords then go through the
launcher's own checks, ``resolve`` and ``define_run`` (the dataset, the network, the class
weights), so a grid the launcher would refuse anywhere is refused here, naming the value, before
the first run starts.
"""
from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from loaders.sources import DatasetError
from utils.experiments.keywords import parse_value, resolve
from utils.experiments.run_setup import define_run
from utils.models.model_io import ModelFileError

# The sweep sets these for every run: its folder, and whether it resumes.
SET_BY_THE_SWEEP = ("savename", "resume", "overwrite")
REGISTRY_NAME = "experiments.csv"  # the sweep's registry under --out, unless registry= is given
VARY_EXAMPLE = "--vary \"sampler=[None, 'balanced']\""


class GridError(ValueError):
    """A grid the sweep refuses: one sentence naming the argument or value and what to do."""


@dataclass(frozen=True)
class GridRun:
    name: str  # its folder under --out
    varied: dict  # what makes it this run: the varied keywords' values, and its seed
    keywords: dict  # everything given to the launcher but resume


def argument_text(value) -> str:
    """The value as the launcher's command line reads it back (``parse_value``): a bare word
    where it reads back as the same string, else the Python literal."""
    if isinstance(value, str) and value and parse_value(value) == value and " " not in value:
        return value
    return repr(value)


def launcher_arguments(keywords: dict) -> list[str]:
    return [f"{name}={argument_text(value)}" for name, value in keywords.items()]


def describe(varied: dict) -> str:
    """``class_weights=balanced sampler=None seed=1``: a run as the messages name it."""
    return " ".join(launcher_arguments(varied)) or "the only run"


def parse_vary(text: str) -> tuple[str, list]:
    """``KEY=[v1, v2, ...]`` as (KEY, its values)."""
    name, equals, values_text = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise GridError(f"--vary {text!r} is not KEY=[v1, v2, ...]: give a keyword and a Python "
                        f"list of its values, e.g. {VARY_EXAMPLE}")
    if name in SET_BY_THE_SWEEP + ("registry",):
        raise GridError(f"--vary {name}: the sweep sets {name} itself (one registry, each run "
                        f"in its own folder under --out); vary another keyword")
    try:
        values = ast.literal_eval(values_text.strip())
    except (ValueError, SyntaxError):
        values = None
    if not isinstance(values, (list, tuple)):
        raise GridError(f"--vary {text!r}: {values_text.strip()!r} is not a Python list of "
                        f"literals: give e.g. {VARY_EXAMPLE} (strings in quotes)")
    if not values:
        raise GridError(f"--vary {name}=[] lists no value: give at least one")
    shown = [repr(v) for v in values]
    twice = next((v for v in shown if shown.count(v) > 1), None)
    if twice is not None:
        raise GridError(f"--vary {name} lists {twice} twice: give each value once")
    return name, list(values)


def check_axes(fixed: dict, axes: list[tuple[str, list]], seeds: int) -> None:
    names = [name for name, _ in axes]
    for name in SET_BY_THE_SWEEP:
        if name in fixed:
            raise GridError(f"{name}={argument_text(fixed[name])}: the sweep sets {name} itself "
                            f"(each run in its own folder under --out, stopped runs resumed): "
                            f"leave it out")
    for name in names:
        if names.count(name) > 1:
            raise GridError(f"--vary {name} is given twice: give all its values in one list")
        if name in fixed:
            raise GridError(f"{name} is both fixed ({name}={argument_text(fixed[name])}) and "
                            f"varied (--vary {name}=...): give it once")
    if seeds < 1:
        raise GridError(f"--seeds {seeds}: give 1 or more seeds")
    if seeds > 1 and "seed" in names:
        raise GridError("--seeds and --vary seed=... both choose the seeds: give one")
    seed = fixed.get("seed", 0)
    if seeds > 1 and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise GridError(f"seed={argument_text(seed)}: with --seeds the first seed must be an "
                        f"integer >= 0")


def folder_name(varied: dict) -> str:
    """``class_weights=balanced,sampler=None,seed=0``: only letters, digits and ``=,._+-``."""
    parts = [f"{name}={re.sub(r'[^A-Za-z0-9._+-]+', '-', argument_text(v)).strip('-')}"
             for name, v in varied.items()]
    return ",".join(parts) or "run"


def grid_runs(fixed: dict, axes: list[tuple[str, list]], seeds: int, out: Path) -> list[GridRun]:
    """The grid's runs, seed by seed (a study stopped early has every setting of its first
    seeds), the points in the order of the ``--vary`` lists."""
    check_axes(fixed, axes, seeds)
    fixed = dict(fixed)
    first_seed = fixed.pop("seed", 0) if seeds > 1 else None
    registry = fixed.pop("registry", str(out / REGISTRY_NAME))
    seed_axis = [("seed", [first_seed + i for i in range(seeds)])] if seeds > 1 else []
    axes = seed_axis + list(axes)
    runs, taken = [], set()
    for values in itertools.product(*(values for _, values in axes)):
        varied = dict(zip((name for name, _ in axes), values))
        varied = {name: varied[name] for name, _ in axes[len(seed_axis):] + seed_axis}
        name = folder_name(varied)
        for copy in itertools.count(2):  # values that read alike as folder names
            if name not in taken:
                break
            name = f"{folder_name(varied)}-{copy}"
        taken.add(name)
        keywords = {**fixed, **varied, "savename": str(out / name), "registry": registry}
        runs.append(GridRun(name, varied, keywords))
    return runs


def check_grid(runs: list[GridRun]) -> dict[str, dict]:
    """Each run's definition as the launcher makes it (resolved keywords, the dataset's image
    size, the network's conv dropout): the first refusal is raised, naming the run."""
    definitions = {}
    for run in runs:
        try:
            config = resolve(run.keywords, "from the sweep's command line")
            definitions[run.name] = define_run(config).config
        except (ValueError, DatasetError, ModelFileError) as refusal:
            where = "" if not run.varied else f" (the grid's run {describe(run.varied)})"
            raise GridError(f"the launcher refuses the grid{where}: {refusal}; nothing was "
                            f"started") from None
    return definitions
