"""The compute dtype of a network (the launcher's ``dtype`` keyword): float32, or bfloat16.

bfloat16 is mixed precision: parameters and optimiser state stay float32 (the update is
float32); convolutions, matmuls and the activations between them run in bfloat16, their sums
in float32; batch-norm statistics and arithmetic, the logits, the softmax and the cost are
float32, so population statistics and model files are the same as in float32. Dropout masks
and noise are drawn in float32: the same seed drops the same units in both dtypes. On a CPU a
conv layer computes in float32 where its convolution has no bfloat16 kernel there
(``cpu_bfloat16.float32_layer``), taking and giving bfloat16.
"""
from __future__ import annotations

from functools import lru_cache

from utils.support import host_tuning

COMPUTE_DTYPES = ("float32", "bfloat16")

# CPU features that bfloat16 matmul kernels use (/proc/cpuinfo flags).
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def compute_dtype(name):
    """The dtype named ``name`` (a string or a dtype), refused unless it is a compute dtype."""
    import jax.numpy as jnp  # here: the benchmark's coordinator reads this module without JAX

    try:
        dtype = jnp.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    return dtype


def accumulation_dtype(dtype):
    """What sums of ``dtype`` values are kept in: float32, or float64 for float64 (the
    gradient checks run in float64)."""
    import jax.numpy as jnp

    return jnp.promote_types(dtype, jnp.float32)


def bfloat16_on_cpu(x) -> bool:
    """Whether x is bfloat16 and runs on a CPU: where conv2d takes its bfloat16 forms
    (``cpu_bfloat16.bfloat16_conv``)."""
    import jax
    import jax.numpy as jnp

    return x.dtype == jnp.bfloat16 and jax.default_backend() == "cpu"


def cpu_bfloat16_features() -> list[str]:
    """The bfloat16 instructions this CPU has (empty where unknown)."""
    flags = (host_tuning.cpuinfo_field("flags") or "").split()
    return [flag for flag in _BF16_CPU_FLAGS if flag in flags]


@lru_cache(maxsize=None)
def bfloat16_matmul_convs() -> bool:
    """Whether wide bfloat16 convolutions run as bfloat16 matrix products on this CPU
    (``cpu_bfloat16.bfloat16_conv``): where it has bfloat16 instructions and XLA runs matmuls
    through YNNPACK (``host_tuning``: the Intel and Zen 5 CPUs measured; on Intel YNN's
    bfloat16 matmul ran at 3.7x its float32 one). Decided once per process, when the first
    network is traced."""
    return bool(cpu_bfloat16_features()) and host_tuning.ynn_matmuls()


def bfloat16_cpu_note() -> str:
    """What bfloat16 does on this CPU, and the advice that goes with it (the launcher prints
    it for a bfloat16 run on a CPU; figures in the README, Benchmark)."""
    features = cpu_bfloat16_features()
    if bfloat16_matmul_convs():
        return (f"bfloat16 on CPU: this CPU has {' and '.join(features)}: the matmuls and the "
                f"convolutions with 128 or more channels in and out run as bfloat16 matrix "
                f"products, the other conv layers in float32; where measured (A, S and V on a "
                f"Zen 5, README: Benchmark) that trained at 0.98-1.03x float32's speed and "
                f"inferred at 0.80-0.89x, so dtype=float32 is as fast and exact")
    why = (f"this CPU has {' and '.join(features)}, but XLA's kernels chosen for it "
           f"(utils.support.host_tuning) widen bfloat16 to float32" if features else
           "this CPU has no bfloat16 instructions")
    return (f"bfloat16 on CPU: {why}, so bfloat16 trains no faster than float32 here; "
            f"dtype=float32 is as fast and exact (bfloat16 pays on GPUs with tensor cores)")
