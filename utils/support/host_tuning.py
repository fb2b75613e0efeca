"""Process-wide settings that speed up training on CPU hosts, applied by the entry points.

``apply()`` is called by the programs that train or benchmark (``python run_experiment.py``
and ``run_experiment()``, ``python -m utils.benchmark`` and its workers, the test suite's
conftest), before they start JAX's backend; importing this module (or ``utils``) changes
nothing. A program of your own that trains calls ``utils.support.host_tuning.apply()`` first.
Both settings leave every result unchanged (bit for bit for the allocator; float32 rounding
for the kernels) and neither slows NumPy. Set ``FER_HOST_TUNING=0`` to make ``apply()`` leave
the process as it was (the benchmark does, to measure them). ``applied()`` says what was set.

- XLA's CPU kernels. This jaxlib routes every matmul and convolution through its new YNN
  kernels by default. Their convolutions ran at 20-50 % of the classic (Eigen) kernels, the
  weight gradient worst, on both machines measured (a 2-core AMD EPYC and a 2-core Intel
  Sapphire Rapids), so ``--xla_cpu_experimental_ynn_fusion_type=`` (an empty list) brings
  back the classic kernels. Matmuls differ by CPU: on the EPYCs of the Zen 3 and Zen 4 kinds
  (family 25) YNN's were erratic (100-180 GFLOP/s against a steady 200), so everything stays
  classic there; on the Intel CPU the classic kernel took 95 ms for a dense layer's input
  gradient (g @ W.T, 128 x 1024 x 9216) that YNN does in 14 ms, and YNN's bfloat16 matmul runs
  at 3.7x its float32 one (the classic kernels convert bfloat16 to float32), so on Intel CPUs
  the list is ``individual_dot``: YNN matmuls, classic convolutions. On an AMD EPYC of the Zen
  5 kind (family 26) YNN's float32 matmuls trained A, S and V 5-11 % faster than the classic
  ones and F as fast (paired rounds, each setting in a process of its own, 2026-12-08; the
  day before's paired figures had compared one setting with itself, ``utils.benchmark.paired``
  then building both in one process); its bfloat16 ones ran at 1.8x its float32 peak, yet
  bfloat16 trained A, S and V at 0.87-1.00x their float32 steps (paired the same way; 0.98-1.03x
  once the narrow conv layers computed in float32, ``cpu_bfloat16.float32_layer``): Zen 5
  takes Intel's list for its float32 matmuls. The choice is by CPU kind as
  measured (``YNN_MATMUL_KINDS``), never assumed for a kind not measured. XLA reads its flags
  once, when JAX starts its CPU backend, so ``apply()`` must run before the first computation
  (later, it only reaches child processes); an unknown flag aborts the process, so it is only
  set on the jaxlib series it was measured on.
- glibc's allocator. XLA frees its temporaries after every step, and glibc hands any block
  over 32 MiB back to the kernel at once, so every step page-faulted its whole working set
  in again (about 230,000 faults, 0.9 GiB, per training step of net A at batch 128; a 75 MiB
  elementwise op took 40 ms instead of 7). Keeping freed memory in the heap (one arena, no
  mmap, no trimming) reuses it: the process keeps its peak working set (as it would anyway
  from the second step on) instead of returning it between steps.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform

# The jaxlib series whose XLA knows the flag (and defaults to the kernels it switches off).
_KERNEL_FLAG_SERIES = ("0.10",)
_KERNEL_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

_applied: list[str] = []
_called = False
_xla_flags_before: str | None = None  # XLA_FLAGS as apply() found them


def applied() -> list[str]:
    """The settings this process got, in words (empty when none)."""
    return list(_applied)


def untuned_environment() -> dict[str, str]:
    """This process's environment as it was before, for child processes run without tuning."""
    environment = dict(os.environ, FER_HOST_TUNING="0")
    if _called:
        environment.pop("XLA_FLAGS", None)
        if _xla_flags_before is not None:
            environment["XLA_FLAGS"] = _xla_flags_before
    return environment


def _jaxlib_series() -> str | None:
    try:
        from jaxlib import version
    except ImportError:
        return None
    return ".".join(version.__version__.split(".")[:2])


def cpuinfo_field(name: str) -> str | None:
    """The first value of /proc/cpuinfo's field ``name``, or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith(name)), None)
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD), or '' where it cannot be read."""
    return cpuinfo_field("vendor_id") or ""


@functools.lru_cache(maxsize=1)
def cpu_family() -> int | None:
    """/proc/cpuinfo's cpu family (AMD: 23 Zen 1-2, 25 Zen 3-4, 26 Zen 5), or None."""
    family = cpuinfo_field("cpu family")
    return int(family) if family and family.isdigit() else None


# The CPU kinds (vendor, family; None: every family) whose matmuls run through YNNPACK, as
# measured there (the docstring); every other kind keeps the classic kernels.
YNN_MATMUL_KINDS = (("GenuineIntel", None), ("AuthenticAMD", 26))


def listed_kind(kinds, vendor: str | None = None, family: int | None = None):
    """The (vendor, family) entry of ``kinds`` (family None: every family of the vendor) this
    CPU kind (default: this machine's) is listed under, or None."""
    vendor = cpu_vendor() if vendor is None else vendor
    family = cpu_family() if family is None else family
    return next(((kind, measured) for kind, measured in kinds
                 if kind == vendor and measured in (None, family)), None)


def kernel_flag(vendor: str | None = None, family: int | None = None) -> str:
    """The XLA flag ``apply()`` sets on a CPU of this kind (default: this machine's)."""
    ynn = listed_kind(YNN_MATMUL_KINDS, vendor, family) is not None
    return f"{_KERNEL_FLAG_NAME}={'individual_dot' if ynn else ''}"


_KERNEL_CHOICE = {"": "classic Eigen CPU kernels",
                  "individual_dot": "YNNPACK matmuls, classic Eigen convolutions"}


def ynn_matmuls() -> bool:
    """Whether this process's XLA (by its XLA_FLAGS) runs matmuls through YNNPACK's kernels:
    the default of the jaxlib series measured, unless the flag's list leaves them out."""
    if _jaxlib_series() not in _KERNEL_FLAG_SERIES:
        return False
    chosen = [flag.split("=", 1)[1] for flag in os.environ.get("XLA_FLAGS", "").split()
              if flag.startswith(_KERNEL_FLAG_NAME + "=")]
    if not chosen:
        return True
    value = chosen[-1]  # a list, or additions to / removals from the defaults (+x, -x)
    return "individual_dot" in value.replace("-individual_dot", "") or (
        value.startswith(("+", "-")) and "-individual_dot" not in value)


def _choose_xla_kernels() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    flag = kernel_flag()
    if _KERNEL_FLAG_NAME not in flags:  # else the researcher chose
        if _jaxlib_series() not in _KERNEL_FLAG_SERIES:
            return
        flags = os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    if flag in flags.split():  # set here, or inherited from a tuned parent process
        _applied.append(f"XLA_FLAGS {flag} ({_KERNEL_CHOICE[flag.split('=', 1)[1]]})")


def _keep_freed_memory() -> None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    # Arena limit first: threads created from now on (XLA's) share the main heap.
    # A trim threshold of -1 turns trimming off (mallopt(3)); the largest positive one, 2 GiB,
    # still let the heap shrink after a step whose temporaries passed it.
    if (libc.mallopt(_M_ARENA_MAX, 1) and libc.mallopt(_M_MMAP_MAX, 0)
            and libc.mallopt(_M_TRIM_THRESHOLD, -1)):
        _applied.append("glibc malloc: one arena, no mmap, no trimming (freed memory reused)")


def apply() -> list[str]:
    """Apply both settings to this process (once; FER_HOST_TUNING=0: none); return applied()."""
    global _called, _xla_flags_before
    if _called or os.environ.get("FER_HOST_TUNING", "1") == "0":
        return applied()
    _called, _xla_flags_before = True, os.environ.get("XLA_FLAGS")
    _choose_xla_kernels()
    _keep_freed_memory()
    return applied()
