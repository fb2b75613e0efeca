"""Data parallelism with JAX's own SPMD machinery: a 1-D device mesh over the batch.

The global batch is split along its first axis across the mesh; parameters, BN statistics and
optimiser state are replicated. The computation is written for the global batch, so batch-norm
statistics and the cost are those of the global batch and results do not depend on the number
of devices (up to float rounding). With several hosts (after ``jax.distributed.initialize``)
the mesh spans every host's devices and each host feeds only its share of every batch.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel(NamedTuple):
    mesh: Mesh
    batch: NamedSharding  # arrays split along their first (batch) axis
    replicated: NamedSharding
    n_devices: int
    process_index: int
    process_count: int

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)

    def devices_record(self) -> dict:
        """What a run's records say it computed on: the platform (``cpu``, ``gpu``, ``tpu``),
        the devices' kind (JAX's ``device_kind``: ``cpu``, or a GPU's model name) and how many
        there are (every host's)."""
        first = self.mesh.devices.flat[0]
        return {"device_platform": first.platform, "device_kind": first.device_kind,
                "device_count": self.n_devices}

    def gather(self, array) -> np.ndarray:
        """A (possibly multi-host) global array as one NumPy array on this host."""
        if self.process_count > 1:
            return np.asarray(multihost_utils.process_allgather(array, tiled=True))
        return np.asarray(array)


def data_parallel(devices: int | None, batch_size: int) -> DataParallel:
    """The mesh for ``devices`` devices (None: all), refusing a batch that does not split."""
    available = jax.devices()
    if jax.process_count() > 1:
        if devices not in (None, len(available)):
            raise ValueError(f"devices={devices}: a multi-host run uses all {len(available)} "
                             f"devices of its {jax.process_count()} hosts")
        chosen = available
    else:
        if devices is not None and devices > len(available):
            raise ValueError(f"devices={devices} but only {len(available)} "
                             f"{available[0].platform.upper()} device(s) are available")
        chosen = available[:devices] if devices else available
    n = len(chosen)
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} does not split evenly across {n} devices: "
                         f"use a multiple of {n} (e.g. {batch_size - batch_size % n or n})")
    mesh = Mesh(np.array(chosen), ("batch",))
    return DataParallel(mesh=mesh, batch=NamedSharding(mesh, PartitionSpec("batch")),
                        replicated=NamedSharding(mesh, PartitionSpec()), n_devices=n,
                        process_index=jax.process_index(), process_count=jax.process_count())


def host_scalar(array) -> float:
    """A replicated scalar as a Python float, also when other hosts hold copies of it."""
    if not getattr(array, "is_fully_addressable", True):
        array = array.addressable_data(0)
    return float(array)


def host_copy(array) -> np.ndarray:
    """A replicated array on this host (for saving), also in a multi-host run."""
    if not getattr(array, "is_fully_addressable", True):
        array = array.addressable_data(0)
    return np.asarray(array)
