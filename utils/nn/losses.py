"""The cost and the error rate of the softmax output: one home for the launcher, the MLP, predict.

The thesis's logistic-regression layer (``mlp.layers.logistic_regression``) returns the linear
(pre-softmax) outputs, the logits; everything that turns them into probabilities, a cost or an
error rate is here. On a JAX array the functions run on the device in the array's dtype (the
training step); on a NumPy array they run on the host in float64 (evaluation reports, predict),
so a report's cost over thousands of images does not depend on float32 summation order.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def log_softmax(logits):
    """log p(y|x) for every class, per row (the last axis)."""
    if isinstance(logits, np.ndarray):
        z = logits.astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return jax.nn.log_softmax(logits, axis=-1)


def softmax(logits):
    """p(y|x), the thesis's ``p_y_given_x``."""
    if isinstance(logits, np.ndarray):
        return np.exp(log_softmax(logits))
    return jax.nn.softmax(logits, axis=-1)


def y_pred(logits):
    """The predicted class of each row."""
    return (np.argmax if isinstance(logits, np.ndarray) else jnp.argmax)(logits, axis=-1)


def negative_log_likelihood(logits, y, weights=None):
    """Mean -log p(y|x) over rows; ``weights`` (0/1 per row) masks padding rows out of it."""
    nll = -jnp.take_along_axis(log_softmax(logits), y[:, None], axis=-1)[:, 0]
    if weights is None:
        return jnp.mean(nll)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def cross_entropy(logits, targets):
    """Mean over rows of -sum_k t_k log p_k: the cost against target distributions (FER+'s
    crowd votes, label smoothing, mixup). One-hot targets give the negative log-likelihood."""
    return jnp.mean(-jnp.sum(targets * log_softmax(logits), axis=-1))


def multi_target_nll(logits, targets):
    """FER+'s multi-target cost: -log max_k t_k p_k (any of an image's marked classes will do)."""
    return jnp.mean(-jnp.max(jnp.log(targets) + log_softmax(logits), axis=-1))


def smooth_labels(targets, smoothing: float):
    """Label smoothing: (1 - e) t + e / K."""
    return (1.0 - smoothing) * targets + smoothing / targets.shape[-1]


def errors(logits, y, weights=None):
    """Fraction of misclassified rows (the thesis's error rate)."""
    wrong = (y_pred(logits) != y).astype(jnp.float32)
    if weights is None:
        return jnp.mean(wrong)
    return jnp.sum(wrong * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def cost_and_error(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean negative log-likelihood and error rate of host logits, in float64."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    log_p = log_softmax(np.asarray(logits))
    nll = -log_p[np.arange(len(labels)), labels].mean()
    return float(nll), float((y_pred(log_p) != labels).mean())
