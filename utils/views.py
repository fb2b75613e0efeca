"""Test-time views: combining a network's outputs over several views of one image.

The thesis's augmented test sums each test image's pre-softmax outputs over all its versions
before the argmax; predict turns the same sum, divided by the number of views, into
probabilities. Both go through ``summed_view_logits``.
"""
from __future__ import annotations

import numpy as np


def summed_view_logits(logits: np.ndarray, source_index: np.ndarray, n_sources: int):
    """float64 [n_sources, classes]: each source image's outputs summed over its views.

    ``logits`` [n_views_total, classes] holds one row per view; ``source_index`` names the
    source image of each row (the `/test_aug` layout, or consecutive views per face)."""
    summed = np.zeros((n_sources, logits.shape[1]), np.float64)
    np.add.at(summed, source_index, logits)
    return summed


def mean_view_logits(logits: np.ndarray, n_views: int) -> np.ndarray:
    """float64 [N, classes]: the mean over ``n_views`` consecutive rows per image."""
    n_sources = len(logits) // n_views
    source_index = np.repeat(np.arange(n_sources), n_views)
    return summed_view_logits(logits, source_index, n_sources) / n_views
