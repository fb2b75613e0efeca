"""The models shipped under trained_models/, by name, and the views each is used with.

    python -m utils.predict photos/                   # the default model, its test-time views
    python -m utils.predict crops/ --model fast       # the fast model, its one view

``--model`` takes a file or folder; a value that names none and is a shipped model's name is
that model. Each shipped model has the views it is meant to be used with: the default and FER+
models their test-time views (the ten-crop), the fast model its plain view (what its speed and
its figures are for). No JAX here: ``--onnx`` resolves nothing through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from utils.predict.errors import PredictError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VIEW_CHOICES = ("model", "plain")  # every test-time view of the model, or its plain view


class ShippedModel(NamedTuple):
    path: Path
    views: str  # the views it is used with unless --views says otherwise


SHIPPED = {
    "default": ShippedModel(PROJECT_ROOT / "trained_models" / "default" / "model.msgpack",
                            "model"),
    "fast": ShippedModel(PROJECT_ROOT / "trained_models" / "fast" / "model.msgpack", "plain"),
    "ferplus": ShippedModel(PROJECT_ROOT / "trained_models" / "ferplus" / "model.msgpack",
                            "model"),
}
DEFAULT_MODEL = SHIPPED["default"].path


def model_path(value: Path) -> Path:
    """The file or folder ``value`` names, or the shipped model of that name."""
    if value.exists() or str(value) not in SHIPPED:
        return value  # a missing path is reported by the model loader, naming it
    shipped = SHIPPED[str(value)].path
    if not shipped.exists():
        raise PredictError(f"--model {value}: the shipped {value} model is not in this copy "
                           f"of the project ({shipped} is missing); restore it from the "
                           f"repository or give a model file")
    return shipped


def views_for(models: list[Path] | None, views: str | None) -> str:
    """The views a run uses: ``views`` when given, else those of the shipped models named
    (the plain view only if every one of them is used so), else every test-time view."""
    if views is not None:
        return views
    names = [str(model) for model in models or [Path("default")]]
    shipped = [SHIPPED[name].views for name in names
               if name in SHIPPED and not Path(name).exists()]
    return "plain" if shipped and len(shipped) == len(names) and set(shipped) == {
        "plain"} else "model"
