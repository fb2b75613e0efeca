"""What a training step minimises, and how it prepares its batch first.

The thesis's cost is the mean negative log-likelihood of the labels plus L1/L2 penalties on the
weights. On top of it, each optional:
- online augmentation of the images (``utils.training.online_augmentation``);
- targets other than the label: FER+'s crowd votes (``crossentropy``: their distribution;
  ``probability``: one class sampled from it per step; ``multi_target``: -log max_k t_k p_k), label
  smoothing, mixup and CutMix (``utils.training.mixing``), all as a target distribution per image
  and its cross-entropy. Without any of them the cost is the plain NLL of the labels, the same
  number bit for bit as the thesis's;
- class weights: each class's terms of the cost scaled by its weight, mean over the batch
  (``-mean_i sum_k w_k t_ik log p_ik``, so a label's cost is w_y NLL and a soft target's is
  what sampling its labels would weigh on average; multi_target: the weight of the class the
  maximum picks).
Random numbers come from the step's key, each user its own stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from utils.nn import losses
from utils.training.mixing import MIX_STREAM, mix_batch
from utils.training.online_augmentation import Augmentation, augment, augment_key

SAMPLE_STREAM = 0x53414D50
# How a dataset's labels become training targets, by its label_mode attribute (FER+; FER2013
# files have none): the stored label, a class sampled from the stored distribution per step,
# the distribution itself, or FER+'s multi-target rule.
TARGET_RULES = {None: "label", "majority": "label", "probability": "sample",
                "crossentropy": "distribution", "multi_target": "multi_target"}


@dataclass(frozen=True)
class Objective:
    augmentation: Augmentation = field(default_factory=Augmentation)
    targets: str = "label"  # one of TARGET_RULES' values
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) of mixup; 0: off
    cutmix: float = 0.0  # Beta(a, a) of CutMix; 0: off
    class_weights: tuple | None = None  # one weight per class; None: unweighted

    def __post_init__(self):
        if self.targets not in set(TARGET_RULES.values()):
            raise ValueError(f"targets must be one of {sorted(set(TARGET_RULES.values()))}, "
                             f"got {self.targets!r}")

    @property
    def uses_distribution(self) -> bool:
        return bool(self.targets in ("distribution", "multi_target") or self.label_smoothing
                    or self.mixup or self.cutmix)


def prepare_batch(objective: Objective, step_key, x, y, targets, n_classes: int):
    """(images, labels, target distribution or None) a step trains on."""
    if objective.augmentation:
        x = augment(x, augment_key(step_key), objective.augmentation)
    labels = y
    if objective.targets == "sample":
        labels = jax.random.categorical(jax.random.fold_in(step_key, SAMPLE_STREAM),
                                        jax.numpy.log(targets), axis=-1)
    if not objective.uses_distribution:
        return x, labels, None
    distribution = (targets if objective.targets in ("distribution", "multi_target")
                    else jax.nn.one_hot(labels, n_classes, dtype=x.dtype))
    if objective.label_smoothing:
        distribution = losses.smooth_labels(distribution, objective.label_smoothing)
    if objective.mixup or objective.cutmix:
        x, distribution, _, _ = mix_batch(jax.random.fold_in(step_key, MIX_STREAM), x,
                                          distribution, objective.mixup, objective.cutmix)
    return x, labels, distribution


def data_cost(objective: Objective, logits, labels, distribution):
    """The cost of the data term (the penalties on weights are added by the caller)."""
    if objective.class_weights is not None:
        return _weighted_cost(objective, logits, labels, distribution)
    if distribution is None:
        return losses.negative_log_likelihood(logits, labels)
    if objective.targets == "multi_target":
        return losses.multi_target_nll(logits, distribution)
    return losses.cross_entropy(logits, distribution)


def _weighted_cost(objective: Objective, logits, labels, distribution):
    weights = jax.numpy.asarray(objective.class_weights, logits.dtype)
    if objective.targets == "multi_target":
        scores = jax.numpy.log(distribution) + losses.log_softmax(logits)
        picked = weights[jax.numpy.argmax(scores, axis=-1)]
        return jax.numpy.mean(-picked * jax.numpy.max(scores, axis=-1))
    if distribution is None:
        distribution = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return losses.cross_entropy(logits, distribution * weights)


def balanced_class_weights(frequencies) -> list[float]:
    """Inverse class frequency, scaled so the training images' mean weight is 1:
    w_k = N / (K n_k) (scikit-learn's 'balanced'). ``frequencies``: images per class (soft
    targets: the sum of their distributions); every class must occur."""
    counts = np.asarray(frequencies, np.float64)
    if (counts <= 0).any():
        raise ValueError("a class with no training images has no balanced weight")
    return (counts.sum() / (len(counts) * counts)).tolist()
