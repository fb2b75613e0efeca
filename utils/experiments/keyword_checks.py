"""The checks of single keyword values: each takes (name, value) and returns the normalised value,
or raises ``KeywordError`` with one sentence naming the keyword, what it expects and what it got.

``utils.experiments.keywords`` pairs them with the keywords' names, defaults and meanings.
"""
from __future__ import annotations

from utils.training import online_augmentation

from utils.nn import precision
from utils.support.names import closest_name
from utils.nn.network import check_hidden_sizes
from utils.rna import get_activation
from utils.experiments.setting_ranges import setting_problem


class KeywordError(ValueError):
    """A keyword argument the launcher refuses."""


# ---- checks ---------------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(name, v):
    if not _is_int(v) or v <= 0:
        raise KeywordError(f"{name} must be a positive integer, got {v!r}")
    return v


def non_negative_int(name, v):
    if not _is_int(v) or v < 0:
        raise KeywordError(f"{name} must be an integer >= 0, got {v!r}")
    return v


def optional_positive_int(name, v):
    return None if v is None else positive_int(name, v)


def positive_number(name, v):
    if not _is_number(v) or v <= 0:
        raise KeywordError(f"{name} must be a number > 0, got {v!r}")
    return float(v)


def optional_positive_number(name, v):
    return None if v is None else positive_number(name, v)


def non_negative_number(name, v):
    if not _is_number(v) or v < 0:
        raise KeywordError(f"{name} must be a number >= 0, got {v!r}")
    return float(v)


def fraction(name, v):
    if not _is_number(v) or not 0 < v <= 1:
        raise KeywordError(f"{name} must be a number in (0, 1], got {v!r}")
    return float(v)


def momentum(name, v):
    if not _is_number(v) or not 0 <= v < 1:
        raise KeywordError(f"{name} must be a number in [0, 1), got {v!r}")
    return float(v)


def boolean(name, v):
    if not isinstance(v, bool):
        raise KeywordError(f"{name} must be True or False, got {v!r}")
    return v


def optional_path(name, v):
    if v is not None and (not isinstance(v, str) or not v):
        raise KeywordError(f"{name} must be a file path, got {v!r}")
    return v


def one_of(*choices):
    def check(name, v):
        if v not in choices:
            raise KeywordError(f"{name} must be one of {', '.join(map(repr, choices))}, got "
                               f"{v!r}{closest_name(v, choices)}")
        return v
    return check


def activation_name(name, v):
    try:
        return get_activation(v).name
    except ValueError as err:
        raise KeywordError(f"{name}: {err}") from None


def hidden_sizes(name, v):
    try:
        return list(check_hidden_sizes(v))
    except ValueError as err:
        raise KeywordError(str(err)) from None


def conv_dropout(name, v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)):
        raise KeywordError(f"{name} must be a list of drop probabilities, one per conv layer, "
                           f"got {v!r}")
    return list(v)


def image_size(name, v):
    if v is None:
        return None
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(d) and d > 0
                                                                  for d in v)):
        raise KeywordError(f"{name} must be [height, width], e.g. [48, 48], got {v!r}")
    return list(v)


def settings_dict(name, v):
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise KeywordError(f"{name} must be a dict of settings, e.g. {{'momentum': 0.9}}, "
                           f"got {v!r}")
    problem = setting_problem(name, v)
    if problem:
        raise KeywordError(problem)
    return dict(v)


def augment_spec(name, v):
    """The canonical 'crop:4,flip,...' string (None when off), or the parser's refusal."""
    try:
        return online_augmentation.parse(v, name).spec() or None
    except online_augmentation.AugmentError as err:
        raise KeywordError(str(err)) from None


def unit_interval(name, v):
    if not _is_number(v) or not 0 <= v <= 1:
        raise KeywordError(f"{name} must be a number in [0, 1], got {v!r}")
    return float(v)


def model_paths(name, v):
    paths = [v] if isinstance(v, str) else v
    if v is not None and not (isinstance(paths, (list, tuple)) and paths
                              and all(isinstance(p, str) and p for p in paths)):
        raise KeywordError(f"{name} must be a saved model (a model.msgpack or its run folder) "
                           f"or a list of them, got {v!r}")
    return None if v is None else list(paths)


def below_one(name, v):
    if not _is_number(v) or not 0 <= v < 1:
        raise KeywordError(f"{name} must be a number in [0, 1), got {v!r}")
    return float(v)


def compute_dtype_name(name, v):
    try:
        return precision.compute_dtype(v).name
    except ValueError as err:
        raise KeywordError(f"{err}{closest_name(str(v), precision.COMPUTE_DTYPES)}") from None


def device_count(name, v):
    return None if v is None else positive_int(name, v)




def class_weights(name, v):
    """None (off), 'balanced' (inverse class frequency, from the training split), or one
    weight >= 0 per class (their count is checked against the dataset's classes)."""
    if v is None or v == "balanced":
        return v
    if isinstance(v, str):
        raise KeywordError(f"{name} must be 'balanced' or a list of weights, one per class, got "
                           f"{v!r}{closest_name(v, ['balanced'])}")
    if (not isinstance(v, (list, tuple)) or not v or not all(_is_number(w) and w >= 0 for w in v)
            or not any(w > 0 for w in v)):
        raise KeywordError(f"{name} must be 'balanced' or a list of weights >= 0, one per class "
                           f"and not all 0, e.g. [1, 5, 1, 1, 1, 1, 1], got {v!r}")
    return [float(w) for w in v]


def sampler_name(name, v):
    if v is not None and v != "balanced":
        raise KeywordError(f"{name} must be None (each epoch a permutation of the split) or "
                           f"'balanced' (class-balanced mini-batches), got "
                           f"{v!r}{closest_name(str(v), ['balanced'])}")
    return v
