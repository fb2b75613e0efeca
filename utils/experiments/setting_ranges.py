"""The values the optimisers' and the schedules' settings may take.

optax takes any number silently (momentum=2 makes every step grow; eps=-1e-8 can divide by zero),
so the launcher checks each setting's value against its range before any work, beside the names
``utils.training.optim`` checks (and ``utils.experiments.keywords`` refuses any number that is not
finite).
"""
from __future__ import annotations

from typing import Callable

Range = tuple[str, Callable[[float], bool]]  # (how it reads, the test)

BELOW_ONE: Range = ("a number in [0, 1)", lambda v: 0 <= v < 1)
POSITIVE: Range = ("a number > 0", lambda v: v > 0)
NON_NEGATIVE: Range = ("a number >= 0", lambda v: v >= 0)
UP_TO_ONE: Range = ("a number in (0, 1]", lambda v: 0 < v <= 1)
WHOLE: Range = ("a whole number >= 0", lambda v: isinstance(v, int) and v >= 0)
COUNT: Range = ("a whole number >= 1", lambda v: isinstance(v, int) and v >= 1)

# keyword -> setting -> range. One table per keyword: rmsprop's decay (a rate in [0, 1)) is
# not the time schedule's decay (any number >= 0).
RANGES: dict[str, dict[str, Range]] = {
    "optimizer_options": {"momentum": BELOW_ONE, "b1": BELOW_ONE, "b2": BELOW_ONE,
                          "decay": BELOW_ONE, "rho": BELOW_ONE, "eps": POSITIVE,
                          "initial_accumulator_value": NON_NEGATIVE},
    "lr_schedule_options": {"drop_every": COUNT, "factor": UP_TO_ONE, "gamma": UP_TO_ONE,
                            "decay": NON_NEGATIVE, "patience": WHOLE, "rtol": NON_NEGATIVE,
                            "cooldown": WHOLE},
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def setting_problem(keyword: str, settings: dict) -> str | None:
    """What is wrong with a settings dict's values (the first problem), or None."""
    for name, value in settings.items():
        wanted = RANGES.get(keyword, {}).get(name)
        if wanted is not None and not (_is_number(value) and wanted[1](value)):
            return f"{keyword}: {name} must be {wanted[0]}, got {value!r}"
    return None
