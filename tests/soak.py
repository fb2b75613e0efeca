"""Soak: K short experiments at once into one registry, killed and resumed at random.

    python tests/soak.py --runs 16 --parallel 4 --seed 0 --folder /tmp/fer-soak

Each run is the launcher (a real process, the tiny network of tests/tiny_net.py on the
built-in sample) started again and again: at random moments it gets SIGKILL (no chance to
save), SIGTERM or SIGINT (a checkpoint at the current mini-batch), up to --max-kills times
(each start is killed with probability --kill-rate, uniformly within --max-delay seconds);
each new start uses resume=True when the folder holds a checkpoint. All runs share one
registry. At the end, every run must have finished (exit 0) with exactly one registry row,
and its model must equal, bit for bit, the model of the same configuration run once without
interruption; the registry must be well-formed and no lock or partial file may be left; its
TensorBoard event file must hold exactly one point per epoch of its history for each scalar.
Prints the figures and exits 1 if anything is wrong. The README quotes a run of it.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # run from anywhere: this checkout's modules, not an installed copy
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
from event_files import assert_one_point_per_epoch  # noqa: E402
from launcher_support import PROJECT, quick_config  # noqa: E402
from test_resume import command, environment, final_model  # noqa: E402

from loaders.sample import ensure_sample_dataset  # noqa: E402
from utils.models import model_io  # noqa: E402

SIGNALS = (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT)  # half are KILLs
SEEDS = (0, 1)  # runs alternate between two configurations, each with its own reference
# How a killed start ends: stopped with a checkpoint or a sentence (130), or by the signal
# itself (SIGKILL; SIGTERM before training; SIGINT before Python has set its handler).
KILLED = (130, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT)


@dataclass
class RunRecord:
    name: str
    seed: int
    folder: Path
    starts: int = 0
    resumes: int = 0  # starts with resume=True
    kills: dict = field(default_factory=dict)  # signal name -> how many landed
    kills_after_checkpoint: int = 0  # kills that found a checkpoint in the folder
    exit_codes: list = field(default_factory=list)
    finished: bool = False


def configuration(folder: Path, dataset: Path, seed: int, registry: Path) -> dict:
    """Long enough (about 10 s alone) for kills to land in every phase."""
    return quick_config(folder, dataset, seed=seed, n_epochs=2, anneal_epochs=1,
                        batch_size=25, registry=str(registry))


def has_checkpoint(run_folder: Path) -> bool:
    return any((run_folder / name).exists()
               for name in ("checkpoint.msgpack", "checkpoint.previous.msgpack"))


def one_start(config: dict, record: RunRecord, rng: random.Random, kill_at: float | None,
              lock: threading.Lock) -> int:
    """Start the launcher once (resuming when there is a checkpoint); maybe kill it."""
    resume = has_checkpoint(Path(config["savename"]))
    process = subprocess.Popen(command({**config, "resume": resume}), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=environment(),
                               cwd=PROJECT)
    record.starts += 1
    record.resumes += resume
    if kill_at is not None:
        try:
            process.wait(timeout=kill_at)
        except subprocess.TimeoutExpired:
            signum = rng.choice(SIGNALS)
            process.send_signal(signum)
            with lock:
                record.kills[signum.name] = record.kills.get(signum.name, 0) + 1
                record.kills_after_checkpoint += has_checkpoint(Path(config["savename"]))
    _, err = process.communicate(timeout=600)
    record.exit_codes.append(process.returncode)
    if process.returncode not in (0, *KILLED):
        print(f"{record.name}: exit {process.returncode}: {err.strip()}", file=sys.stderr)
    return process.returncode


def soak_one(config: dict, record: RunRecord, rng: random.Random, args,
             lock: threading.Lock) -> RunRecord:
    """Start, kill, resume until the run finishes (or something is wrong)."""
    folder = Path(config["savename"])
    while len(record.exit_codes) < args.max_kills + 3:
        if (folder / "model.msgpack").exists() and not has_checkpoint(folder):
            record.finished = True  # it had finished when a kill landed (the summary, the exit)
            break
        killing = sum(record.kills.values()) < args.max_kills and rng.random() < args.kill_rate
        code = one_start(config, record, rng, rng.uniform(0.5, args.max_delay)
                         if killing else None, lock)
        if code == 0:
            record.finished = True
            break
        if code not in KILLED:
            break  # a refusal or a crash: reported, and counted as not finished
    return record


def registry_rows(registry: Path) -> tuple[list[dict], bool]:
    """(rows, well-formed: every line has the header's number of fields)."""
    with open(registry, newline="") as handle:
        header, *lines = list(csv.reader(handle))
    return [dict(zip(header, line)) for line in lines], all(len(x) == len(header)
                                                            for x in lines)


def same_model(a, b) -> bool:
    (results_a, leaves_a), (results_b, leaves_b) = a, b
    keys = ("test_error", "aug_test_error", "test_cost", "entropy_epoch", "best_val_cost")
    return (len(leaves_a) == len(leaves_b)
            and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))
            and all(results_a[k] == results_b[k] for k in keys))


def events_follow_history(folder: Path) -> bool:
    """One event file, one point per epoch of the saved model's history for each scalar."""
    try:
        header, _ = model_io.load(folder, model_io.MODEL_FORMAT)
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert_one_point_per_epoch(folder, header["history"])
    except (AssertionError, model_io.ModelFileError):
        return False
    return True


def leftovers(root: Path) -> list[str]:
    """Lock files and partial (temporary) files anywhere under the soak folder."""
    return sorted(str(p) for p in root.rglob(".*") if p.name.endswith(".lock")
                  or ".tmp" in p.name)


def references(root: Path, dataset: Path) -> dict[int, tuple]:
    """Each configuration run once, uninterrupted, one after the other."""
    models = {}
    for seed in SEEDS:
        config = configuration(root / f"reference_{seed}", dataset, seed,
                               root / "reference_registry.csv")
        subprocess.run(command(config), check=True, stdout=subprocess.DEVNULL, cwd=PROJECT,
                       env=environment())
        models[seed] = final_model(Path(config["savename"]))
    return models


def check(records: list[RunRecord], registry: Path, expected: dict[int, tuple],
          root: Path) -> dict:
    rows, well_formed = registry_rows(registry)
    per_run = {r.name: sum(row["savename"] == str(r.folder) for row in rows) for r in records}
    mismatches = [r.name for r in records
                  if not r.finished or not same_model(final_model(r.folder), expected[r.seed])]
    return {"runs": len(records), "finished": sum(r.finished for r in records),
            "starts": sum(r.starts for r in records),
            "resumes": sum(r.resumes for r in records),
            "kills": sum(sum(r.kills.values()) for r in records),
            "kills_after_checkpoint": sum(r.kills_after_checkpoint for r in records),
            "kills_by_signal": {name: sum(r.kills.get(name, 0) for r in records)
                                for name in ("SIGKILL", "SIGTERM", "SIGINT")},
            "rows": len(rows), "runs_without_exactly_one_row":
                sorted(name for name, n in per_run.items() if n != 1),
            "registry_well_formed": well_formed, "mismatches": len(mismatches),
            "mismatched_runs": mismatches, "leftover_files": leftovers(root),
            "runs_with_wrong_event_files": sorted(r.name for r in records
                                                  if not events_follow_history(r.folder))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=16, help="experiments in all")
    parser.add_argument("--parallel", type=int, default=4, help="experiments at once")
    parser.add_argument("--kill-rate", type=float, default=0.8,
                        help="chance that a start is killed")
    parser.add_argument("--max-kills", type=int, default=4, help="kills per run at most")
    parser.add_argument("--max-delay", type=float, default=30.0,
                        help="a kill lands uniformly within this many seconds of a start")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kills' timing")
    parser.add_argument("--folder", type=Path, required=True, help="an empty or new folder")
    args = parser.parse_args(argv)
    root = args.folder.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = ensure_sample_dataset("mirror", folder=root)
    expected = references(root, dataset)
    registry, lock = root / "experiments.csv", threading.Lock()
    records = [RunRecord(f"run{i:02d}", SEEDS[i % len(SEEDS)], root / f"run{i:02d}" / "run")
               for i in range(args.runs)]
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda r: soak_one(
            configuration(r.folder.parent, dataset, r.seed, registry), r,
            random.Random(f"{args.seed}:{r.name}"), args, lock), records))
    figures = check(done, registry, expected, root)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))
    good = (figures["finished"] == figures["runs"] == figures["rows"]
            and not figures["runs_without_exactly_one_row"] and figures["registry_well_formed"]
            and figures["mismatches"] == 0 and not figures["leftover_files"]
            and not figures["runs_with_wrong_event_files"])
    print("soak passed" if good else "soak FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
