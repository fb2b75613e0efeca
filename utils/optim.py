"""Optimisers and learning-rate schedules, through optax.

The learning rate is injected as a hyperparameter (``optax.inject_hyperparams``) so that a
compiled train step can set it every step from a schedule times an outside scale (annealing,
reduce-on-plateau) without recompiling, and so that it is saved with the optimiser state.
"""
from __future__ import annotations

import optax

from utils.names import closest_name

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
}


def _settings(kind: str, name: str, given: dict | None, defaults: dict) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"{kind} {name!r} has no setting {unknown[0]!r}"
                         f"{closest_name(unknown[0], defaults)}; its settings: {valid}")
    return {**defaults, **given}


def make_optimizer(name: str, learning_rate: float, settings: dict | None = None):
    """An optax optimiser with an injectable ``learning_rate`` hyperparameter."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}{closest_name(name, OPTIMIZERS)}; "
                         f"valid: {', '.join(OPTIMIZERS)}")
    constructor, fixed, defaults = OPTIMIZERS[name]
    options = _settings("optimizer", name, settings, defaults)
    return optax.inject_hyperparams(constructor)(learning_rate=learning_rate, **fixed, **options)


def make_schedule(name: str, learning_rate: float, settings: dict | None = None):
    """epoch (a float: step / steps per epoch) -> learning rate.

    Schedules are stated in epochs, so one compiled step serves phases whose epochs have
    different lengths. 'plateau' is constant here; its scale comes from validation.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}{closest_name(name, SCHEDULES)}; "
                         f"valid: {', '.join(SCHEDULES)}")
    options = _settings("lr_schedule", name, settings, SCHEDULES[name])
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
