"""A run's folder: what it holds, starting or resuming in it, and its checkpoint.

Where a run starts from, in this order (one rule, as big_vision states it):
1. its own checkpoint: ``resume=True`` and the folder holds ``checkpoint.msgpack``;
2. else ``init_from=``: a saved model's parameters and BN statistics;
3. else the seed: fresh Glorot parameters from ``seed``.
A folder that already holds a run is never overwritten silently: ``resume=True`` continues a
stopped run, ``overwrite=True`` starts again (removing the earlier run's files first).
"""
from __future__ import annotations

from pathlib import Path

from utils import model_io
from utils.keywords import KeywordError

CHECKPOINT = "checkpoint.msgpack"
MODEL = "model.msgpack"
ENTROPY_POINT = "entropy_point.msgpack"
# Everything a run writes into its folder (the registry lives elsewhere).
RUN_FILES = (CHECKPOINT, MODEL, ENTROPY_POINT, "history.csv", "cost.png", "confusion.png",
             "results.json")


class RunFolderError(KeywordError):
    """The run folder refuses what was asked (resume with nothing to resume, overwrite...)."""


class RunFolder:
    def __init__(self, path, *, writes_files: bool = True):
        self.path = Path(path)
        self.writes_files = writes_files  # False on every host but process 0

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, *, resume: bool, overwrite: bool) -> bool:
        """True when there is a checkpoint to resume; else the folder is ready for a new run."""
        checkpoint, model = self.file(CHECKPOINT), self.file(MODEL)
        if resume:
            if checkpoint.exists():
                return True
            if model.exists():
                raise RunFolderError(f"{self.path} holds a finished run (see its results.json)"
                                     f"; nothing to resume. Pass overwrite=True to train again")
            raise RunFolderError(f"resume=True but {self.path} has no checkpoint to resume")
        if checkpoint.exists() or model.exists():
            what = "a finished run" if model.exists() else "a stopped run"
            if not overwrite:
                raise RunFolderError(f"{self.path} already holds {what}: pass resume=True to "
                                     f"continue it, overwrite=True to start again, or another "
                                     f"savename")
            if self.writes_files:
                for name in RUN_FILES:
                    self.file(name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return False

    def save_checkpoint(self, header: dict, trees: dict) -> None:
        if self.writes_files:
            model_io.save(self.file(CHECKPOINT), model_io.CHECKPOINT_FORMAT, header, trees)

    def load_checkpoint(self) -> tuple[dict, dict]:
        return model_io.load(self.file(CHECKPOINT), model_io.CHECKPOINT_FORMAT)

    def save_model(self, name: str, header: dict, params, bn_state) -> None:
        if self.writes_files:
            model_io.save(self.file(name), model_io.MODEL_FORMAT, header,
                          {"params": params, "bn_state": bn_state})

    def remove_checkpoint(self) -> None:
        """The run has finished: its model replaces the checkpoint."""
        if self.writes_files:
            self.file(CHECKPOINT).unlink(missing_ok=True)


def check_same_definition(path: Path, saved: dict, now: dict) -> None:
    """Refuse to resume a checkpoint saved by a run with other settings, naming each."""
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
        raise RunFolderError(f"{path} was saved by a run with different settings: {detail}; "
                             f"resume with the same keywords or start a new savename")
