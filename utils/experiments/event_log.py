"""TensorBoard event files in a run's folder, so ``tensorboard --logdir trained_models`` shows
every run, live, each under its folder's name.

Written through tensorboardX's ``SummaryWriter`` (TensorBoard's own format, no TensorFlow):
- per epoch, tags ``<training>/<figure>``: the training is the fresh phase an epoch belongs to
  (``search``; ``retrain`` or ``train``, its annealing continuing the same curve), the step
  its epoch number along that training, the figures ``train_cost``, ``train_error``,
  ``val_cost``, ``val_error`` (validating phases), ``test_error`` (``test_each_epoch``, printed
  only, as the thesis did), ``learning_rate`` and ``epoch_seconds``;
- every ``tensorboard_every`` steps, ``<training>/step_cost``: that step's training cost, the
  step counted along the training;
- at the end, ``test/confusion`` (the confusion matrix as an image), ``results/<figure>`` for
  every test figure, ``recall/<test>_<split>/<class>`` and the run's keywords as hparams (the
  HParams tab; keywords whose value is None are left out, lists and dicts are shown as JSON).

The checkpoint is what a run knows; the event files follow it. Every start of a run in its
folder removes the folder's event files and writes one anew from the checkpoint's history
(``Progress.history``, ``epoch_walltimes``, ``step_costs``, with their original times), then
appends live. Points written after the last checkpoint by a run that was killed are gone with
the old file, so after any number of kills and resumes each scalar has exactly one point per
epoch (or step), and a TensorBoard watching meanwhile is told to forget what it read
(``purge_step=0``). With ``tensorboard=False`` a run leaves no event files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from utils.experiments.methodology import chain_of

EVENT_FILES = "events.out.tfevents.*"
EPOCH_FIGURES = ("train_cost", "train_error", "val_cost", "val_error", "test_error",
                 "learning_rate", "epoch_seconds")
FLUSH_SECONDS = 30


class EventLog:
    def __init__(self, folder: Path, phases, *, enabled: bool):
        self.folder, self.phases, self.enabled = Path(folder), phases, enabled
        self.writer = None
        self.restarted = False  # the folder held event files of an earlier start

    def start(self, progress) -> None:
        """Remove the folder's event files, then (when enabled) write what ``progress`` holds
        in a new one, kept open for what follows."""
        removed = [path for path in self.folder.glob(EVENT_FILES) if path.is_file()]
        for path in removed:
            path.unlink()
        self.restarted = bool(removed)
        if not (self.enabled and (progress.history or progress.step_costs)):
            return  # nothing yet: the file is made with the first point
        walltimes = list(progress.epoch_walltimes)
        for index in range(len(progress.history)):  # checkpoints from before: no times
            walltime = walltimes[index] if index < len(walltimes) else None
            self.epoch(progress.history[:index + 1], walltime, flush=False)
        for chain, step, cost, walltime in progress.step_costs:
            self.step_cost(chain, step, cost, walltime)
        self._open().flush()

    def _open(self):
        """The writer, made at the first point (a run refused or failed before any point leaves
        no file)."""
        if self.writer is None:
            from tensorboardX import SummaryWriter  # a dependency; imported when a run logs

            self.writer = SummaryWriter(logdir=str(self.folder), flush_secs=FLUSH_SECONDS,
                                        purge_step=0 if self.restarted else None)
        return self.writer

    def epoch(self, history: list[dict], walltime: float, *, flush: bool = True) -> None:
        """The last row of ``history`` (an epoch just ended), at its epoch along its training."""
        if not self.enabled:
            return
        row = history[-1]
        chain = chain_of(self.phases, row["phase"])
        step = sum(chain_of(self.phases, h["phase"]) == chain for h in history)
        for figure in EPOCH_FIGURES:
            if row.get(figure) is not None:
                self._open().add_scalar(f"{chain}/{figure}", row[figure], step,
                                        walltime=walltime)
        if flush:
            self._open().flush()

    def step_cost(self, chain: str, step: int, cost: float, walltime: float) -> None:
        if self.enabled:
            self._open().add_scalar(f"{chain}/step_cost", cost, step, walltime=walltime)

    def finish(self, definition: dict, results: dict, confusion_png: bytes, step: int) -> None:
        """The test's figures, the confusion image and the keywords as hparams."""
        if not self.enabled:
            return
        from tensorboardX.summary import hparams

        image = cv2.imdecode(np.frombuffer(confusion_png, np.uint8), cv2.IMREAD_COLOR)
        self._open().add_image("test/confusion", image[..., ::-1], step, dataformats="HWC")
        metrics = result_scalars(results)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        file_writer = self.writer._get_file_writer()  # hparams go into this run, not a sub-run
        for summary in hparams(hparam_values(definition), metrics):
            file_writer.add_summary(summary, step, time.time())
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def result_scalars(results: dict) -> dict[str, float]:
    """{tag: value}: every numeric result as results/<name> (not the image counts), every
    recall as recall/<test>_<split>/<class>."""
    scalars = {f"results/{k}": float(v) for k, v in results.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and "_n_" not in k}
    for test, splits in (results.get("per_class_recall") or {}).items():
        for split, recall in splits.items():
            for name, value in (recall or {}).items():
                if value is not None:
                    scalars[f"recall/{test}_{split}/{name}"] = value
    return scalars


def hparam_values(definition: dict) -> dict:
    """The keywords as TensorBoard takes them: numbers, strings and booleans as they are,
    lists and dicts as JSON, None left out (tensorboardX skips it)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict, tuple)) else v
            for k, v in definition.items()}
