"""Optimisers and learning-rate schedules, through optax.

The learning rate is injected as a hyperparameter (``optax.inject_hyperparams``) so that a
compiled train step can set it every step from a schedule times an outside scale (annealing,
reduce-on-plateau) without recompiling, and so that it is saved with the optimiser state.
Schedules count epochs (a float: step / steps per epoch), so one compiled step serves phases
whose epochs differ in length; cosine and onecycle span ``n_epochs``, so the retraining, which
stops at the entropy point, follows the search's rates up to there.
"""
from __future__ import annotations

import functools

import jax
import optax

from utils.support.names import closest_name

# name -> (optax constructor, fixed settings, the settings a researcher may change, defaults)
OPTIMIZERS = {
    "sgd": (optax.sgd, {}, {}),
    "momentum": (optax.sgd, {}, {"momentum": 0.9}),
    "nesterov": (optax.sgd, {"nesterov": True}, {"momentum": 0.9}),
    "adam": (optax.adam, {}, {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    "rmsprop": (optax.rmsprop, {}, {"decay": 0.9, "eps": 1e-8}),
    "adagrad": (optax.adagrad, {}, {"initial_accumulator_value": 0.1, "eps": 1e-7}),
    "adadelta": (optax.adadelta, {}, {"rho": 0.9, "eps": 1e-6}),
}

# name -> the settings it takes, with defaults. Epoch-based, as the Keras-era papers state them.
SCHEDULES = {
    "constant": {},
    "step": {"drop_every": 10, "factor": 0.5},  # lr * factor ** floor(epoch / drop_every)
    "exponential": {"gamma": 0.95},  # lr * gamma ** epoch (continuous in steps)
    "time": {"decay": 0.1},  # lr / (1 + decay * epoch)
    "plateau": {"factor": 0.1, "patience": 5, "rtol": 1e-4, "cooldown": 0},  # on validation
    # lr/2 (1 + cos(pi t / T)) over T = n_epochs - warmup_epochs, down to lr * final_factor
    "cosine": {"final_factor": 0.0},
    # optax.cosine_onecycle_schedule: from lr / div_factor up to lr over warmup_epochs, then
    # down to lr / (div_factor * final_div_factor) at n_epochs
    "onecycle": {"div_factor": 25.0, "final_div_factor": 1e4},
}


def _settings(kind: str, name: str, given: dict | None, defaults: dict) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"{kind} {name!r} has no setting {unknown[0]!r}"
                         f"{closest_name(unknown[0], defaults)}; its settings: {valid}")
    return {**defaults, **given}


def is_weight(params):
    """A mask of the weights (leaves named 'w'): no biases, no BN gamma/beta."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: getattr(path[-1], "key", None) == "w", params)


def _decoupled(constructor, weight_decay: float):
    """The optimiser with decoupled weight decay (Loshchilov & Hutter): each update is
    -lr * (the optimiser's own direction + weight_decay * w), on weights only. For adam this
    is optax.adamw."""
    @functools.wraps(constructor)  # its signature, which inject_hyperparams reads
    def build(learning_rate, **options):
        return optax.chain(constructor(learning_rate=1.0, **options),
                           optax.add_decayed_weights(-weight_decay, is_weight),
                           optax.scale(learning_rate))
    return build


def make_optimizer(name: str, learning_rate: float, settings: dict | None = None,
                   weight_decay: float = 0.0):
    """An optax optimiser with an injectable ``learning_rate`` hyperparameter."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}{closest_name(name, OPTIMIZERS)}; "
                         f"valid: {', '.join(OPTIMIZERS)}")
    constructor, fixed, defaults = OPTIMIZERS[name]
    options = _settings("optimizer", name, settings, defaults)
    if weight_decay:
        constructor = _decoupled(constructor, weight_decay)
    return optax.inject_hyperparams(constructor)(learning_rate=learning_rate, **fixed, **options)


def make_schedule(name: str, learning_rate: float, settings: dict | None = None,
                  n_epochs: int = 1, warmup_epochs: int = 0):
    """epoch (a float: step / steps per epoch) -> learning rate.

    'plateau' is constant here; its scale comes from validation. With ``warmup_epochs`` the
    rate rises linearly from 0 to ``learning_rate`` first, and the schedule starts after it
    (onecycle's rise is its own warm-up).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}{closest_name(name, SCHEDULES)}; "
                         f"valid: {', '.join(SCHEDULES)}")
    options = _settings("lr_schedule", name, settings, SCHEDULES[name])
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(n_epochs, learning_rate, warmup_epochs / n_epochs,
                                              options["div_factor"],
                                              options["final_div_factor"])
    schedule = _schedule(name, learning_rate, options, n_epochs - warmup_epochs)
    if not warmup_epochs:
        return schedule
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_epochs),
                                 schedule], [warmup_epochs])


def _schedule(name: str, learning_rate: float, options: dict, n_epochs: int):
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, n_epochs, options["final_factor"])
    if name in ("constant", "plateau"):
        return optax.constant_schedule(learning_rate)
    if name == "step":
        return optax.exponential_decay(learning_rate, options["drop_every"], options["factor"],
                                       staircase=True)
    if name == "exponential":
        return optax.exponential_decay(learning_rate, 1, options["gamma"])
    decay = options["decay"]
    return lambda epoch: learning_rate / (1.0 + decay * epoch)


def make_plateau(settings: dict | None = None):
    """optax's reduce-on-plateau, stepped once per epoch with the validation cost."""
    options = _settings("lr_schedule", "plateau", settings, SCHEDULES["plateau"])
    return optax.contrib.reduce_on_plateau(**options)
