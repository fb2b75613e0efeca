"""Soak of python -m utils.sweep: a sweep stopped again and again, then run to its end.

    python tests/soak_sweep.py --stops 4 --parallel 2 --seed 0 --folder /tmp/fer-soak-sweep

The sibling of tests/soak.py for whole sweeps: a 2 x 2 grid of the tiny network (two learning
rates x two seeds) on the built-in sample, swept once without interruption as the reference,
then swept again and again into another folder, each start stopped at a random moment (within
--max-delay seconds) by SIGTERM or SIGINT to the sweep alone (which passes SIGTERM to its
runs), up to --stops times, and finally run to its end. Every stopped start must exit 130 with
no run left running; at the end the sweep must exit 0 with one registry row per run, each model
bit for bit the reference's, each event file one point per epoch, the registry well-formed and
no lock or partial file left. Prints its figures as JSON, then ``soak passed`` or ``soak FAILED``.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run from anywhere: this checkout's modules, not an installed copy
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from launcher_support import PROJECT  # noqa: E402
from soak import events_follow_history, leftovers, registry_rows, same_model  # noqa: E402
from test_resume import environment, final_model  # noqa: E402

from loaders.sample import ensure_sample_dataset  # noqa: E402

GRID = ["--vary", "learning_rate=[0.02, 0.05]", "--seeds", "2"]
NAMES = ["learning_rate=0.02,seed=0", "learning_rate=0.05,seed=0",
         "learning_rate=0.02,seed=1", "learning_rate=0.05,seed=1"]


def sweep_command(dataset: Path, out: Path, parallel: int) -> list[str]:
    keywords = dict(network="tiny_net:tiny", dataset=str(dataset), batch_size=25, n_hidden=[8],
                    n_epochs=2, anneal_epochs=1, bn_batches=3, progress=False)
    return [sys.executable, "-m", "utils.sweep", *(f"{k}={v}" for k, v in keywords.items()),
            *GRID, "--parallel", str(parallel), "--out", str(out)]


def one_start(command: list[str], stop_after: float | None, rng: random.Random) -> dict:
    """Start the sweep; maybe stop it (SIGTERM or SIGINT) after ``stop_after`` seconds."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment(), cwd=PROJECT)
    signum = None
    if stop_after is not None:
        try:
            process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            signum = rng.choice((signal.SIGTERM, signal.SIGINT))
            process.send_signal(signum)
    output, errors = process.communicate(timeout=900)
    return {"signal": signum.name if signum else None, "exit": process.returncode,
            "resumed": output.count("resumed from its checkpoint"),
            "skipped": output.count("already finished, skipped"),
            "traceback": "Traceback" in errors}


def check(out: Path, reference: Path, starts: list[dict]) -> dict:
    rows, well_formed = registry_rows(out / "experiments.csv")
    per_run = {name: sum(row["savename"] == str(out / name) for row in rows) for name in NAMES}
    finished = [n for n in NAMES if (out / n / "model.msgpack").exists()]
    return {"starts": len(starts), "stops": sum(s["signal"] is not None for s in starts),
            "stops_by_signal": {name: sum(s["signal"] == name for s in starts)
                                for name in ("SIGTERM", "SIGINT")},
            "stopped_starts_not_130": sum(s["signal"] is not None and s["exit"] not in (0, 130)
                                          for s in starts),
            "tracebacks": sum(s["traceback"] for s in starts),
            "resumes": sum(s["resumed"] for s in starts),
            "skips": sum(s["skipped"] for s in starts), "last_exit": starts[-1]["exit"],
            "rows": len(rows), "registry_well_formed": well_formed,
            "runs_without_exactly_one_row": sorted(n for n, k in per_run.items() if k != 1),
            "mismatched_runs": sorted(n for n in NAMES if n not in finished or not same_model(
                final_model(out / n), final_model(reference / n))),
            "runs_with_wrong_event_files": sorted(n for n in finished
                                                  if not events_follow_history(out / n)),
            "leftover_files": leftovers(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=4, help="stopped starts before the last")
    parser.add_argument("--parallel", type=int, default=2, help="the sweep's --parallel")
    parser.add_argument("--max-delay", type=float, default=30.0,
                        help="a stop lands uniformly within this many seconds of a start")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stops' timing")
    parser.add_argument("--folder", type=Path, required=True, help="an empty or new folder")
    args = parser.parse_args(argv)
    root = args.folder.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started, rng = time.perf_counter(), random.Random(args.seed)
    dataset = ensure_sample_dataset("mirror", folder=root)
    reference = one_start(sweep_command(dataset, root / "reference", args.parallel), None, rng)
    assert reference["exit"] == 0, "the uninterrupted sweep failed"
    command, starts = sweep_command(dataset, root / "sweep", args.parallel), []
    for _ in range(args.stops):
        starts.append(one_start(command, rng.uniform(2.0, args.max_delay), rng))
        if starts[-1]["exit"] == 0:
            break  # it finished before the stop landed
    if starts[-1]["exit"] != 0:
        starts.append(one_start(command, None, rng))
    figures = check(root / "sweep", root / "reference", starts)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))
    good = (figures["last_exit"] == 0 and figures["rows"] == len(NAMES)
            and not figures["stopped_starts_not_130"] and not figures["tracebacks"]
            and figures["registry_well_formed"] and not figures["runs_without_exactly_one_row"]
            and not figures["mismatched_runs"] and not figures["runs_with_wrong_event_files"]
            and not figures["leftover_files"])
    print("soak passed" if good else "soak FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
