"""The experiment launcher: the thesis's methodology, automated end to end, and resumable.

    python run_experiment.py network=A dataset=datasets/fer2013_mirror.h5 n_epochs=100
    python run_experiment.py --help

or from Python with the same names (``test`` is the thesis's name for it):

    from run_experiment import run_experiment
    results = run_experiment(learning_rate=0.1, n_hidden=[1024], p_dropConv=[0.2, 0.3, 0.4, 0.5])

With ``val=True``: (1) train on ``train_noval``, validating every epoch, and find the epoch of
minimum validation cross-entropy (the entropy point); (2) retrain from the same initialisation
on the full training set for that many epochs; (3) anneal (``anneal_epochs`` at the learning
rate times ``anneal_factor``); (4) test, plainly and with each test image's pre-softmax outputs
summed over its augmented variants. With ``val=False``: train ``n_epochs``, anneal, test.
A checkpoint is written atomically after every epoch and when the run is stopped (Ctrl-C,
SIGTERM, an exception); ``resume=True`` goes on from it, bit for bit.
"""
from __future__ import annotations

import itertools
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from loaders.batches import BatchLoader
from loaders.hdf5 import dataset_info, read_test_aug_source_index, read_usage
from loaders.sample import ensure_sample_dataset
from loaders.sources import DatasetError
from utils import host_tuning, model_io
from utils.keywords import KeywordError, help_text, parse_command_line, resolve
from utils.networks import get_network
from utils.optim import make_optimizer, make_plateau, make_schedule
from utils.parallel import data_parallel, host_copy, host_scalar
from utils.records import (append_registry_row, code_version, plot_confusion, plot_costs,
                           write_history)
from utils.losses import cost_and_error
from utils.training import Steps
from utils.views import summed_view_logits

# Keywords that manage the run rather than define it: they may differ when resuming.
RUN_MANAGEMENT = ("resume", "overwrite", "progress", "registry", "devices",
                  "coordinator_address", "num_processes", "process_id")
NETWORK_KEYWORDS = ("n_hidden", "activation", "batch_norm", "p_drop", "p_dropConv",
                    "gaussian_std", "last_pool", "projection_shortcut")
# Population BN statistics are taken from an order no training epoch uses.
STATS_EPOCH_OFFSET = 1_000_000


class RunStopped(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM); a checkpoint has been written."""


class NonFiniteCost(RuntimeError):
    """The training cost became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Phase:
    name: str  # search | retrain | train | anneal
    split: str
    title: str
    fresh: bool  # start from the initial parameters (else continue the previous phase)
    validate: bool
    key_id: int  # which stream of dropout/noise keys


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint (the arrays go beside it)."""

    phase_index: int = 0
    phase_started: bool = False
    epoch: int = 0  # epochs completed in this phase
    batch: int = 0  # batches completed in the current epoch
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0])  # cost, error, batches
    history: list = field(default_factory=list)
    best: dict | None = None  # search: epoch, value, val_cost, val_error
    entropy_epoch: int | None = None
    scales: list = field(default_factory=list)  # lr scale used in each search epoch
    plateau: object = None  # optax reduce-on-plateau state
    train_seconds: float = 0.0


def log(message: str = "") -> None:
    if jax.process_index() == 0:  # one voice in a multi-host run
        print(message, flush=True)


class Experiment:
    def __init__(self, config: dict):
        self.config = config
        self.dataset = self._dataset_path()
        config["dataset"] = str(self.dataset)
        self.info = dataset_info(self.dataset)
        sizes = self.info["split_sizes"]
        image_size = list(self.info["image_size"])
        if config["im_dim"] is not None and config["im_dim"] != image_size:
            raise KeywordError(f"im_dim={config['im_dim']} but {self.dataset} holds "
                               f"{image_size[0]}x{image_size[1]} images (variant "
                               f"{self.info.get('variant')}); use im_dim={image_size} or leave "
                               f"it out")
        config["im_dim"] = image_size
        self.network = get_network(config["network"], im_dim=image_size,
                                   **{k: config[k] for k in NETWORK_KEYWORDS})
        config["p_dropConv"] = self.network.options["p_dropConv"]
        self.parallel = data_parallel(config["devices"], config["batch_size"])
        self.writes_files = self.parallel.process_index == 0
        needed = ["train", "test"] + (["train_noval", "val"] if config["val"] else [])
        for split in needed:
            if sizes.get(split, 0) == 0:
                hint = (" (built with no validation sources; use val=False or rebuild with "
                        "--val-sources)" if split in ("train_noval", "val") else "")
                raise KeywordError(f"{self.dataset} has no {split!r} images{hint}")
        for split in ("train", "train_noval") if config["val"] else ("train",):
            if config["batch_size"] > sizes[split]:
                raise KeywordError(f"batch_size={config['batch_size']} is larger than the "
                                   f"{sizes[split]} images of split {split!r} in "
                                   f"{self.dataset}")
        self.has_test_aug = sizes.get("test_aug", 0) > 0
        self.run_dir = Path(config["savename"] or
                            Path("trained_models") / f"{config['network']}_{self.dataset.stem}")
        config["savename"] = str(self.run_dir)
        self.optimizer = make_optimizer(config["optimizer"], config["learning_rate"],
                                        config["optimizer_options"])
        schedule = make_schedule(config["lr_schedule"], config["learning_rate"],
                                 config["lr_schedule_options"])
        self.plateau = (make_plateau(config["lr_schedule_options"])
                        if config["lr_schedule"] == "plateau" else None)
        self.steps = Steps(self.network, self.optimizer, schedule, L1_reg=config["L1_reg"],
                           L2_reg=config["L2_reg"], bn_stats=config["bn_stats"],
                           bn_momentum=config["bn_momentum"], dtype=config["dtype"])
        if config["val"]:
            self.phases = [
                Phase("search", "train_noval", "entropy-point search on train_noval, "
                      "validating on val", fresh=True, validate=True, key_id=1),
                Phase("retrain", "train", "retraining on the full training set up to the "
                      "entropy point", fresh=True, validate=False, key_id=2)]
        else:
            self.phases = [Phase("train", "train", "training on the full training set",
                                 fresh=True, validate=False, key_id=2)]
        if config["anneal_epochs"]:
            self.phases.append(Phase("anneal", "train", "learning-rate annealing",
                                     fresh=False, validate=False, key_id=2))
        self.root_key = jax.random.key(config["seed"])
        self.initial = self._initial_parameters()
        self.progress = Progress()
        self.state = None
        self.best_trees = None  # search: (params, bn_state) at the best epoch, on the host
        self.loaders: dict[str, BatchLoader] = {}
        self.stop_signal = None
        self.show_progress = config["progress"] if config["progress"] is not None else None

    # ---- set-up ---------------------------------------------------------------------------
    def _dataset_path(self) -> Path:
        if self.config["dataset"] is None:
            return ensure_sample_dataset("mirror")
        path = Path(self.config["dataset"])
        if not path.is_file():
            raise KeywordError(f"dataset={str(path)!r}: no such file (build one with python -m "
                               f"loaders.build_dataset, or leave dataset out to use the "
                               f"built-in sample)")
        return path

    def _initial_parameters(self):
        """(params, bn_state) every fresh phase starts from: from the seed, or init_from."""
        params, bn_state = self.network.init(jax.random.fold_in(self.root_key, 0))
        source = self.config["init_from"]
        if source is not None:
            _, trees = model_io.load(source, model_io.MODEL_FORMAT)
            params = model_io.restore_into(params, trees["params"], source, "params")
            bn_state = model_io.restore_into(bn_state, trees["bn_state"], source, "bn_state")
        # Kept on the host: training donates its device buffers, these must survive it.
        return jax.tree_util.tree_map(np.array, (params, bn_state))

    def _fresh_state(self, phase: Phase, epoch_length: int):
        state = self.steps.init_state(jax.random.fold_in(self.root_key, 0),
                                      jax.random.fold_in(self.root_key, phase.key_id),
                                      epoch_length)
        params, bn_state = jax.tree_util.tree_map(jnp.array, self.initial)
        state = state._replace(params=params, bn_state=bn_state,
                               opt_state=self.optimizer.init(params))
        return self.parallel.replicate(state)

    def loader(self, split: str, *, training: bool) -> BatchLoader:
        name = f"{split}:{'train' if training else 'eval'}"
        if name not in self.loaders:
            self.loaders[name] = BatchLoader(
                self.dataset, split, self.config["batch_size"], shuffle=training,
                seed=self.config["seed"], shared=self.config["trainShared"] and training,
                drop_remainder=training, process_index=self.parallel.process_index,
                process_count=self.parallel.process_count, sharding=self.parallel.batch)
        return self.loaders[name]

    def close_loaders(self, keep=()) -> None:
        for name in list(self.loaders):
            if name not in keep:
                self.loaders.pop(name).close()

    # ---- the run directory: new, resumed, refused -----------------------------------------
    def _prepare_run_dir(self) -> None:
        checkpoint = self.run_dir / "checkpoint.msgpack"
        model = self.run_dir / "model.msgpack"
        if self.config["resume"]:
            if checkpoint.exists():
                self._restore(checkpoint)
                return
            if model.exists():
                raise KeywordError(f"{self.run_dir} holds a finished run (see its results.json)"
                                   f"; nothing to resume. Pass overwrite=True to train again")
            raise KeywordError(f"resume=True but {self.run_dir} has no checkpoint to resume")
        if checkpoint.exists() or model.exists():
            what = "a finished run" if model.exists() else "a stopped run"
            if not self.config["overwrite"]:
                raise KeywordError(f"{self.run_dir} already holds {what}: pass resume=True to "
                                   f"continue it, overwrite=True to start again, or another "
                                   f"savename")
            for name in ("checkpoint.msgpack", "model.msgpack", "entropy_point.msgpack",
                         "history.csv", "cost.png", "confusion.png", "results.json"):
                if self.writes_files:
                    (self.run_dir / name).unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _definition(self) -> dict:
        return {k: v for k, v in self.config.items() if k not in RUN_MANAGEMENT}

    def _save_checkpoint(self) -> None:
        if not self.writes_files:
            return
        progress = {k: v for k, v in vars(self.progress).items() if k != "plateau"}
        trees = {"train_state": self.state}
        if self.best_trees is not None:
            trees["best"] = self.best_trees
        if self.progress.plateau is not None:
            trees["plateau"] = self.progress.plateau
        model_io.save(self.run_dir / "checkpoint.msgpack", model_io.CHECKPOINT_FORMAT,
                      {"config": self._definition(), "progress": progress}, trees)

    def _restore(self, path: Path) -> None:
        header, trees = model_io.load(path, model_io.CHECKPOINT_FORMAT)
        saved = header["config"]
        changed = sorted(k for k in set(saved) | set(self._definition())
                         if saved.get(k) != self._definition().get(k))
        if changed:
            detail = ", ".join(f"{k}={saved.get(k)!r} (now {self._definition().get(k)!r})"
                               for k in changed)
            raise KeywordError(f"{path} was saved by a run with different settings: {detail}; "
                               f"resume with the same keywords or start a new savename")
        self.progress = Progress(**header["progress"])
        phase = self.phases[self.progress.phase_index] if self.progress.phase_index < len(
            self.phases) else self.phases[-1]
        target = self._fresh_state(phase, 1)
        self.state = self.parallel.replicate(
            model_io.restore_into(target, trees["train_state"], path, "train_state"))
        if "best" in trees:
            self.best_trees = model_io.restore_into(self.initial, trees["best"], path, "best")
        if "plateau" in trees:
            plateau = self.plateau.init(jnp.zeros(()))
            self.progress.plateau = model_io.restore_into(plateau, trees["plateau"], path,
                                                          "plateau")
        where = (f"phase {phase.name}, epoch {self.progress.epoch + 1}, batch "
                 f"{self.progress.batch}" if self.progress.phase_index < len(self.phases)
                 else "the test")
        log(f"resuming {self.run_dir} at {where}")

    # ---- signals --------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name
        # A second Ctrl-C stops at once (no checkpoint beyond the last one).
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _install_signal_handlers(self):
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, self._request_stop)
            except ValueError:  # not the main thread: leave signals to the caller
                pass
        return previous

    # ---- the methodology ------------------------------------------------------------------
    def run(self) -> dict:
        self._prepare_run_dir()
        self._print_header()
        previous_handlers = self._install_signal_handlers()
        try:
            while self.progress.phase_index < len(self.phases):
                self._run_phase(self.phases[self.progress.phase_index])
            return self._finish()
        except RunStopped:
            raise
        except NonFiniteCost:
            raise
        except BaseException:
            # An unexpected failure: keep what can be kept (the state may have been donated
            # to a step that did not return, in which case the last checkpoint stands).
            if self.state is not None and not any(
                    getattr(leaf, "is_deleted", lambda: False)()
                    for leaf in jax.tree_util.tree_leaves(self.state)):
                self._save_checkpoint()
            raise
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.close_loaders()

    def _print_header(self) -> None:
        c, sizes = self.config, self.info["split_sizes"]
        log(f"dataset {self.dataset} (variant {self.info.get('variant')}, "
            f"{c['im_dim'][0]}x{c['im_dim'][1]}): " +
            ", ".join(f"{k} {v}" for k, v in sizes.items()))
        log(self.network.summary())
        devices = self.parallel.mesh.devices.ravel()
        log(f"devices: {len(devices)} x {devices[0].device_kind} | optimizer {c['optimizer']} "
            f"lr {c['learning_rate']:g} ({c['lr_schedule']}) | batch {c['batch_size']} | "
            f"seed {c['seed']} | saving to {self.run_dir}")

    def _phase_epochs(self, phase: Phase) -> int:
        if phase.name == "search" or phase.name == "train":
            return self.config["n_epochs"]
        if phase.name == "retrain":
            return self.progress.entropy_epoch
        return self.config["anneal_epochs"]

    def _data_epoch(self, phase: Phase) -> int:
        """Epoch index for the data order: annealing continues the retraining's sequence."""
        offset = 0
        if phase.name == "anneal":
            previous = self.phases[self.progress.phase_index - 1]
            offset = self._phase_epochs(previous)
        return offset + self.progress.epoch

    def _start_phase(self, phase: Phase, loader: BatchLoader) -> None:
        if phase.fresh:
            self.state = self._fresh_state(phase, loader.n_batches)
        else:
            self._set_lr_scale(host_scalar(self.state.lr_scale) * self.config["anneal_factor"])
        if self.plateau is not None and phase.name in ("search", "train"):
            self.progress.plateau = self.plateau.init(jnp.zeros(()))
        self.progress.phase_started = True

    def _run_phase(self, phase: Phase) -> None:
        n_epochs = self._phase_epochs(phase)
        loader = self.loader(phase.split, training=True)
        if not self.progress.phase_started:
            self._start_phase(phase, loader)
            log(f"\n== {phase.title}: {n_epochs} epochs of {loader.n_batches} batches "
                f"({loader.n_examples} images) ==")
        while self.progress.epoch < n_epochs:
            if phase.name == "retrain" and self.progress.scales:
                self._set_lr_scale(self.progress.scales[self.progress.epoch])
            started = time.perf_counter()
            self._train_epoch(phase, loader)
            row = self._end_of_epoch(phase, loader)
            seconds = time.perf_counter() - started
            row["epoch_seconds"] = round(seconds, 3)
            self.progress.train_seconds += seconds
            self.progress.history.append(row)
            self._print_epoch(row, phase)
            self.progress.epoch += 1
            self.progress.batch, self.progress.sums = 0, [0.0, 0.0, 0]
            if phase.name == "search" and self._search_is_over():
                n_epochs = self.progress.epoch
            self._save_checkpoint()
        if phase.name == "search":
            self._end_search()
        self.progress.phase_index += 1
        self.progress.epoch, self.progress.phase_started = 0, False
        self._save_checkpoint()

    def _train_epoch(self, phase: Phase, loader: BatchLoader) -> None:
        """One epoch (or what is left of it). Each step's metrics are read only after the next
        step is dispatched, so the device never waits for the host between steps."""
        p = self.progress
        bar = tqdm(total=loader.n_batches, initial=p.batch, leave=False, unit="batch",
                   desc=f"{phase.name} epoch {p.epoch + 1}", disable=(
                       not self.show_progress if self.show_progress is not None else None),
                   file=sys.stderr)
        batches = loader.batches(self._data_epoch(phase), start_batch=p.batch)
        unread = []  # (metrics, batch number) of dispatched steps whose metrics are unread
        try:
            for batch in batches:
                self.state, metrics = self.steps.train(self.state, batch.x, batch.y)
                p.batch += 1
                unread.append((metrics, p.batch))
                if len(unread) == 2:
                    self._account(phase, *unread.pop(0), bar)
                if self.stop_signal:
                    self._account(phase, *unread.pop(), bar)
                    self._save_checkpoint()
                    raise RunStopped(f"stopped by {self.stop_signal} in phase {phase.name}, "
                                     f"epoch {p.epoch + 1}, batch {p.batch}; checkpoint saved "
                                     f"in {self.run_dir}: resume with the same command and "
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
            raise NonFiniteCost(
                f"the training cost became {cost} in phase {phase.name}, epoch {p.epoch + 1}, "
                f"batch {batch_number}: stopping. The last good checkpoint (end of the "
                f"previous epoch) is kept in {self.run_dir}; a lower learning_rate (now "
                f"{self.config['learning_rate']:g}) or batch_norm=True usually cures this")
        p.sums = [p.sums[0] + cost, p.sums[1] + error, p.sums[2] + 1]
        bar.update(1)
        bar.set_postfix(cost=f"{p.sums[0] / p.sums[2]:.4f}")

    def _population_statistics(self, split: str, data_epoch: int) -> None:
        """BN paper inference statistics over bn_batches training batches, into the state."""
        if not (self.config["batch_norm"] and self.config["bn_stats"] == "population"):
            return
        loader = self.loader(split, training=True)
        n = min(self.config["bn_batches"], loader.n_batches)
        batches = loader.batches(STATS_EPOCH_OFFSET + data_epoch)
        try:
            stats = self.steps.population_statistics(self.state.params, self.state.bn_state,
                                                     itertools.islice(batches, n))
        finally:
            batches.close()
        self.state = self.state._replace(bn_state=self.parallel.replicate(stats))

    def _predict(self, split: str):
        logits, labels = self.steps.predict(self.state.params, self.state.bn_state,
                                            self.loader(split, training=False).batches(0),
                                            gather=self.parallel.gather)
        return logits, labels

    def _end_of_epoch(self, phase: Phase, loader: BatchLoader) -> dict:
        p = self.progress
        n = max(p.sums[2], 1)
        row = {"phase": phase.name, "epoch": p.epoch + 1, "train_cost": p.sums[0] / n,
               "train_error": p.sums[1] / n, "val_cost": None, "val_error": None,
               "test_error": None,
               "learning_rate": host_scalar(self.state.opt_state.hyperparams["learning_rate"])}
        if phase.name == "train":
            self._step_plateau(row["train_cost"])
        if not (phase.validate or self.config["test_each_epoch"]):
            return row
        self._population_statistics(phase.split, self._data_epoch(phase))
        if phase.validate:
            row["val_cost"], row["val_error"] = self._evaluate("val")
            self._track_best(row)
        if self.config["test_each_epoch"]:
            # Printed as the thesis did; never used to choose anything.
            row["test_error"] = self._evaluate("test")[1]
        return row

    def _evaluate(self, split: str) -> tuple[float, float]:
        """(cost, error) of the current parameters on a split."""
        return cost_and_error(*self._predict(split))

    def _track_best(self, row: dict) -> None:
        p = self.progress
        value = row["val_cost"] if self.config["criterion"] == "entropy" else row["val_error"]
        if p.best is None or value < p.best["value"]:
            p.best = {"epoch": row["epoch"], "value": value, "val_cost": row["val_cost"],
                      "val_error": row["val_error"]}
            self.best_trees = jax.tree_util.tree_map(
                lambda leaf: np.array(host_copy(leaf)), (self.state.params, self.state.bn_state))
        p.scales.append(host_scalar(self.state.lr_scale))
        self._step_plateau(row["val_cost"])

    def _step_plateau(self, monitored: float) -> None:
        """Reduce-on-plateau: validation cost in the search, training cost with val=False.
        The retraining replays the search's scales epoch by epoch instead."""
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

    def _search_is_over(self) -> bool:
        patience = self.config["patience"]
        return bool(patience and self.progress.epoch - self.progress.best["epoch"] >= patience)

    def _end_search(self) -> None:
        best = self.progress.best
        self.progress.entropy_epoch = best["epoch"]
        name = "entropy point" if self.config["criterion"] == "entropy" else "min-error point"
        log(f"{name}: epoch {best['epoch']} (validation cost {best['val_cost']:.4f}, "
            f"validation error {100 * best['val_error']:.2f} %)")
        params, bn_state = self.best_trees
        self._save_model(self.run_dir / "entropy_point.msgpack", params, bn_state,
                         {"selected_at_epoch": best["epoch"]})
        self.close_loaders()

    def _print_epoch(self, row: dict, phase: Phase) -> None:
        test = (f", test error {100 * row['test_error']:.2f} %"
                if row["test_error"] is not None else "")
        if phase.validate:
            line = (f"epoch {row['epoch']}, validation error {100 * row['val_error']:.2f} %"
                    f"{test} (train cost {row['train_cost']:.4f}, validation cost "
                    f"{row['val_cost']:.4f})")
        else:
            line = f"epoch {row['epoch']}, train cost {row['train_cost']:.4f}{test}"
        log(f"{line} [{phase.name}, lr {row['learning_rate']:.3g}, "
            f"{row['epoch_seconds'] if 'epoch_seconds' in row else 0:.1f} s]")

    # ---- test and results -----------------------------------------------------------------
    def _test(self) -> dict:
        log("\n== test ==")
        last = self.phases[-1]
        self._population_statistics(last.split, STATS_EPOCH_OFFSET)
        results = {}
        logits, labels = self._predict("test")
        usage = read_usage(self.dataset, "test")
        results.update(self._errors("test", logits, labels, usage))
        predictions = logits.argmax(axis=1)
        confusion_title = "plain test"
        if self.has_test_aug:
            aug_logits, _ = self._predict("test_aug")
            summed = summed_view_logits(aug_logits, read_test_aug_source_index(self.dataset),
                                           len(labels))
            results.update(self._errors("aug_test", summed, labels, usage))
            predictions = summed.argmax(axis=1)
            confusion_title = "augmented test (outputs summed over variants)"
        counts = np.zeros((len(self.info["class_names"]),) * 2, np.int64)
        np.add.at(counts, (labels, predictions), 1)
        results["confusion"] = counts.tolist()
        if self.writes_files:
            plot_confusion(self.run_dir / "confusion.png", counts,
                           list(self.info["class_names"]),
                           f"{self.network.name} on {self.dataset.name}: {confusion_title}")
        return results

    @staticmethod
    def _errors(prefix: str, logits, labels, usage) -> dict:
        out = {}
        cost, error = cost_and_error(logits, labels)
        out[f"{prefix}_cost"], out[f"{prefix}_error"] = cost, error
        for name in ("PublicTest", "PrivateTest"):
            mask = usage == name
            out[f"{prefix}_error_{name}"] = (cost_and_error(logits[mask], labels[mask])[1]
                                            if mask.any() else None)
            out[f"{prefix}_n_{name}"] = int(mask.sum())
        return out

    def _save_model(self, path: Path, params, bn_state, extra: dict) -> None:
        if not self.writes_files:
            return
        header = {"config": self._definition(), "network": self.network.name,
                  "network_options": self.network.options, "class_names":
                  list(self.info["class_names"]), "dataset_variant": self.info.get("variant"),
                  "code_version": code_version(), **extra}
        model_io.save(path, model_io.MODEL_FORMAT, header,
                      {"params": params, "bn_state": bn_state})

    def _finish(self) -> dict:
        results = self._test()
        p = self.progress
        results.update({
            "entropy_epoch": p.entropy_epoch,
            "best_val_cost": p.best["val_cost"] if p.best else None,
            "best_val_error": p.best["val_error"] if p.best else None,
            "epochs": {ph.name: sum(1 for h in p.history if h["phase"] == ph.name)
                       for ph in self.phases},
            "train_seconds": round(p.train_seconds, 1),
            "seconds_per_epoch": round(p.train_seconds / max(len(p.history), 1), 2),
            "parameters": self.network.param_count(),
        })
        self._save_model(self.run_dir / "model.msgpack", self.state.params,
                         self.state.bn_state, {"history": p.history, "results": results})
        if self.writes_files:
            self._write_records(results)
        self._print_summary(results)
        return results

    def _write_records(self, results: dict) -> None:
        p = self.progress
        write_history(self.run_dir / "history.csv", p.history)
        plot_costs(self.run_dir / "cost.png", p.history, p.entropy_epoch,
                   self.config["criterion"])
        model_io.atomic_write(self.run_dir / "results.json",
                              json.dumps({"config": self.config, "results": results},
                                         indent=2, default=str).encode())
        row = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "code_version": code_version()}
        row.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                    for k, v in self.config.items() if k not in RUN_MANAGEMENT})
        row.update({k: v for k, v in results.items() if k not in ("confusion", "epochs")})
        append_registry_row(Path(self.config["registry"]), row)
        (self.run_dir / "checkpoint.msgpack").unlink(missing_ok=True)

    def _print_summary(self, r: dict) -> None:
        def pct(value):
            return "   -   " if value is None else f"{100 * value:6.2f} %"

        log(f"\nresults ({self.network.name}, {self.dataset.name}, seed {self.config['seed']})")
        if r["entropy_epoch"]:
            log(f"  entropy point        epoch {r['entropy_epoch']} (validation error "
                f"{pct(r['best_val_error']).strip()}, cost {r['best_val_cost']:.4f})")
        log(f"  {'':20} {'all':>9} {'PublicTest':>11} {'PrivateTest':>11}")
        log(f"  {'test error':20} {pct(r['test_error'])} {pct(r['test_error_PublicTest']):>11}"
            f" {pct(r['test_error_PrivateTest']):>11}")
        if "aug_test_error" in r:
            log(f"  {'augmented test error':20} {pct(r['aug_test_error'])} "
                f"{pct(r['aug_test_error_PublicTest']):>11} "
                f"{pct(r['aug_test_error_PrivateTest']):>11}")
        log(f"  training time {r['train_seconds']:.1f} s ({r['seconds_per_epoch']:.1f} s per "
            f"epoch, {sum(r['epochs'].values())} epochs: " +
            ", ".join(f"{k} {v}" for k, v in r["epochs"].items()) + ")")
        log(f"  saved in {self.run_dir}: model.msgpack, history.csv, cost.png, confusion.png, "
            f"results.json; registry row in {self.config['registry']}")


def start_distributed(config: dict) -> None:
    """Join a multi-host run (JAX's own coordination service) when asked to."""
    if config["coordinator_address"] is not None and not jax.distributed.is_initialized():
        jax.distributed.initialize(config["coordinator_address"], config["num_processes"],
                                   config["process_id"])


def run_experiment(**keywords) -> dict:
    """Run one experiment from keyword arguments (see ``python run_experiment.py --help``).

    Applies ``utils.host_tuning`` to this process first (effective for XLA's kernels only if
    JAX has not run anything yet)."""
    host_tuning.apply()
    config = resolve(keywords)
    start_distributed(config)
    return Experiment(config).run()


test = run_experiment  # the thesis's name: test(learning_rate=0.1, ..., savename=...)
test.__test__ = False  # not a pytest test


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    host_tuning.apply()
    try:
        config = resolve(parse_command_line(argv))
        start_distributed(config)
        experiment = Experiment(config)
    except (ValueError, DatasetError, model_io.ModelFileError) as err:
        # Refused before any work: a keyword, the dataset, a network or optimiser setting.
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        experiment.run()
    except (KeywordError, model_io.ModelFileError) as err:  # the run folder refused
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteCost as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except RunStopped as err:
        print(f"\n{err}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
