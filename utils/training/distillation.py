"""Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the knowledge in a neural
network"): the student also learns the softened outputs of saved teachers, computed inside the
compiled train step on each augmented batch, so the targets follow the augmentation.

The cost of a step, with temperature T and weight w:

    (1 - w) * H  +  w * T^2 * KL(q_T || p_T)

- H: the step's own data cost (``objective.data_cost``: the NLL of the labels, or the
  cross-entropy against FER+'s votes, smoothed or mixed targets, FER+'s multi-target rule);
- p_T = softmax(z / T): the student's outputs z at temperature T;
- q_T: the teachers' softened outputs: per teacher softmax(v / T), v its logits averaged over
  its views of the image, then the mean over the teachers (an ensemble averages probabilities,
  as ``utils.evaluate`` and ``utils.predict`` do); mixup and CutMix blend q_T in the same
  proportions as the targets;
- T^2 keeps the soft term's gradients the same size whatever T (the paper's section 2).

What a teacher sees of a training image: the augmentation's affine warp (rotation, zoom,
shift), which keeps the image's size, is applied first; the teacher takes its views of that
warped image (``views="model"``: its test-time views, those that can be made from one image:
its online views, e.g. the ten-crop of a model trained on ``crop_to`` windows with flips, and
each also mirrored when its dataset variant holds mirrors; ``views="plain"``: its centre view,
one forward); the student's own window (``crop``/``crop_to``), flip, brightness, contrast and
erasing are then applied to the same warped image, bit for bit as without a teacher. The
teachers' parameters are arguments of the step, never differentiated.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from utils.nn.network import Network
from utils.training.mixing import MIX_STREAM, mix_batch
from utils.training.objective import Objective, data_cost, prepare_batch
from utils.training.online_augmentation import augment, augment_key, mirror
from utils.training.views import OnlineViews

VIEWS = ("model", "plain")  # the teacher's test-time views, or its centre view only


@dataclass(frozen=True)
class Teacher:
    """A saved model as a teacher: its network and how it looks at an image."""

    network: Network
    online: OnlineViews  # the online views of its training (ten-crop windows, mirrors)
    mirrored: bool  # its dataset variant holds each image's mirror: its views include them

    def n_views(self, views: str) -> int:
        return 1 if views == "plain" else self.online.n_views * (2 if self.mirrored else 1)

    def inputs(self, x, views: str):
        """[B * n_views, h, w, C]: each image's views, consecutive."""
        if views == "plain":
            return self.online.plain(x)
        if self.mirrored:
            x = jnp.stack([x, mirror(x)], axis=1).reshape(-1, *x.shape[1:])
        return self.online.all(x)


@dataclass(frozen=True)
class Distillation:
    teachers: tuple[Teacher, ...]
    temperature: float = 4.0
    weight: float = 0.9  # w: the soft term's share of the data cost
    views: str = "model"

    def __post_init__(self):
        if not self.teachers:
            raise ValueError("distillation needs at least one teacher")
        if not self.temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.weight!r}")
        if self.views not in VIEWS:
            raise ValueError(f"distill_views must be one of {VIEWS}, got {self.views!r}")

    def soft_targets(self, trees, x, dtype=jnp.float32):
        """q_T [B, classes] of images x [B, H, W, C]; ``trees``: each teacher's
        (params, bn_state)."""
        probabilities = []
        for teacher, (params, bn_state) in zip(self.teachers, trees, strict=True):
            logits, _ = teacher.network.apply(params, bn_state, teacher.inputs(x, self.views),
                                              train=False, dtype=dtype)
            mean = logits.reshape(x.shape[0], teacher.n_views(self.views), -1).mean(axis=1)
            probabilities.append(jax.nn.softmax(mean / self.temperature, axis=-1))
        return jax.lax.stop_gradient(sum(probabilities) / len(probabilities))

    def prepare_batch(self, objective: Objective, trees, step_key, x, y, targets,
                      n_classes: int, dtype=jnp.float32):
        """(the student's images, labels, target distribution or None, q_T): the objective's
        batch, with the teachers' targets of the warped images, mixed as the targets are."""
        warp, rest = objective.augmentation.split_warp()
        if warp:
            x = augment(x, augment_key(step_key), warp)
        soft = self.soft_targets(trees, x, dtype)
        x, labels, distribution = prepare_batch(replace(objective, augmentation=rest),
                                                step_key, x, y, targets, n_classes)
        if objective.mixup or objective.cutmix:
            # The same draws as the batch's mixing (the step's mixing stream; the proportions
            # and pairs depend on the key and the images' shape only).
            soft = mix_batch(jax.random.fold_in(step_key, MIX_STREAM), x, soft,
                             objective.mixup, objective.cutmix)[1]
        return x, labels, distribution, soft

    def cost(self, objective: Objective, logits, labels, distribution, soft
             ) -> tuple[Any, dict]:
        """(the data cost, {"hard_cost": H, "distill_kl": KL(q_T || p_T)})."""
        hard = data_cost(objective, logits, labels, distribution)
        kl = kl_divergence(soft, logits, self.temperature)
        cost = (1 - self.weight) * hard + self.weight * self.temperature ** 2 * kl
        return cost, {"hard_cost": hard, "distill_kl": kl}


def kl_divergence(q, logits, temperature: float):
    """Mean over rows of KL(q || softmax(logits / T)) (0 log 0 counted as 0)."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return jnp.mean(jnp.sum(xlogy(q, q) - q * log_p, axis=-1))
