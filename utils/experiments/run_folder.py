"""A run's folder: what it holds, starting or resuming in it, and its checkpoint.

Where a run starts from, in this order (one rule, as big_vision states it):
1. its own checkpoint: ``resume=True`` and the folder holds ``checkpoint.msgpack``;
2. else ``init_from=``: a saved model's parameters and BN statistics;
3. else the seed: fresh Glorot parameters from ``seed``.
A folder that already holds a run is never overwritten silently: ``resume=True`` continues a
stopped run, ``overwrite=True`` starts again (removing the earlier run's files first).

A folder is one run's while it runs (``claimed``: a lock naming its process, so a second
launcher with the same savename is refused), each checkpoint keeps the one before it
(``checkpoint.previous.msgpack``), and a run resumes only on the dataset it was trained on,
compared by contents (``check_same_dataset``), wherever the dataset or the folder now are.
"""
from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from pathlib import Path

from utils.experiments import console

from utils.models import model_io
from utils.experiments.keywords import DEFAULTS, KeywordError
from utils.support.safe_files import LockHeld, exclusive_lock, remove_stale_temporaries

CHECKPOINT = "checkpoint.msgpack"
PREVIOUS_CHECKPOINT = "checkpoint.previous.msgpack"  # the one before, should the newest fail
MODEL = "model.msgpack"
ENTROPY_POINT = "entropy_point.msgpack"
LOCK = ".run.lock"
# Everything a run writes into its folder (the registry lives elsewhere).
RUN_FILES = (CHECKPOINT, PREVIOUS_CHECKPOINT, MODEL, ENTROPY_POINT, "history.csv", "cost.png",
             "confusion.png", "results.json")
# Where the data, the run folder and the teachers are, not what they are: a resumed run may
# find them elsewhere (the dataset and the teachers are compared by their identity instead).
LOCATIONS = ("dataset", "savename", "teacher")


class RunFolderError(KeywordError):
    """The run folder refuses what was asked (resume with nothing to resume, overwrite...)."""


class RunFolderWriteError(RunFolderError):
    """A file of the run could not be written (a full disk); what was saved before is intact."""


class RunFolder:
    def __init__(self, path, *, writes_files: bool = True):
        self.path = Path(path)
        self.writes_files = writes_files  # False on every host but process 0

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def claimed(self):
        """The folder is this run's until the block ends: refused (naming the holder) while
        another live process has it; a lock or temporary files left by dead ones are cleared."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"savename={str(self.path)!r} is a file, not a folder: give "
                                 f"the run a folder of its own")
        created = not self.path.exists()
        try:
            with ExitStack() as stack:
                if self.writes_files:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._lock(stack)
                yield self
        finally:
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()  # refused before anything was written: leave no trace

    def _lock(self, stack: ExitStack) -> None:
        try:
            stale = stack.enter_context(exclusive_lock(self.file(LOCK), wait=False))
        except LockHeld as held:
            raise RunFolderError(f"{self.path} is in use by {held.holder}: two runs cannot "
                                 f"share a run folder; wait for that run to end or stop it, or "
                                 f"give this one another savename") from None
        if stale:
            console.log(f"note: {self.path} was left locked by {stale}, which has ended; "
                        f"the lock is cleared")
        for removed in remove_stale_temporaries(self.path):
            console.log(f"note: removed {removed}, a partial file left by a stopped writer")

    def newest_checkpoint(self) -> Path | None:
        """checkpoint.msgpack, else the previous one (a run stopped between the renames that
        rotate them, or the newest moved aside because it was damaged), else None."""
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
            if self.file(name).exists():
                return self.file(name)
        return None

    def prepare(self, *, resume: bool, overwrite: bool) -> bool:
        """True when there is a checkpoint to resume; else the folder is ready for a new run."""
        checkpoint, model = self.newest_checkpoint(), self.file(MODEL)
        if resume:
            if checkpoint is not None:
                return True
            if model.exists():
                raise RunFolderError(f"{self.path} holds a finished run (see its results.json)"
                                     f"; nothing to resume. Pass overwrite=True to train again")
            raise RunFolderError(f"resume=True but {self.path} has no checkpoint to resume")
        if checkpoint is not None or model.exists():
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
            model_io.save(self.file(CHECKPOINT), model_io.CHECKPOINT_FORMAT, header, trees,
                          keep_previous=self.file(PREVIOUS_CHECKPOINT))

    def load_checkpoint(self) -> tuple[Path, dict, dict]:
        """(its path, header, trees) of the newest checkpoint; a damaged one is refused with
        what to do, and left as it is."""
        path = self.newest_checkpoint()
        if path.name == PREVIOUS_CHECKPOINT:
            console.log(f"note: {self.path} has no {CHECKPOINT}; resuming from {path.name}")
        try:
            return (path, *model_io.load(path, model_io.CHECKPOINT_FORMAT))
        except model_io.DamagedFile as damage:
            raise model_io.DamagedFile(path, damage.what, self._after_damage(path)) from None

    def _after_damage(self, damaged: Path) -> str:
        previous = self.file(PREVIOUS_CHECKPOINT)
        if damaged != previous and previous.exists():
            try:
                history = model_io.load(previous, model_io.CHECKPOINT_FORMAT)[0]["progress"][
                    "history"]
            except model_io.ModelFileError:
                history = None
            if history is not None:
                when = (f"saved after {history[-1]['phase']} epoch {history[-1]['epoch']}"
                        if history else "saved before the first epoch ended")
                return (f"the previous checkpoint {previous} is intact ({when}): move the "
                        f"damaged one aside (mv {damaged} {damaged}.damaged) and resume=True "
                        f"goes on from the previous one")
        return (f"no intact checkpoint is left in {self.path}: restore it from a copy, or start "
                f"the run again with overwrite=True")

    def safe_state(self) -> str:
        """What a stopped or failed run leaves to go on from, and how."""
        newest = self.newest_checkpoint()
        if newest is None:
            return "no checkpoint had been written yet, so the same command starts it again"
        return (f"the last checkpoint, {newest}, is intact, and the same command with "
                f"resume=True goes on from it")

    def write_failure(self, error: OSError) -> RunFolderWriteError:
        """What failed to be written, what is safe, what to do: one sentence."""
        return RunFolderWriteError(f"could not write {error.filename}: {error.strerror}; "
                                   f"{self.safe_state()} once there is free space")

    def save_model(self, name: str, header: dict, params, bn_state) -> None:
        if self.writes_files:
            model_io.save(self.file(name), model_io.MODEL_FORMAT, header,
                          {"params": params, "bn_state": bn_state})

    def remove_checkpoint(self) -> None:
        """The run has finished: its model replaces the checkpoints."""
        if self.writes_files:
            self.file(CHECKPOINT).unlink(missing_ok=True)
            self.file(PREVIOUS_CHECKPOINT).unlink(missing_ok=True)


def check_same_definition(path: Path, saved: dict, now: dict) -> None:
    """Refuse to resume a checkpoint saved by a run with other settings, naming each. A
    keyword the checkpoint's code did not have yet counts as its default (its default keeps
    the old behaviour)."""
    saved = {**{k: DEFAULTS[k] for k in set(now) - set(saved) if k in DEFAULTS}, **saved}
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in LOCATIONS and saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
        raise RunFolderError(f"{path} was saved by a run with different settings: {detail}; "
                             f"resume with the same keywords or start a new savename")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_dataset(path: Path, saved: dict | None, now: dict, saved_config: dict,
                       dataset: Path) -> None:
    """Refuse to resume on a dataset whose contents differ from the one the run trained on
    (``loaders.integrity.dataset_identity``), whatever path either was given by."""
    if saved is None:  # saved before checkpoints held the dataset's identity: by its path
        saved = {"path": str(Path(saved_config["dataset"]).resolve())}
        now = {"path": str(dataset.resolve())}
    now = json.loads(json.dumps(now, default=str))  # as the checkpoint's header stored it
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k} {_shown(now.get(k))} (the run's: {_shown(saved.get(k))})"
                           for k in changed)
        raise RunFolderError(f"{dataset} is not the dataset {path} was trained on: {detail}; "
                             f"resume with the dataset the run used (the same file, or one "
                             f"built with the same options), or start a new run")
