"""Two variants of our own training (and inference) step against each other, two settings of
the environment or two compute dtypes: paired, alternating rounds.

    python -m utils.benchmark.paired V --env FER_WINOGRAD=0 FER_WINOGRAD=1 --rounds 16 --steps 2
    python -m utils.benchmark.paired V --dtypes float32 bfloat16   # the compute dtypes, the same way

The 2-core machines this project runs on drift by 10-25 % in speed from one minute to the
next, which hides a change of a few percent between two benchmark runs. Here each variant is
built in a worker process of its own, started with its environment variables set, so that
both those the code reads when it traces (``FER_WINOGRAD``...) and those read once when JAX
starts its backend (``XLA_FLAGS``: a change in a running process reaches no compilation) take
effect; the two processes' rounds alternate in ABBA order, so each round of one has a round of
the other seconds away, while the other process waits. The figure is the median of the paired
ratios (first setting's time over the second's: above 1, the second is faster) with its
quartiles, which say how far the machine's spread reaches.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import contextmanager

from utils.benchmark.measure import EVAL_BATCHES_PER_STEP


def parse_setting(text: str) -> dict[str, str]:
    """'NAME=VALUE[,NAME=VALUE...]' as a dict; ValueError in one sentence otherwise."""
    setting = {}
    for part in text.split(","):
        name, equals, value = part.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--env setting {text!r} is not NAME=VALUE[,NAME=VALUE...]: give "
                             f"each variable with its value, e.g. FER_WINOGRAD=1")
        setting[name.strip()] = value
    return setting


@contextmanager
def environment(setting: dict[str, str]):
    """The variables set for the block, restored (or removed) after it."""
    before = {name: os.environ.get(name) for name in setting}
    os.environ.update(setting)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def paired_ratios(first: list[float], second: list[float]) -> dict:
    """The median and quartiles of first[i] / second[i]."""
    ratios = [a / b for a, b in zip(first, second)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "q1": quartiles[0], "q3": quartiles[2]}


def measure(network: str, settings: list[dict], batch_size: int, im_dim, rounds: int,
            steps: int, dtypes=("float32", "float32")) -> dict:
    """ms per training step and per inference batch of each variant (an environment setting
    and a compute dtype), round by round, and the XLA_FLAGS each variant's process started
    with."""
    from utils.benchmark.process import WorkerProcess

    workers = []
    try:
        for setting, dtype in zip(settings, dtypes):
            with environment(setting):  # the process starts (and compiles) under its setting
                workers.append(WorkerProcess("ours", {"network": network, "im_dim": list(im_dim),
                                                      "batch_size": batch_size, "dtype": dtype}))
        times = [{"train": [], "eval": []} for _ in workers]
        batches = EVAL_BATCHES_PER_STEP * steps
        for number in range(rounds):
            order = (0, 1) if number % 4 in (0, 3) else (1, 0)  # ABBA: drifts cancel in pairs
            for index in order:
                times[index]["train"].append(workers[index].call("train", steps) / steps * 1e3)
                times[index]["eval"].append(workers[index].call("eval", batches) / batches * 1e3)
    finally:
        for worker in workers:
            worker.stop()
    result = {kind: {"ms": [statistics.median(t[kind]) for t in times],
                     "speedup": paired_ratios(times[0][kind], times[1][kind])}
              for kind in ("train", "eval")}
    result["processes"] = [{key: worker.info[key] for key in ("xla_flags", "compute_dtype")}
                           for worker in workers]
    return result


def variant_names(settings: list[dict], dtypes) -> list[str]:
    """Each variant as its setting, with its dtype where the two differ in it."""
    return [",".join([f"{k}={v}" for k, v in setting.items()]
                     + ([f"dtype={dtype}"] if dtypes[0] != dtypes[1] else []))
            for setting, dtype in zip(settings, dtypes)]


def report(result: dict, network: str, names: list[str], batch_size: int, rounds: int,
           steps: int) -> str:
    lines = [f"{network} @ {batch_size}, {rounds} alternating rounds of {steps} steps "
             f"(inference: {EVAL_BATCHES_PER_STEP * steps} batches): ms, medians; speed-up of "
             f"{names[1]} over {names[0]}, median of the paired ratios (quartiles)",
             f"| step | {names[0]} | {names[1]} | speed-up |", "|---|---|---|---|"]
    for kind, label in (("train", "training"), ("eval", "inference")):
        figures = result[kind]
        ratio = figures["speedup"]
        lines.append(f"| {label} | {figures['ms'][0]:.1f} | {figures['ms'][1]:.1f} | "
                     f"{ratio['median']:.3f}x ({ratio['q1']:.3f}-{ratio['q3']:.3f}) |")
    lines += [f"{name}'s process: XLA_FLAGS {started['xla_flags'] or '(none)'}, compute "
              f"dtype {started['compute_dtype']}"
              for name, started in zip(names, result["processes"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark.paired",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("network", help="a network name (A, S, V, ...)")
    parser.add_argument("--env", nargs=2, metavar="NAME=VALUE",
                        help="the two settings, each NAME=VALUE[,NAME=VALUE...]")
    parser.add_argument("--dtypes", nargs=2, default=["float32", "float32"],
                        choices=["float32", "bfloat16"], metavar="DTYPE",
                        help="the two variants' compute dtypes (default: float32 both)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--im-dim", type=int, nargs=2, default=[48, 48], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    args = parser.parse_args(argv)
    try:
        settings = [parse_setting(text) for text in args.env] if args.env else [{}, {}]
    except ValueError as error:
        parser.error(str(error))
    if settings[0] == settings[1] and args.dtypes[0] == args.dtypes[1]:
        parser.error("the two variants are the same: give two settings (--env A B) or two "
                     "dtypes (--dtypes float32 bfloat16), or both")
    if args.rounds < 2 or args.steps < 1:
        parser.error(f"--rounds {args.rounds} --steps {args.steps}: give at least 2 rounds "
                     f"of at least 1 step")
    from utils.support import host_tuning

    host_tuning.apply()
    from utils.models.networks import get_network

    try:
        get_network(args.network)
    except ValueError as error:
        parser.error(str(error))
    result = measure(args.network, settings, args.batch_size, args.im_dim, args.rounds,
                     args.steps, args.dtypes)
    print(report(result, args.network, variant_names(settings, args.dtypes), args.batch_size,
                 args.rounds, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
