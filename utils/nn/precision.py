"""The compute dtype of a network (the launcher's ``dtype`` keyword): float32, or bfloat16.

bfloat16 is mixed precision: parameters and optimiser state stay float32 (the update is
float32); convolutions, matmuls and the activations between them run in bfloat16, their sums
in float32; batch-norm statistics and arithmetic, the logits, the softmax and the cost are
float32, so population statistics and model files are the same as in float32. Dropout masks
and noise are drawn in float32: the same seed drops the same units in both dtypes.
"""
from __future__ import annotations

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


def cpu_bfloat16_features() -> list[str]:
    """The bfloat16 instructions this CPU has (empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo
                          if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in _BF16_CPU_FLAGS if flag in flags]


def bfloat16_cpu_note() -> str:
    """What bfloat16 does on this CPU (XLA's CPU backend, measured: see README, Benchmark)."""
    features = cpu_bfloat16_features()
    has = (f"this CPU has {' and '.join(features)}, which XLA's YNNPACK matmul kernels use"
           if features else "this CPU has no bfloat16 instructions")
    return (f"bfloat16 on CPU: {has}, but XLA computes bfloat16 convolutions in float32 "
            f"(converting to and from bfloat16), so a conv net trains no faster than in "
            f"float32; bfloat16 pays off on GPUs with tensor cores")
