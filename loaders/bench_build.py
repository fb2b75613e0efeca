"""Benchmark of the dataset builder on the full FER2013 CSV.

    python -m loaders.bench_build [SOURCE] [--variants raw mirror crop5 variant14]

Each build runs as `python -m loaders.build_dataset` in a child process (started by a small
one, so that the benchmark's own memory is not counted), so its peak memory is that process's
own maximum resident set size (os.wait4's ru_maxrss), interpreter and imports included; the
time is the child's wall-clock time, start-up included. Images/s counts the images
written (train + test + test_aug). The outputs go to a temporary folder, removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from loaders.augment import VARIANTS
from loaders.hdf5 import dataset_info
from loaders.sample import FULL_FER2013

# The targets for variant14 on the development machine (2 cores).
TARGET_SECONDS = 60
TARGET_PEAK_OVER_OUTPUT = 2.0


# Starts the build from a small process and writes its exit status, wall time and peak memory
# to the file argv[1]. Linux counts in a process's ru_maxrss the resident memory of the one it
# was exec'ed from, so a build started straight from a large process (a test session holding
# gigabytes) would report that process's memory as its own peak.
_STARTER = ("import os, subprocess, sys, time; started = time.perf_counter(); "
            "child = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(child.pid, 0); "
            "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} "
            "{time.perf_counter() - started} {usage.ru_maxrss}')")


def bench_variant(source: Path, variant: str, folder: Path) -> dict:
    out, report = folder / f"{variant}.h5", folder / f"{variant}.report"
    command = [sys.executable, "-m", "loaders.build_dataset", str(source), "--variant", variant,
               "--out", str(out), "--overwrite", "--quiet"]
    with tempfile.TemporaryFile("w+") as errors:
        subprocess.run([sys.executable, "-c", _STARTER, str(report), *command], stderr=errors,
                       check=True)
        status, seconds, peak_kib = report.read_text().split()
        if int(status):
            errors.seek(0)
            raise RuntimeError(f"building {variant} failed (status {status}): "
                               f"{errors.read().strip()}")
    seconds, usage_peak = float(seconds), int(peak_kib)
    report.unlink()
    sizes = dataset_info(out)["split_sizes"]
    n_images = sum(sizes.get(split, 0) for split in ("train", "test", "test_aug"))
    output_bytes = out.stat().st_size
    peak_bytes = usage_peak * 1024  # kilobytes on Linux
    out.unlink()
    return {"variant": variant, "seconds": seconds, "images": n_images,
            "images_per_second": n_images / seconds, "output_bytes": output_bytes,
            "peak_bytes": peak_bytes, "peak_over_output": peak_bytes / output_bytes,
            "split_sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.bench_build",
                                     description="Time and peak memory of each dataset build.")
    parser.add_argument("source", nargs="?", default=str(FULL_FER2013),
                        help="the full fer2013.csv(.gz) (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not source.exists():
        print(f"error: {source} not found; pass the full fer2013.csv or fer2013.csv.gz as SOURCE",
              file=sys.stderr)
        return 2
    print(f"source {source} ({source.stat().st_size / 2**20:.1f} MiB), {os.cpu_count()} CPUs")
    print(f"{'variant':<10} {'time s':>7} {'images':>9} {'images/s':>9} {'output MiB':>11} "
          f"{'peak MiB':>9} {'peak/output':>12}  split sizes")
    with tempfile.TemporaryDirectory(prefix="bench_build_") as folder:
        for variant in args.variants:
            try:
                result = bench_variant(source, variant, Path(folder))
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            sizes = " ".join(f"{split}={count}" for split, count in result["split_sizes"].items())
            print(f"{variant:<10} {result['seconds']:7.1f} {result['images']:9,d} "
                  f"{result['images_per_second']:9,.0f} {result['output_bytes'] / 2**20:11.1f} "
                  f"{result['peak_bytes'] / 2**20:9.1f} {result['peak_over_output']:12.2f}  "
                  f"{sizes}",
                  flush=True)
            if variant == "variant14":
                ok = (result["seconds"] < TARGET_SECONDS
                      and result["peak_over_output"] < TARGET_PEAK_OVER_OUTPUT)
                print(f"variant14 target (< {TARGET_SECONDS} s, peak < "
                      f"{TARGET_PEAK_OVER_OUTPUT:g} x output): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
