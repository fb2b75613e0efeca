"""Class-balanced epoch orders: every mini-batch holds each class equally often.

FER2013's training set has 436 disgust images against 7,215 happy ones; ``sampler='balanced'``
(the launcher's keyword, ``BatchLoader(sampler='balanced')``) trains on mini-batches in which
each of the K classes present takes batch_size // K rows, the batch_size % K rows left over
going to the classes in turn. An epoch keeps the plain loader's number of batches, so
schedules and epoch counts mean what they did; a rare class's images repeat within an epoch,
a frequent class's are spread over several epochs.

Slot g of the run (batch b of epoch e holds slots e*T + b*B ... + B - 1, T = n_batches * B)
belongs to class ``class_order[g % K]``, a fixed seeded order of the classes. Each class draws
its images from its own stream: one seeded permutation of its images after another, so every
image of a class is used once before any is used again. Where a class's stream stands at the
start of an epoch is a count of the slots before it, so an epoch's order is a function of
(seed, epoch) alone: a resumed run reproduces it bit for bit, as the plain order
``default_rng([seed, epoch])`` does. Within a batch the rows are shuffled.
"""
from __future__ import annotations

import numpy as np

BALANCED_STREAM = 0x42414C  # "BAL": keeps these draws apart from the plain epoch orders


def balanced_order(labels: np.ndarray, batch_size: int, n_batches: int, seed: int,
                   epoch: int) -> np.ndarray:
    """Row indices of ``n_batches`` class-balanced batches of ``batch_size`` (int64
    [n_batches * batch_size], batch after batch) for this epoch."""
    classes = np.unique(labels)
    n_classes, total = len(classes), n_batches * batch_size
    class_order = np.random.default_rng([seed, BALANCED_STREAM]).permutation(n_classes)
    first = epoch * total  # the run's slots before this epoch
    slot_class = class_order[(first + np.arange(total)) % n_classes]
    rows = np.empty(total, np.int64)
    for position, index in enumerate(class_order):
        slots = np.flatnonzero(slot_class == index)
        # the class's slots in the epochs before: those g < first with g % K == position
        used = (first - position + n_classes - 1) // n_classes
        members = np.flatnonzero(labels == classes[index])
        rows[slots] = class_stream(members, seed, int(classes[index]), used, len(slots))
    shuffle = np.random.default_rng([seed, BALANCED_STREAM, epoch])
    return shuffle.permuted(rows.reshape(n_batches, batch_size), axis=1).ravel()


def class_stream(members: np.ndarray, seed: int, label: int, start: int,
                 count: int) -> np.ndarray:
    """Items ``start`` .. ``start + count - 1`` of a class's stream: permutation c of its
    ``members`` (seeded by (seed, label, c)) after permutation c - 1."""
    n = len(members)
    positions = np.arange(start, start + count)
    out = np.empty(count, np.int64)
    for cycle in range(start // n, (start + count - 1) // n + 1 if count else 0):
        permutation = np.random.default_rng([seed, BALANCED_STREAM, label, cycle]).permutation(n)
        in_cycle = positions // n == cycle
        out[in_cycle] = members[permutation[positions[in_cycle] % n]]
    return out

