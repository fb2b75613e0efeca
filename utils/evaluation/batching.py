"""How many faces go through a network at once: batches bounded in the network's rows.

A model that averages test-time views runs each face as several rows (ten for a ten-crop), so
its batches are counted in rows, not faces: 256 faces of a ten-crop model were 2,560 rows, whose
activations (524 MB a layer for network V) grew ``utils.predict`` to 5.4 GB and spent 11.7 s of
CPU in page faults on 2,000 crops; at 160 rows it stays under 1 GB and runs as fast a row
(measured on 2 cores, AMD EPYC: ``python -m utils.predict.benchmark``). No JAX here: the
onnxruntime path shares it.
"""
from __future__ import annotations

SMALL_BATCH = 16  # faces: the small fixed shape, and the unit of a large one
BATCH_ROWS = 256  # the network's rows (views) in a large batch


def images_per_batch(rows_per_image: int) -> int:
    """Images in a large batch: as many as fill BATCH_ROWS network rows, a multiple of
    SMALL_BATCH and at least one small batch (then the two shapes are one)."""
    return max(SMALL_BATCH, BATCH_ROWS // rows_per_image // SMALL_BATCH * SMALL_BATCH)


def batch_bounds(n: int, large: int) -> list[tuple[int, int]]:
    """(start, stop) of the fixed-shape batches that cover n images (the last stop may pass n:
    padding): batches of ``large`` images while they fill it; then the rest in one more large
    batch if it fills more than half of one, else in small batches (SMALL_BATCH each, less than
    one of padding). A folder's last, partial run then takes the shape every run before it took,
    instead of a second one whose tracing, loading and (on a first run) compiling cost more
    than the padded rows: on the 2-core AMD EPYC, the small shape's first call in a process took
    0.5-0.7 s with its code cached, 4-5 s without, against at most 128 padded faces (0.1 s for
    the fast model)."""
    full = n // large * large
    if (n - full) * 2 > large:
        return [(start, start + large) for start in range(0, n, large)]
    return ([(start, start + large) for start in range(0, full, large)]
            + [(start, start + SMALL_BATCH) for start in range(full, n, SMALL_BATCH)])
