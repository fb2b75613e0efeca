"""One experiment: the methodology's phases followed on a dataset and a network, in a run folder.

``Experiment(config).run()`` trains phase after phase as ``utils.experiments.methodology`` lays
them out, writes a checkpoint after every epoch and when stopped
(``utils.experiments.run_folder``), tests, and records the results (``utils.experiments.records``).
Each step's key is ``fold_in(key, step)`` and each epoch's data order comes from ``(seed, epoch)``,
so a resumed run ends bit for bit where an uninterrupted one ends.
"""
from __future__ import annotations

import itertools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from loaders.batches import BatchLoader
from loaders.integrity import dataset_identity
from utils.experiments import console, methodology
from utils.models import model_io
from utils.nn.losses import cost_and_error
from utils.experiments.methodology import Phase, Progress
from utils.support.parallel import data_parallel, host_copy, host_scalar
from utils.experiments.event_log import EventLog
from utils.experiments.records import code_version
from utils.experiments.run_end import finish_run
from utils.experiments.run_folder import (ENTROPY_POINT, RunFolder, check_same_dataset,
                                          check_same_definition)
from utils.experiments.run_setup import (RUN_MANAGEMENT, STATS_EPOCH_OFFSET, define_run,
                                         training_steps)
from utils.support.safe_files import NO_ROOM
from utils.experiments.teachers import check_same_teachers, describe_teachers, load_teachers
from utils.experiments.time_budget import fit_to_budget
from utils.experiments.signals import StopRequests


class RunStopped(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM); a checkpoint has been written."""


class NonFiniteCost(RuntimeError):
    """The training cost became NaN or infinite; the last good checkpoint is kept."""


class Experiment:
    def __init__(self, given: dict):
        (self.config, self.dataset, self.info, self.network,
         self.class_weights) = define_run(given)
        config = self.config
        self.parallel = data_parallel(config["devices"], config["batch_size"])
        self.folder = RunFolder(config["savename"],
                                writes_files=self.parallel.process_index == 0)
        self.has_test_aug = self.info["split_sizes"].get("test_aug", 0) > 0
        self.teachers = load_teachers(config, self.info, place=self.parallel.replicate)
        self.optimizer, self.plateau, self.steps = training_steps(config, self.network,
                                                                 self.info, self.class_weights,
                                                                 self.teachers)
        self.phases = methodology.phases(config)
        self.events = EventLog(self.folder.path, self.phases,  # process 0 writes the files
                               enabled=config["tensorboard"] and self.folder.writes_files)
        self.batches_per_epoch = 0  # of the epoch being trained (the step costs' steps)
        self.root_key = jax.random.key(config["seed"])
        self.initial = self._initial_parameters()
        self.progress = Progress()
        self.state = None
        self.best_trees = None  # search: (params, bn_state) at the best epoch, on the host
        self.loaders: dict[str, BatchLoader] = {}
        self.stop = StopRequests()
        # The code the run (or its resumption) started with, not the tree at its end.
        self.code_version = code_version()

    # ---- set-up ---------------------------------------------------------------------------
    def _initial_parameters(self):
        """(params, bn_state) every fresh phase starts from: init_from's, else the seed's."""
        params, bn_state = self.network.init(jax.random.fold_in(self.root_key, 0))
        source = self.config["init_from"]
        if source is not None:
            _, trees = model_io.load(source, model_io.MODEL_FORMAT)
            params = model_io.restore_into(params, trees["params"], source, "params")
            bn_state = model_io.restore_into(bn_state, trees["bn_state"], source, "bn_state")
        # Kept on the host: training donates its device buffers, these must survive it.
        return jax.tree_util.tree_map(np.array, (params, bn_state))

    def fresh_state(self, phase: Phase, epoch_length: int):
        state = self.steps.init_state(None, jax.random.fold_in(self.root_key, phase.key_stream),
                                      epoch_length,
                                      start=jax.tree_util.tree_map(jnp.array, self.initial))
        return self.parallel.replicate(state)

    def set_n_epochs(self, n_epochs: int) -> None:
        """Another length (time_budget's): the schedule, compiled into the steps, and the
        phases follow it."""
        self.config["n_epochs"] = n_epochs
        self.optimizer, self.plateau, self.steps = training_steps(
            self.config, self.network, self.info, self.class_weights, self.teachers)
        self.phases = methodology.phases(self.config)

    def loader(self, split: str, *, training: bool) -> BatchLoader:
        name = f"{split}:{'train' if training else 'eval'}"
        if name not in self.loaders:
            self.loaders[name] = BatchLoader(
                self.dataset, split, self.config["batch_size"], shuffle=training,
                seed=self.config["seed"], shared=self.config["trainShared"] and training,
                drop_remainder=training, process_index=self.parallel.process_index,
                process_count=self.parallel.process_count, sharding=self.parallel.batch,
                sampler=self.config["sampler"] if training else None)
        return self.loaders[name]

    def close_loaders(self) -> None:
        for name in list(self.loaders):
            self.loaders.pop(name).close()

    # ---- checkpoints --------------------------------------------------------------------------
    def _definition(self) -> dict:
        return {k: v for k, v in self.config.items() if k not in RUN_MANAGEMENT}

    def _save_checkpoint(self) -> None:
        progress = {k: v for k, v in vars(self.progress).items() if k != "plateau"}
        trees = {"train_state": self.state}
        if self.best_trees is not None:
            trees["best"] = self.best_trees
        if self.progress.plateau is not None:
            trees["plateau"] = self.progress.plateau
        self.folder.save_checkpoint({"config": self._definition(), "progress": progress,
                                     "dataset": dataset_identity(self.info),
                                     **self._teachers_identity()}, trees)

    def _teachers_identity(self) -> dict:
        """What a checkpoint and a model record of the teachers: nothing without them."""
        return {} if self.teachers is None else {"teachers": self.teachers.identity}

    def _restore(self) -> None:
        path, header, trees = self.folder.load_checkpoint()
        saved_epochs = header["config"].get("n_epochs")
        if self.config["time_budget"] is not None and saved_epochs != self.config["n_epochs"]:
            self.set_n_epochs(saved_epochs)  # as the budget fixed it when the run began
        check_same_definition(path, header["config"], self._definition())
        check_same_dataset(path, header.get("dataset"), dataset_identity(self.info),
                           header["config"], self.dataset)
        check_same_teachers(path, header.get("teachers"), self._teachers_identity().get(
            "teachers"))
        self.progress = Progress(**header["progress"])
        finished = self.progress.phase_index >= len(self.phases)
        phase = self.phases[-1] if finished else self.phases[self.progress.phase_index]
        target = self.fresh_state(phase, 1)
        self.state = self.parallel.replicate(
            model_io.restore_into(target, trees["train_state"], path, "train_state"))
        if "best" in trees:
            self.best_trees = model_io.restore_into(self.initial, trees["best"], path, "best")
        if "plateau" in trees:
            plateau = self.plateau.init(jnp.zeros(()))
            self.progress.plateau = model_io.restore_into(plateau, trees["plateau"], path,
                                                          "plateau")
        where = ("the test" if finished else f"phase {phase.name}, epoch "
                 f"{self.progress.epoch + 1}, batch {self.progress.batch}")
        console.log(f"resuming {self.folder.path} at {where}")

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        with self.folder.claimed():  # no other run may use the folder meanwhile
            return self._run_in_folder()

    def _run_in_folder(self) -> dict:
        if self.folder.prepare(resume=self.config["resume"], overwrite=self.config["overwrite"]):
            self._restore()
        elif self.config["time_budget"] is not None:
            self.progress.budget = fit_to_budget(self)
        if self.folder.writes_files:
            self.events.start(self.progress)  # the event files anew, from the checkpoint
        console.print_header(self.config, self.info, self.network,
                             self.parallel.mesh.devices.ravel(), self.folder.path)
        if self.teachers is not None:
            console.log(describe_teachers(self.teachers))
        try:
            with self.stop:
                while self.progress.phase_index < len(self.phases):
                    self._run_phase(self.phases[self.progress.phase_index])
                return finish_run(self)
        except (RunStopped, NonFiniteCost):
            raise
        except BaseException as error:
            if isinstance(error, OSError) and error.errno in NO_ROOM:
                raise self.folder.write_failure(error) from None  # more writes would fail too
            # An unexpected failure: keep what can be kept (the state may have been donated
            # to a step that did not return, in which case the last checkpoint stands).
            if self.state is not None and not any(
                    getattr(leaf, "is_deleted", lambda: False)()
                    for leaf in jax.tree_util.tree_leaves(self.state)):
                self._save_checkpoint()
            raise
        finally:
            self.close_loaders()
            self.events.close()

    def _run_phase(self, phase: Phase) -> None:
        p = self.progress
        n_epochs = phase.epochs(self.config, p)
        loader = self.loader(phase.split, training=True)
        if not p.phase_started:
            self._start_phase(phase, loader)
            console.print_phase_header(phase, n_epochs, loader)
        while p.epoch < n_epochs:
            if phase.replays_search_scales and p.scales:
                self._set_lr_scale(p.scales[p.epoch])
            started = time.perf_counter()
            self._train_epoch(phase, loader)
            row = self._end_of_epoch(phase)
            seconds = time.perf_counter() - started
            row["epoch_seconds"] = round(seconds, 3)
            p.train_seconds += seconds
            p.history.append(row)
            p.epoch_walltimes.append(time.time())
            self.events.epoch(p.history, p.epoch_walltimes[-1])
            console.print_epoch(row, phase)
            p.epoch += 1
            p.batch, p.sums = 0, [0.0, 0.0, 0]
            if phase.validates and methodology.search_is_over(p, self.config["patience"]):
                n_epochs = p.epoch
            self._save_checkpoint()
        if phase.validates:
            self._end_search()
        p.phase_index += 1
        p.epoch, p.phase_started = 0, False
        self._save_checkpoint()

    def _start_phase(self, phase: Phase, loader: BatchLoader) -> None:
        if phase.fresh:
            self.state = self.fresh_state(phase, loader.n_batches)
        else:
            self._set_lr_scale(phase.lr_scale(self.config, host_scalar(self.state.lr_scale)))
        if self.plateau is not None and phase.plateau_monitors:
            self.progress.plateau = self.plateau.init(jnp.zeros(()))
        self.progress.phase_started = True

    def _data_epoch(self) -> int:
        return methodology.data_epoch(self.phases, self.progress, self.config)

    def _train_epoch(self, phase: Phase, loader: BatchLoader) -> None:
        """One epoch (or what is left of it). Each step's metrics are read only after the next
        step is dispatched, so the device never waits for the host between steps."""
        p = self.progress
        show = self.config["progress"]
        bar = tqdm(total=loader.n_batches, initial=p.batch, leave=False, unit="batch",
                   desc=f"{phase.name} epoch {p.epoch + 1}",
                   disable=None if show is None else not show, file=sys.stderr)
        batches = loader.batches(self._data_epoch(), start_batch=p.batch)
        self.batches_per_epoch = loader.n_batches
        unread = []  # (metrics, batch number) of dispatched steps whose metrics are unread
        try:
            for batch in batches:
                self.state, metrics = self.steps.train(self.state, batch.x, batch.y,
                                                       batch.targets)
                p.batch += 1
                unread.append((metrics, p.batch))
                if len(unread) == 2:
                    self._account(phase, *unread.pop(0), bar)
                if self.stop.requested:
                    self._account(phase, *unread.pop(), bar)
                    self._save_checkpoint()
                    raise RunStopped(f"stopped by {self.stop.requested} in phase {phase.name}, "
                                     f"epoch {p.epoch + 1}, batch {p.batch}; checkpoint saved "
                                     f"in {self.folder.path}: resume with the same command and "
                                     f"resume=True")
            while unread:
                self._account(phase, *unread.pop(0), bar)
        except (RunStopped, NonFiniteCost):
            raise
        except BaseException:
            # The failure handler saves the state: let the sums match it first.
            while unread:
                self._account(phase, *unread.pop(0), bar)
            raise
        finally:
            batches.close()
            bar.close()

    def _account(self, phase: Phase, metrics: dict, batch_number: int, bar) -> None:
        p = self.progress
        cost, error = host_scalar(metrics["cost"]), host_scalar(metrics["error"])
        if not math.isfinite(cost):
            self.state = None  # poisoned; the checkpoint on disk is the last good one
            kept = (f"the last good checkpoint is kept in {self.folder.path}"
                    if self.folder.newest_checkpoint() else "no checkpoint had been written yet")
            raise NonFiniteCost(
                f"the training cost became {cost} in phase {phase.name}, epoch {p.epoch + 1}, "
                f"batch {batch_number}: stopping; {kept}. A lower learning_rate (now "
                f"{self.config['learning_rate']:g}) or batch_norm=True usually cures this")
        p.sums = [p.sums[0] + cost, p.sums[1] + error, p.sums[2] + 1]
        step = self._data_epoch() * self.batches_per_epoch + batch_number  # along the training
        if step % self.config["tensorboard_every"] == 0:
            p.step_costs.append([methodology.chain_of(self.phases, phase.name), step, cost,
                                 time.time()])
            self.events.step_cost(*p.step_costs[-1])
        bar.update(1)
        bar.set_postfix(cost=f"{p.sums[0] / p.sums[2]:.4f}")

    # ---- after each epoch -----------------------------------------------------------------
    def _end_of_epoch(self, phase: Phase) -> dict:
        p = self.progress
        n = max(p.sums[2], 1)
        row = {"phase": phase.name, "epoch": p.epoch + 1, "train_cost": p.sums[0] / n,
               "train_error": p.sums[1] / n, "val_cost": None, "val_error": None,
               "test_error": None,
               "learning_rate": host_scalar(self.state.opt_state.hyperparams["learning_rate"])}
        if phase.plateau_monitors == "train_cost":
            self._step_plateau(row["train_cost"])
        if not (phase.validates or self.config["test_each_epoch"]):
            return row
        self.population_statistics(phase.split, self._data_epoch())
        if phase.validates:
            row["val_cost"], row["val_error"] = self._evaluate("val")
            self._track_best(row)
            if phase.plateau_monitors == "val_cost":
                self._step_plateau(row["val_cost"])
        if self.config["test_each_epoch"]:
            # Printed as the thesis did; never used to choose anything.
            row["test_error"] = self._evaluate("test")[1]
        return row

    def population_statistics(self, split: str, data_epoch: int) -> None:
        """BN paper inference statistics over bn_batches training batches, into the state."""
        if not (self.config["batch_norm"] and self.config["bn_stats"] == "population"):
            return
        loader = self.loader(split, training=True)
        n = min(self.config["bn_batches"], loader.n_batches)
        batches = loader.batches(STATS_EPOCH_OFFSET + data_epoch)
        try:
            stats = self.steps.population_statistics(self.model_params(), self.state.bn_state,
                                                     itertools.islice(batches, n))
        finally:
            batches.close()
        self.state = self.state._replace(bn_state=self.parallel.replicate(stats))

    def model_params(self):
        """The weights validated, tested and saved (the moving average with ema_decay)."""
        return self.steps.model_params(self.state)

    def predict(self, split: str):
        return self.steps.predict(self.model_params(), self.state.bn_state,
                                  self.loader(split, training=False).batches(0),
                                  gather=self.parallel.gather)

    def _evaluate(self, split: str) -> tuple[float, float]:
        """(cost, error) of the current parameters on a split."""
        return cost_and_error(*self.predict(split))

    def _track_best(self, row: dict) -> None:
        p, criterion = self.progress, self.config["criterion"]
        if methodology.is_new_best(criterion, row, p.best):
            p.best = methodology.best_record(criterion, row)
            self.best_trees = jax.tree_util.tree_map(
                lambda leaf: np.array(host_copy(leaf)), (self.model_params(), self.state.bn_state))
        p.scales.append(host_scalar(self.state.lr_scale))

    def _step_plateau(self, monitored: float) -> None:
        """Reduce-on-plateau: one step per epoch on the phase's monitored cost."""
        if self.plateau is None:
            return
        p = self.progress
        _, p.plateau = self.plateau.update(updates=jnp.zeros(()), state=p.plateau,
                                           value=jnp.asarray(monitored))
        self._set_lr_scale(host_scalar(p.plateau.scale))

    def _set_lr_scale(self, value: float) -> None:
        # A fresh replicated array: the same input layout as always, so no new compilation.
        self.state = self.state._replace(lr_scale=self.parallel.replicate(
            jnp.asarray(value, jnp.float32)))

    def _end_search(self) -> None:
        best = self.progress.best
        self.progress.entropy_epoch = best["epoch"]
        console.print_point(methodology.CRITERIA[self.config["criterion"]][1], best)
        self.save_model(ENTROPY_POINT, *self.best_trees, {"selected_at_epoch": best["epoch"]})
        self.close_loaders()

    # ---- saving ---------------------------------------------------------------------------
    def save_model(self, name: str, params, bn_state, extra: dict) -> None:
        header = {"config": self._definition(), "network": self.network.name,
                  "network_options": self.network.options, "class_names":
                  list(self.info["class_names"]), "dataset_variant": self.info.get("variant"),
                  "dataset": dataset_identity(self.info), "code_version": self.code_version,
                  **self.parallel.devices_record(), **self._teachers_identity(), **extra}
        self.folder.save_model(name, header, params, bn_state)
