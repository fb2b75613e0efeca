"""The benchmark's command line: options, the whole run, the printed report and the JSON."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from utils.benchmark.measure import (EVAL_BATCHES_PER_STEP, PEERS, available_peers,
                                     measure_device_scaling, measure_network, measure_pipeline,
                                     add_derived_figures)
from utils.benchmark.report import format_report
from utils.training import online_augmentation
from utils.nn.precision import COMPUTE_DTYPES, bfloat16_cpu_note
from utils.support.safe_files import atomic_write

DEFAULT_AUGMENT = "rotate:10,scale:0.1,crop:4,flip,erase:0.25"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark", description=(
        "Training and inference speed of the networks on this machine, against the same "
        "networks in flax.linen and PyTorch."))
    parser.add_argument("--networks", nargs="+", default=["A"], metavar="NAME",
                        help="networks to measure (default: A)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128], metavar="B")
    parser.add_argument("--im-dim", nargs=2, type=int, default=[48, 48], metavar=("H", "W"))
    parser.add_argument("--dtypes", nargs="+", choices=COMPUTE_DTYPES,
                        default=list(COMPUTE_DTYPES),
                        help="compute dtypes to measure every implementation in (default: "
                             "float32 bfloat16; bfloat16 is mixed precision: ours and flax "
                             "with float32 parameters, PyTorch under autocast)")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                        help="peer implementations: flax.linen, PyTorch (NCHW, its default), "
                             "PyTorch with channels_last activations (default: all three; "
                             "none: --peers alone)")
    parser.add_argument("--augment", default=DEFAULT_AUGMENT, metavar="SPEC",
                        help="also time our training step with this online augmentation "
                             "inside it (the launcher's augment= syntax; default "
                             f"{DEFAULT_AUGMENT!r}, every part that keeps the image size; "
                             "'' to skip)")
    parser.add_argument("--rounds", type=int, help="timing rounds (default 5; quick: 1)")
    parser.add_argument("--steps", type=int,
                        help="training steps per round (default 5; quick: 2); inference "
                             "batches are 3x as many")
    parser.add_argument("--quick", action="store_true",
                        help="one short round, a small matmul: a smoke test, not figures")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="skip the input-pipeline measurement")
    parser.add_argument("--pipeline-network", metavar="NAME",
                        help="network trained for the input-pipeline measurement "
                             "(default: the first of --networks)")
    parser.add_argument("--dataset", metavar="PATH",
                        help="HDF5 dataset for the input pipeline (default: the built-in "
                             "sample, mirror variant, built if missing)")
    parser.add_argument("--split", default="train", help="its split (default: train)")
    parser.add_argument("--pipeline-batches", type=int, metavar="N",
                        help="batches per measured epoch (default: the whole split)")
    parser.add_argument("--devices", nargs="+", type=int, metavar="N",
                        help="also measure our training and inference with the batch split "
                             "across each of these device counts (first network and batch "
                             "size; on a CPU, forced host devices: e.g. --devices 1 2 4)")
    parser.add_argument("--host-tuning", choices=("on", "off"), default="on",
                        help="the product's process settings (utils.support.host_tuning) in the "
                             "workers (default: on)")
    return _checked(parser, parser.parse_args(argv))


def _checked(parser, args):
    """The parsed options with their quick-mode defaults, or the parser's one-line refusal."""
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.steps is None:
        args.steps = 2 if args.quick else 5
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.devices and min(args.devices) < 1:
        parser.error("--devices counts must be at least 1")
    if any(b < 1 for b in args.batch_sizes) or any(d < 1 for d in args.im_dim):
        parser.error("batch sizes and image sizes must be positive")
    if args.augment:
        _check_augment(parser, args.augment, tuple(args.im_dim))
    return args


def _check_augment(parser, spec: str, im_dim: tuple) -> None:
    """--augment must parse and keep the image size: the step is timed with and without it."""
    try:
        augmentation = online_augmentation.parse(spec, "--augment")
    except online_augmentation.AugmentError as error:
        parser.error(str(error))
    if augmentation.output_size(*im_dim) != im_dim:
        parser.error(f"--augment {spec!r} changes the image size (crop_to); the step with and "
                     f"without it must see the same size: use crop:P")


def command_line(args) -> str:
    return "python -m utils.benchmark " + shlex.join(args.argv)


def run(args, log=print) -> dict:
    from utils.support import host_tuning

    if args.host_tuning == "off":  # the workers inherit this environment
        os.environ.clear()
        os.environ.update(host_tuning.untuned_environment())
    else:
        host_tuning.apply()
    # Several processes share one GPU: each takes memory as it needs it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    measured = _measure_networks(args, log)
    device = measured["device"]
    pipeline = None
    if not args.no_pipeline:
        dataset = args.dataset
        if dataset is None:
            from loaders.sample import ensure_sample_dataset

            dataset = str(ensure_sample_dataset("mirror"))
        try:
            pipeline = measure_pipeline(args.pipeline_network or args.networks[0],
                                        args.batch_sizes[0], dataset, args.split,
                                        args.pipeline_batches, max(args.rounds, 2), log)
        except RuntimeError as error:
            pipeline = {"error": str(error).strip()}
    scaling = None
    if args.devices:
        scaling = measure_device_scaling(args.networks[0], args.batch_sizes[0], args.im_dim,
                                         sorted(set(args.devices)), args.rounds, args.steps,
                                         log)
    return {"command": command_line(args),
            "device": device, "host_tuning": measured["host_tuning"],
            "bfloat16_note": (bfloat16_cpu_note() if "bfloat16" in args.dtypes
                              and device.get("platform") == "cpu" else None),
            "settings": {"rounds": args.rounds, "steps": args.steps,
                         "eval_batches": EVAL_BATCHES_PER_STEP * args.steps,
                         "quick": args.quick, "dtypes": args.dtypes,
                         "matmul_size": measured["matmul_size"],
                         "host_tuning": args.host_tuning},
            "matmul_peak_gflops": measured["matmul_peak_gflops"],
            "results": measured["results"], "input_pipeline": pipeline,
            "device_scaling": scaling}


def _measure_networks(args, log) -> dict:
    """Every network x batch size x dtype, and the matmul peak of each dtype (GFLOP/s)."""
    peers = available_peers(args.peers)
    matmul_size = 512 if args.quick else None
    results, peak_seconds = [], {dtype: [] for dtype in args.dtypes}
    for name in args.networks:
        for batch_size in args.batch_sizes:
            for dtype in args.dtypes:
                result, seconds = measure_network(name, batch_size, dtype, args.im_dim, peers,
                                                  args.rounds, args.steps, matmul_size, log,
                                                  augment=args.augment or None)
                results.append(result)
                peak_seconds[dtype] += seconds
                if args.json:  # a run stopped by a time limit keeps what it measured
                    atomic_write(Path(args.json), json.dumps(
                        {"command": command_line(args), "partial": True, "results": results},
                        indent=1).encode())
    size = results[0]["matmul_size"]
    peak_gflops = {dtype: 2 * size ** 3 / min(seconds) / 1e9
                   for dtype, seconds in peak_seconds.items()}
    add_derived_figures(results, peak_gflops)
    tuning = [result.pop("host_tuning", None) for result in results]  # the same in each
    return {"results": results, "matmul_peak_gflops": peak_gflops, "host_tuning": tuning[0],
            "matmul_size": size, "device": results[0].get("device") or {}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    report = run(args, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        atomic_write(Path(args.json), json.dumps(report, indent=1).encode())
    return 0

