"""Mixup and CutMix: training images blended with a shuffled copy of their batch, and their
target distributions blended in the same proportion.

- mixup (Zhang et al. 2018): x = l x_i + (1 - l) x_j, l ~ Beta(a, a);
- CutMix (Yun et al. 2019): a box of x_i replaced by the same box of x_j, the box's area
  1 - l of the image with l ~ Beta(a, a), clipped at the borders (l then recomputed from the
  box actually pasted); its centre uniform over the image.
With both, each step draws one of them with probability 1/2. One l per batch, as the papers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Folded into the step's key, apart from the network's and augmentation's streams.
MIX_STREAM = 0x4D495821


def mixup(x, targets, lam, perm):
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def cutmix(x, targets, lam, perm, centre):
    """Paste the box of area (1 - lam) centred at ``centre`` (row, col fractions) from x[perm];
    returns the images, the targets and the proportion of each image left as it was."""
    _, height, width, _ = x.shape
    side = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = jnp.round(height * side), jnp.round(width * side)
    cy, cx = centre[0] * height, centre[1] * width
    top = jnp.clip(jnp.round(cy - cut_h / 2), 0, height)
    bottom = jnp.clip(jnp.round(cy + cut_h / 2), 0, height)
    left = jnp.clip(jnp.round(cx - cut_w / 2), 0, width)
    right = jnp.clip(jnp.round(cx + cut_w / 2), 0, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    mixed = jnp.where(box[None, :, :, None], x[perm], x)
    return mixed, kept * targets + (1 - kept) * targets[perm], kept


def mix_batch(key, x, targets, mixup_alpha: float, cutmix_alpha: float):
    """(images, targets, l, permutation) of a batch mixed as asked (alphas of 0 are off)."""
    k_perm, k_mixup, k_cutmix, k_centre, k_choice = jax.random.split(key, 5)
    perm = jax.random.permutation(k_perm, x.shape[0])
    results = []
    if mixup_alpha:
        lam = jax.random.beta(k_mixup, mixup_alpha, mixup_alpha)
        results.append((*mixup(x, targets, lam, perm), lam))
    if cutmix_alpha:
        lam = jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha)
        results.append(cutmix(x, targets, lam, perm, jax.random.uniform(k_centre, (2,))))
    if len(results) == 1:
        return (*results[0], perm)
    use_cutmix = jax.random.bernoulli(k_choice, 0.5)
    chosen = jax.tree_util.tree_map(lambda a, b: jnp.where(use_cutmix, b, a), *results)
    return (*chosen, perm)
