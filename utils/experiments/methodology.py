"""The thesis's training methodology (chapter 5.5), as data: the phases of a run and their rules.

With validation (``val=True``):

1. **Search.** Train on ``train_noval``, measuring the validation cross-entropy and error after
   every epoch. The epoch of minimum validation cross-entropy is the *entropy point*: there the
   network starts to overfit, and there its parameters are kept (``entropy_point.msgpack``).
   ``criterion='error'`` takes the minimum validation error instead; ``patience`` ends the
   search after that many epochs without improvement.
2. **Retrain.** From the same initialisation, on the full training set (the validation images
   added), for exactly the entropy point's number of epochs: the network reaches the same
   training cost having seen more images. The learning-rate scales the search used (reduce on
   plateau) are replayed epoch by epoch.
3. **Anneal.** ``anneal_epochs`` more epochs at the learning rate times ``anneal_factor``,
   continuing the retraining: its parameters, optimiser state, step and data order.

Without validation (``val=False``): train ``n_epochs`` on the full training set, then anneal. Each
phase below carries its own rules; the launcher (``utils.experiments.experiment``) only follows
them, so a new phase (say, fine-tuning at a lower rate on another split) is one more entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint (the arrays go beside it)."""

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
    # For the TensorBoard event files, rebuilt from these on resume: when each history row's
    # epoch ended (time.time()), and every tensorboard_every-th step's [chain, step, cost, time]
    epoch_walltimes: list = field(default_factory=list)
    step_costs: list = field(default_factory=list)
    # time_budget's estimate (utils.experiments.time_budget), for the results
    budget: dict | None = None


# ---- the rules a phase is made of -----------------------------------------------------------
EpochRule = Callable[[dict, Progress], int]  # (config, progress) -> epochs of the phase
ScaleRule = Callable[[dict, float], float]  # (config, previous lr scale) -> scale at the start


def keyword(name: str) -> EpochRule:
    """As many epochs as the keyword says."""
    return lambda config, progress: config[name]


def entropy_point(config: dict, progress: Progress) -> int:
    """As many epochs as the search needed to reach its entropy point."""
    return progress.entropy_epoch


def scaled_by(name: str) -> ScaleRule:
    """The previous phase's learning-rate scale times the keyword's factor."""
    return lambda config, previous: previous * config[name]


@dataclass(frozen=True)
class Phase:
    name: str  # in the history, the console and the results
    title: str  # the phase's header line
    split: str  # the training split it reads
    epochs: EpochRule
    fresh: bool  # starts from the initial parameters; else continues the previous phase
    key_stream: int  # which stream of dropout/noise keys a fresh phase starts
    lr_scale: ScaleRule | None = None  # a continuing phase's scale at its start
    validates: bool = False  # validates every epoch and tracks the entropy point
    replays_search_scales: bool = False
    continues_data_order: bool = False  # its data epochs follow the previous phase's
    plateau_monitors: str | None = None  # the cost reduce-on-plateau steps on, if any


SEARCH = Phase("search", "entropy-point search on train_noval, validating on val",
               split="train_noval", epochs=keyword("n_epochs"), fresh=True, key_stream=1,
               validates=True, plateau_monitors="val_cost")
RETRAIN = Phase("retrain", "retraining on the full training set up to the entropy point",
                split="train", epochs=entropy_point, fresh=True, key_stream=2,
                replays_search_scales=True)
TRAIN = Phase("train", "training on the full training set", split="train",
              epochs=keyword("n_epochs"), fresh=True, key_stream=2,
              plateau_monitors="train_cost")
ANNEAL = Phase("anneal", "learning-rate annealing", split="train",
               epochs=keyword("anneal_epochs"), fresh=False, key_stream=2,
               lr_scale=scaled_by("anneal_factor"), continues_data_order=True)


def phases(config: dict) -> tuple[Phase, ...]:
    """The phases of a run with this configuration, in order."""
    main = (SEARCH, RETRAIN) if config["val"] else (TRAIN,)
    return main + ((ANNEAL,) if config["anneal_epochs"] else ())


def data_epoch(run_phases, progress: Progress, config: dict) -> int:
    """The epoch number the data order of the current phase's current epoch comes from."""
    index, offset = progress.phase_index, 0
    while run_phases[index].continues_data_order and index > 0:
        index -= 1
        offset += run_phases[index].epochs(config, progress)
    return offset + progress.epoch


def chain_of(run_phases, phase_name: str) -> str:
    """The name of the fresh phase a phase continues (itself when fresh): the retraining
    and its annealing are one training, drawn as one curve."""
    index = [phase.name for phase in run_phases].index(phase_name)
    while not run_phases[index].fresh and index > 0:
        index -= 1
    return run_phases[index].name


# ---- the entropy point ----------------------------------------------------------------------
# criterion -> (the validation figure minimised, the name of the point where it is minimal)
CRITERIA = {"entropy": ("val_cost", "entropy point"), "error": ("val_error", "min-error point")}


def is_new_best(criterion: str, row: dict, best: dict | None) -> bool:
    """Whether this epoch's validation beats the best so far (ties keep the earlier epoch)."""
    return best is None or row[CRITERIA[criterion][0]] < best["value"]


def best_record(criterion: str, row: dict) -> dict:
    return {"epoch": row["epoch"], "value": row[CRITERIA[criterion][0]],
            "val_cost": row["val_cost"], "val_error": row["val_error"]}


def search_is_over(progress: Progress, patience: int | None) -> bool:
    """``patience`` epochs have passed without a new best."""
    return bool(patience and progress.epoch - progress.best["epoch"] >= patience)
