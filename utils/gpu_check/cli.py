"""The command line of ``python -m utils.gpu_check``: flags, checks, one line each, exit status."""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

CHECKS = ("primitives", "resume", "predict")
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
EXIT_FAILED, EXIT_USAGE = 1, 2


DESCRIPTION = ("Check the layer's primitives, a resumed launcher run and the prediction app "
               "on JAX's default backend (a GPU once jax's CUDA plugin is installed: pip "
               "install -e '.[cuda]'). One line per check; exit status 0 when every check "
               "passed, 1 when one failed.")
OPTIONS = {
    "--checks": dict(nargs="+", choices=CHECKS, default=list(CHECKS),
                     help="which checks to run (default: all three)"),
    "--epochs": dict(type=int, default=2,
                     help="epochs of the launcher runs' entropy-point search (default 2; each "
                          "run also retrains to the entropy point and anneals 1 epoch)"),
    "--tolerance": dict(type=float, default=0.0,
                        help="largest relative difference allowed between the resumed and the "
                             "uninterrupted run's models (default 0: bit for bit)"),
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.gpu_check", description=DESCRIPTION)
    for option, settings in OPTIONS.items():
        parser.add_argument(option, **settings)
    return parser.parse_args(argv)


def refusal(args: argparse.Namespace) -> str | None:
    """One sentence for an argument that cannot be used, else None."""
    if args.epochs < 1:
        return f"--epochs must be a whole number of at least 1, got {args.epochs}"
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        return (f"--tolerance must be a relative difference of 0 (bit for bit) or more, got "
                f"{args.tolerance}")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms.lower().split(","):
        return (f"JAX_PLATFORMS={platforms} leaves out the CPU backend the checks compare "
                f"with: unset it (JAX then picks the GPU as its default backend) or add cpu "
                f"(JAX_PLATFORMS={platforms},cpu)")
    return None


def deterministic_xla() -> str:
    """Add XLA's deterministic GPU mode to XLA_FLAGS, unless they name it already (then the
    researcher's value stands); returns the flags in force. Must run before JAX starts its
    backend, which reads them once. The flag is known to every jaxlib XLA of the pinned series
    (an unknown flag aborts the process) and only concerns GPUs."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_gpu_deterministic_ops" not in flags:
        flags = os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_FLAG}".strip()
    return flags


def describe_backend() -> str:
    import jax
    import jaxlib

    devices = jax.devices()
    return (f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; default backend "
            f"{jax.default_backend()}: {len(devices)} x {devices[0].device_kind}")


def run_checks(names: list[str], work: Path, args: argparse.Namespace) -> list:
    """Every chosen check's results; a check that raises is one failed result naming why."""
    from utils.gpu_check import photo, primitives, resume  # after the XLA flags are set
    runners = {"primitives": primitives.run_checks,
               "resume": lambda: resume.run_check(work / "runs", args.epochs, args.tolerance),
               "predict": lambda: photo.run_check(work)}
    results = []
    for name in CHECKS:
        if name not in names:
            continue
        try:
            lines = runners[name]()
        except Exception as error:  # noqa: BLE001 - reported as the check's failure
            lines = [primitives.Result(name, False, f"{type(error).__name__}: {error}")]
        for result in lines:
            print(f"{'PASS' if result.passed else 'FAIL'}  {result.name}: {result.figure}",
                  flush=True)
        results += lines
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    problem = refusal(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    flags = deterministic_xla()
    from utils.support import host_tuning
    host_tuning.apply()  # the launcher's process settings, as its runs have them
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', flags)}")
    print(describe_backend(), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        (Path(folder) / "runs").mkdir()
        results = run_checks(args.checks, Path(folder), args)
    failed = sum(not result.passed for result in results)
    print(f"{len(results) - failed} of {len(results)} checks passed"
          + (f", {failed} failed" if failed else ""))
    return EXIT_FAILED if failed else 0
