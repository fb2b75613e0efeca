"""The compiled steps of training and evaluation, and the state they carry.

``Steps`` builds, once per experiment, the only compiled functions a network needs:
``train`` (the batch prepared as the ``Objective`` says, with ``distillation`` the teachers'
softened outputs on it (``utils.training.distillation``), forward in train mode, backward,
optimiser update and, with ``ema_decay``, the moving average of the weights), ``eval``
(forward in test mode on the plain view) and ``eval_views`` (on every test-time view,
``utils.training.views``), plus ``batch_stats`` (a deterministic train-mode
forward that reports each batch's BN statistics, for the population statistics). The
train/eval flag is static, so however many times they are called each is traced once
(``Steps.traces`` counts it).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from utils.nn import precision

from utils import rna
from utils.nn.losses import errors
from utils.training.distillation import Distillation
from utils.training.objective import Objective, data_cost, prepare_batch
from utils.training.views import OnlineViews


class TrainState(NamedTuple):
    """Everything training needs to go on: a pytree, so it jits, donates and serialises."""

    params: Any
    bn_state: Any
    opt_state: Any
    step: jax.Array  # int32: updates done in this phase
    key: jax.Array  # uint32 key data: the base of every step's key (fold_in(key, step))
    lr_scale: jax.Array  # float32: multiplies the schedule (annealing, reduce-on-plateau)
    epoch_length: jax.Array  # int32: steps per epoch of this phase (schedules count epochs)
    ema_params: Any = ()  # with ema_decay: the moving average of params; () when off


def key_data(seed_or_key) -> jax.Array:
    key = jax.random.key(seed_or_key) if isinstance(seed_or_key, int) else seed_or_key
    return jax.random.key_data(key)


class Steps:
    """``dtype``: the compute dtype, float32 or bfloat16 (mixed precision, ``utils.nn.precision``);
    parameters, optimiser state and BN statistics are float32 either way. ``distillation``:
    the teachers and the distilled cost; ``teacher_trees``: each teacher's (params, bn_state),
    passed to every train step."""

    def __init__(self, network, optimizer, schedule, *, L1_reg=0.0, L2_reg=0.0,
                 bn_stats="population", bn_momentum=0.99, objective: Objective = Objective(),
                 views: OnlineViews = OnlineViews(), dtype="float32", ema_decay=0.0,
                 distillation: Distillation | None = None, teacher_trees=()):
        if bn_stats not in ("population", "ema"):
            raise ValueError(f"bn_stats must be 'population' or 'ema', got {bn_stats!r}")
        self.dtype = precision.compute_dtype(dtype)
        self.network = network
        self.optimizer = optimizer
        self.schedule = schedule
        self.L1_reg, self.L2_reg = float(L1_reg), float(L2_reg)
        self.bn_stats, self.bn_momentum = bn_stats, float(bn_momentum)
        self.objective, self.views = objective, views
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        self.ema_decay = float(ema_decay)
        self.n_classes = network.options.get("n_classes", 7)
        # Distillation's teachers: their (params, bn_state), placed by the caller (replicated
        # over the devices), are an argument of every train step, never part of its state.
        self.distillation, self.teacher_trees = distillation, teacher_trees
        self.traces = Counter()
        self.train = jax.jit(self._train_step, donate_argnums=0)
        if distillation is not None:
            compiled = self.train
            self.train = lambda state, x, y, targets=None: compiled(state, x, y, targets,
                                                                    self.teacher_trees)
        self.eval = jax.jit(self._eval_step)
        self.eval_views = jax.jit(self._eval_views_step)
        self.batch_stats = jax.jit(self._batch_stats)

    def init_state(self, init_key, train_key, epoch_length: int = 1,
                   start=None) -> TrainState:
        """Fresh parameters from ``init_key`` (so a retrain starts from the same values), or
        ``start``'s (params, bn_state) when given; a fresh optimiser state, and the moving
        average (when on) starting at the parameters in buffers of its own (the train step
        donates both)."""
        params, bn_state = (start if start is not None else self.network.init(
            jax.random.wrap_key_data(key_data(init_key))))
        ema = jax.tree_util.tree_map(jnp.array, params) if self.ema_decay else ()
        return TrainState(params=params, bn_state=bn_state,
                          opt_state=self.optimizer.init(params),
                          step=jnp.zeros((), jnp.int32), key=key_data(train_key),
                          lr_scale=jnp.ones((), jnp.float32),
                          epoch_length=jnp.asarray(epoch_length, jnp.int32), ema_params=ema)

    def model_params(self, state: TrainState):
        """The weights evaluated, tested and saved: the moving average when on."""
        return state.ema_params if self.ema_decay else state.params

    # ---- compiled bodies (Python runs once per trace) --------------------------------------
    def _train_step(self, state: TrainState, x, y, targets=None, teacher_trees=()):
        self.traces["train"] += 1
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        if self.distillation is None:
            x, labels, distribution = prepare_batch(self.objective, key, x, y, targets,
                                                    self.n_classes)
            soft = None
        else:
            x, labels, distribution, soft = self.distillation.prepare_batch(
                self.objective, teacher_trees, key, x, y, targets, self.n_classes, self.dtype)

        def cost_fn(params):
            logits, batch_states = self.network.apply(params, state.bn_state, x, train=True,
                                                      key=key, dtype=self.dtype)
            nll, parts = self._data_cost(logits, labels, distribution, soft)
            cost = nll + rna.l1_l2_penalty(params, self.L1_reg, self.L2_reg)
            return cost, (batch_states, nll, errors(logits, labels), parts)

        (cost, (batch_states, nll, error, parts)), grads = jax.value_and_grad(
            cost_fn, has_aux=True)(state.params)
        epoch = state.step.astype(jnp.float32) / state.epoch_length
        learning_rate = self.schedule(epoch) * state.lr_scale
        opt_state = state.opt_state._replace(
            hyperparams={**state.opt_state.hyperparams, "learning_rate": learning_rate})
        updates, opt_state = self.optimizer.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        bn_state = (rna.ema_statistics(state.bn_state, batch_states, self.bn_momentum)
                    if self.bn_stats == "ema" else state.bn_state)
        new_state = state._replace(params=params, bn_state=bn_state, opt_state=opt_state,
                                   step=state.step + 1,
                                   ema_params=self._moving_average(state, params))
        metrics = {"cost": cost, "nll": nll, "error": error, "learning_rate": learning_rate,
                   **parts}
        return new_state, metrics

    def _data_cost(self, logits, labels, distribution, soft):
        """(the data term, its parts: distillation's hard cost and KL; none without it)."""
        if soft is None:
            return data_cost(self.objective, logits, labels, distribution), {}
        return self.distillation.cost(self.objective, logits, labels, distribution, soft)

    def _moving_average(self, state: TrainState, params):
        """ema <- d ema + (1 - d) params, with d = min(ema_decay, (1 + t) / (10 + t)) after
        update t (TensorFlow's ExponentialMovingAverage with num_updates): the first updates
        average quickly, so the initial weights weigh nothing by the end of a short run."""
        if not self.ema_decay:
            return state.ema_params
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(self.ema_decay, (1 + t) / (10 + t))
        return rna.ema_statistics(state.ema_params, params, decay)

    def _eval_step(self, params, bn_state, x):
        self.traces["eval"] += 1
        logits, _ = self.network.apply(params, bn_state, self.views.plain(x), train=False,
                                        dtype=self.dtype)
        return logits

    def _eval_views_step(self, params, bn_state, x):
        """Logits of every online test-time view of each image: [B * n_views, classes]."""
        self.traces["eval_views"] += 1
        logits, _ = self.network.apply(params, bn_state, self.views.all(x), train=False,
                                        dtype=self.dtype)
        return logits

    def _batch_stats(self, params, bn_state, x):
        self.traces["batch_stats"] += 1
        _, batch_states = self.network.apply(params, bn_state, self.views.plain(x), train=True,
                                             key=None, dtype=self.dtype)
        return batch_states

    # ---- host-side loops -------------------------------------------------------------------
    def predict(self, params, bn_state, batches, gather=np.asarray, views: bool = False):
        """(logits, labels) over padded evaluation batches, padding rows dropped; with
        ``views``, the logits of every online view, n_views consecutive rows per image.

        ``gather`` turns a (possibly sharded, multi-host) device array into a NumPy array."""
        step, per_image = (self.eval_views, self.views.n_views) if views else (self.eval, 1)
        logits, labels = [], []
        for batch in batches:
            out = gather(step(params, bn_state, batch.x))
            logits.append(out[:batch.n_valid * per_image])
            labels.append(gather(batch.y)[:batch.n_valid])
        if not logits:
            return np.zeros((0, 0), np.float32), np.zeros((0,), np.int32)
        return np.concatenate(logits), np.concatenate(labels)

    def population_statistics(self, params, bn_state, batches):
        """BN population statistics (BN paper) over full training mini-batches."""
        states = [self.batch_stats(params, bn_state, batch.x) for batch in batches]
        if not states:
            raise ValueError("no training batches to compute batch-norm statistics from")
        return rna.population_statistics(states)
