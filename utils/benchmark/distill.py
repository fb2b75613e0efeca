"""What a distillation teacher costs a training step: the launcher's own compiled step, without a
teacher, with the teacher's plain view and with its test-time views, timed in interleaved rounds.

    python -m utils.benchmark.distill --teacher trained_models/default --network S

The student trains as the ``modern`` recipe says (random 40x40 windows of rotated, zoomed,
flipped 48x48 images, Nesterov, label smoothing, no conv dropout), on random 48x48 images (the step's time does
not depend on their contents); ``--teacher`` is any saved model of 48x48 images. Each variant
is compiled first (its compile time reported), then the variants take turns ``--rounds``
times, each timing ``--steps`` steps; the figures are the best round's milliseconds per step
and the median round's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

VARIANTS = (("none", None), ("plain", "plain"), ("model", "model"))


def launcher_steps(network_name: str, batch_size: int, teacher: str | None, views: str | None):
    """The compiled Steps the launcher builds for the modern recipe with this network."""
    from loaders.sources import CLASS_NAMES
    from utils.experiments.keywords import resolve
    from utils.experiments.run_setup import NETWORK_KEYWORDS, training_steps
    from utils.experiments.teachers import load_teachers
    from utils.models.networks import get_network

    n_conv = len(get_network(network_name, im_dim=[40, 40]).options["p_dropConv"])
    given = {"recipe": "modern", "network": network_name, "batch_size": batch_size,
             "dataset": "random 48x48 images", "p_dropConv": [0.0] * n_conv}
    if teacher is not None:
        given.update(teacher=teacher, distill_views=views)
    config = resolve(given)
    info = {"class_names": list(CLASS_NAMES), "image_size": [48, 48], "variant": "raw"}
    network = get_network(config["network"], im_dim=[40, 40], n_classes=len(CLASS_NAMES),
                          **{k: config[k] for k in NETWORK_KEYWORDS})
    teachers = load_teachers(config, info)
    return training_steps(config, network, info, teachers=teachers)[2], teachers


def measure(network_name: str, teacher: str, batch_size: int, rounds: int, n_steps: int):
    import jax

    from utils.benchmark.workers import batch_arrays

    x, y = batch_arrays(batch_size, (48, 48))
    runs = {}
    for name, views in VARIANTS:
        steps, teachers = launcher_steps(network_name, batch_size,
                                         None if views is None else teacher, views)
        state = steps.init_state(0, 1, epoch_length=224)
        started = time.perf_counter()
        state, metrics = steps.train(state, x, y)
        jax.block_until_ready(metrics["cost"])
        forwards = 0 if teachers is None else teachers.distillation.teachers[0].n_views(views)
        runs[name] = {"steps": steps, "state": state, "compile_s": time.perf_counter() - started,
                      "teacher_forwards_per_image": forwards, "round_ms": []}
    for _ in range(rounds):
        for run in runs.values():
            started = time.perf_counter()
            for _ in range(n_steps):
                run["state"], metrics = run["steps"].train(run["state"], x, y)
            jax.block_until_ready(metrics["cost"])
            run["round_ms"].append(1e3 * (time.perf_counter() - started) / n_steps)
    return {name: {"compile_s": run["compile_s"], "forwards": run["teacher_forwards_per_image"],
                   "best_ms": min(run["round_ms"]),
                   "median_ms": statistics.median(run["round_ms"])}
            for name, run in runs.items()}


def report(result: dict, network: str, teacher: str, batch_size: int) -> str:
    alone = result["none"]["best_ms"]
    lines = [f"student {network} (modern recipe, 40x40 windows), batch {batch_size}; teacher "
             f"{teacher}: ms per training step",
             "| teacher | teacher forwards per image | best ms | median ms | vs the student "
             "alone | compile s |", "|---|---|---|---|---|---|"]
    for name, row in result.items():
        label = {"none": "none", "plain": "distill_views=plain",
                 "model": "distill_views=model"}[name]
        lines.append(f"| {label} | {row['forwards']} | {row['best_ms']:.1f} | "
                     f"{row['median_ms']:.1f} | {row['best_ms'] / alone:.2f}x | "
                     f"{row['compile_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark.distill",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="trained_models/default",
                        help="a saved model of 48x48 images (model.msgpack or its folder)")
    parser.add_argument("--network", default="S", help="the student's network")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    args = parser.parse_args(argv)
    from utils.support import host_tuning

    host_tuning.apply()
    try:
        result = measure(args.network, args.teacher, args.batch_size, args.rounds, args.steps)
    except ValueError as error:  # a keyword, network or teacher refused: one sentence
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(result, args.network, args.teacher, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
