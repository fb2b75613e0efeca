"""Shuffled mini-batches from a dataset file, scaled to float at load time.

Two modes yield bit-identical batches in the same order for the same (seed, epoch):
- shared=True (the launcher's trainShared=True): the split's uint8 pixels go to the device once;
  each batch is gathered and scaled there by a small jitted function.
- shared=False: a background thread reads each batch from the HDF5 file ahead of use (prefetch
  batches deep), scales it in numpy and puts it on the device.
Multi-host data parallelism: with process_count > 1 each process yields only its contiguous share
of every global batch; with `sharding` the shares are assembled into global arrays.
sampler='balanced' (training only) replaces the epoch's permutation by class-balanced batches
(``loaders.sampler``), as reproducible from (seed, epoch).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Iterator, NamedTuple

import jax
import numpy as np

from loaders.hdf5 import (dataset_info, open_dataset, read_split, read_targets,
                          read_test_aug_source_index, read_usage, read_votes, split_group)
from loaders.sampler import balanced_order

__all__ = ["Batch", "BatchLoader", "dataset_info", "read_split", "read_targets",
           "read_test_aug_source_index", "read_usage", "read_votes", "scale_pixels"]

_PIXEL_SCALE = np.float32(1 / 255)


def scale_pixels(x):
    """uint8 [..., H, W] (numpy or jax) -> float32 [..., H, W, 1] in [0, 1].

    A multiplication by float32(1/255), not a division, so numpy and XLA round identically.
    """
    return x.astype(np.float32)[..., None] * _PIXEL_SCALE


@jax.jit
def _gather_scaled(images, labels, targets, rows):
    return scale_pixels(images[rows]), labels[rows], None if targets is None else targets[rows]


class Batch(NamedTuple):
    x: jax.Array  # float32 [B, H, W, 1]
    y: jax.Array  # int32 [B]
    n_valid: int  # rows of x and y beyond n_valid are padding (repeats of the last real row)
    # float32 [B, K], the same rows' training targets in files that store them (FER+); else None
    targets: jax.Array | None = None


_END = object()


class BatchLoader:
    """Mini-batches of one split of a dataset file.

    drop_remainder=True (training) yields n_examples // batch_size full batches per epoch;
    False (evaluation) also yields the last partial batch, padded to batch_size by repeating its
    last row, so a compiled consumer sees one shape; Batch.n_valid counts the real rows.
    With process_count > 1 and no sharding, x and y are this process's rows of the global
    batch and n_valid counts the real ones among them; with a sharding they are the global
    arrays and n_valid counts the global batch's real rows.
    """

    def __init__(self, path: str | os.PathLike, split: str, batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, shared: bool = False,
                 drop_remainder: bool = True, prefetch: int = 2, process_index: int = 0,
                 process_count: int = 1, sharding: jax.sharding.Sharding | None = None,
                 sampler: str | None = None):
        if sampler not in (None, "balanced"):
            raise ValueError(f"sampler must be None or 'balanced', got {sampler!r}")
        if sampler and not (shuffle and drop_remainder):
            raise ValueError("sampler='balanced' orders training batches: it needs shuffle=True "
                             "and drop_remainder=True")
        _check_whole("seed", seed, minimum=0)
        _check_whole("prefetch", prefetch, minimum=0)
        _check_whole("process_count", process_count, minimum=1)
        _check_whole("batch_size", batch_size, minimum=1)
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} must be in 0..{process_count - 1}")
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} must be a multiple of "
                             f"process_count={process_count}: each process takes an equal share")
        self._file = open_dataset(path)
        try:
            group = split_group(self._file, split)
            self._images = group["images"]
            self._labels = group["labels"][...]
            self._targets = group["targets"][...] if "targets" in group else None
        except BaseException:
            self._file.close()
            raise
        self.n_examples = len(self._labels)
        self.image_shape = tuple(self._images.shape[1:])
        if drop_remainder and batch_size > self.n_examples:
            self._file.close()
            raise ValueError(f"batch_size={batch_size} is larger than split {split!r} of {path} "
                             f"({self.n_examples} images): drop_remainder=True would yield "
                             f"no batch")
        self.path, self.split, self.batch_size = path, split, batch_size
        self.shuffle, self.seed, self.shared, self.sampler = shuffle, seed, shared, sampler
        self.drop_remainder, self.prefetch, self.sharding = drop_remainder, prefetch, sharding
        self.process_index, self.process_count = process_index, process_count
        self.n_batches = (self.n_examples // batch_size if drop_remainder
                          else -(-self.n_examples // batch_size))
        self._producers: list[tuple[threading.Event, threading.Thread]] = []
        if shared:
            self._device_images = jax.device_put(self._images[...])
            self._device_labels = jax.device_put(self._labels)
            self._device_targets = (None if self._targets is None
                                    else jax.device_put(self._targets))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of the split used in `epoch`: default_rng([seed, epoch]), so a resumed
        run reproduces it; the identity when shuffle=False; with sampler='balanced', the rows of
        the epoch's class-balanced batches."""
        if self.sampler == "balanced":
            return balanced_order(self._labels, self.batch_size, self.n_batches, self.seed, epoch)
        if not self.shuffle:
            return np.arange(self.n_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_examples)

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` from number `start_batch` on (a resumed run skips those done)."""
        if not 0 <= start_batch <= self.n_batches:
            raise ValueError(f"start_batch={start_batch} must be in 0..{self.n_batches}")
        order = self.epoch_order(epoch)
        plan = (self._local_rows(order, number) for number in range(start_batch, self.n_batches))
        return self._yield_batches(plan)

    def _yield_batches(self, plan) -> Iterator[Batch]:
        if self.shared:
            for rows, n_valid in plan:
                x, y, targets = _gather_scaled(self._device_images, self._device_labels,
                                               self._device_targets, rows)
                yield self._batch(x, y, n_valid, targets)
        elif self.prefetch == 0:
            for rows, n_valid in plan:
                yield self._read_batch(rows, n_valid)
        else:
            yield from self._read_ahead(plan)

    def close(self) -> None:
        for stop, thread in self._producers:
            stop.set()
            thread.join()
        self._producers.clear()
        self._device_images = self._device_labels = self._device_targets = None
        self._file.close()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def _local_rows(self, order: np.ndarray, number: int) -> tuple[np.ndarray, int]:
        """This process's rows of global batch `number` (padded) and its n_valid."""
        rows = order[number * self.batch_size:(number + 1) * self.batch_size]
        n_real = len(rows)
        if n_real < self.batch_size:
            rows = np.concatenate([rows, np.full(self.batch_size - n_real, rows[-1])])
        share = self.batch_size // self.process_count
        first = self.process_index * share
        if self.sharding is None:
            n_real = min(max(n_real - first, 0), share)
        return rows[first:first + share].astype(np.int32), n_real

    def _read_batch(self, rows: np.ndarray, n_valid: int) -> Batch:
        # h5py reads increasing, distinct indices only: read those, then restore the order.
        unique_rows, positions = np.unique(rows, return_inverse=True)
        pixels = self._images[unique_rows][positions]
        targets = None if self._targets is None else self._targets[rows]
        return self._batch(scale_pixels(pixels), self._labels[rows], n_valid, targets)

    def _batch(self, x, y, n_valid: int, targets=None) -> Batch:
        return Batch(self._put(x), self._put(y), n_valid,
                     None if targets is None else self._put(targets))

    def _put(self, array):
        """One array of a batch on the device(s): whole, sharded, or assembled from every
        process's share of the global batch."""
        if self.sharding is None:
            return jax.device_put(array)
        if self.process_count == 1:
            return jax.device_put(array, self.sharding)
        return jax.make_array_from_process_local_data(self.sharding, np.asarray(array),
                                                      (self.batch_size, *array.shape[1:]))

    def _read_ahead(self, plan) -> Iterator[Batch]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for rows, n_valid in plan:
                    if not offer(self._read_batch(rows, n_valid)):
                        return
            except BaseException as error:  # handed to the consumer, which re-raises it
                offer(error)
                return
            offer(_END)

        thread = threading.Thread(target=produce, name="BatchLoader read-ahead", daemon=True)
        self._producers.append((stop, thread))
        thread.start()
        try:
            while True:
                try:
                    item = ready.get(timeout=0.1)
                except queue.Empty:
                    if thread.is_alive():
                        continue
                    raise ValueError(f"{self.path}: the loader was closed during an "
                                     f"epoch") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
            if (stop, thread) in self._producers:
                self._producers.remove((stop, thread))


def _check_whole(name: str, value, *, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
