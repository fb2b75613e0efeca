"""The launcher's keyword arguments: names, defaults, meanings, parsing and validation.

The thesis's keywords keep their names and meanings (``learning_rate``, ``L1_reg``, ``L2_reg``,
``n_epochs``, ``dataset``, ``batch_size``, ``n_hidden``, ``activation``, ``batch_norm``,
``p_drop``, ``p_dropConv``, ``gaussian_std``, ``val``, ``trainShared``, ``im_dim``,
``savename``); the rest is what the methodology needs. Everything is checked here, before any
work starts, so a typo costs a second, not an epoch.
"""
from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

from utils.support.names import closest_name
from utils.training.optim import OPTIMIZERS, SCHEDULES
from utils.experiments.keyword_checks import (
    KeywordError, activation_name, augment_spec, below_one, boolean, class_weights,
    compute_dtype_name, conv_dropout, device_count, fraction, hidden_sizes, image_size, momentum,
    model_paths, non_negative_int, non_negative_number, one_of, optional_path,
    optional_positive_int, optional_positive_number, positive_int, positive_number,
    sampler_name, settings_dict, unit_interval)
from utils.experiments.recipes import (RECIPES, SAMPLE_RECIPE, KeywordSources,
                                      fit_conv_dropout, recipe_for)
from utils.models.networks import get_network
from utils.training import online_augmentation


@dataclass(frozen=True)
class Keyword:
    name: str
    default: Any
    meaning: str
    check: Callable[[str, Any], Any] | None = None  # returns the normalised value or raises


KEYWORDS = [
    # -- the thesis's keywords ----------------------------------------------------------------
    Keyword("learning_rate", 0.1, "initial learning rate", positive_number),
    Keyword("L1_reg", 0.0, "L1 penalty on weights (not biases, not BN parameters)",
            non_negative_number),
    Keyword("L2_reg", 0.0, "L2 penalty on weights (not biases, not BN parameters)",
            non_negative_number),
    Keyword("n_epochs", 10, "epochs of the entropy-point search (val=True) or of training "
            "(val=False)", positive_int),
    Keyword("dataset", None, "HDF5 file from loaders.build_dataset; None: the built-in sample "
            "(datasets/sample_mirror.h5, built on first use)", optional_path),
    Keyword("batch_size", 100, "mini-batch size (split across devices)", positive_int),
    Keyword("n_hidden", [1024], "sizes of the hidden fully connected layers", hidden_sizes),
    Keyword("activation", "relu", "relu, sigmoid, tanh, leaky_relu (or rna.relu() ...)",
            activation_name),
    Keyword("batch_norm", True, "batch normalisation in every conv and hidden layer", boolean),
    Keyword("p_drop", 0.5, "drop probability of the hidden fully connected layers", None),
    Keyword("p_dropConv", None, "drop probability per conv layer; None: the network's "
            "default (A, D: [0.2,0.3,0.4,0.5]; B: [0.2,0.3,0.4,0.4,0.2,0.2])", conv_dropout),
    Keyword("gaussian_std", 0.0, "std of Gaussian noise added before activations (training)",
            non_negative_number),
    Keyword("val", True, "True: entropy-point methodology with validation; False: train "
            "n_epochs on the full training set", boolean),
    Keyword("trainShared", False, "True: training set held in device memory; False: streamed "
            "from the HDF5 file", boolean),
    Keyword("im_dim", None, "[height, width] of the images; None: the dataset's (checked "
            "against it when given)", image_size),
    Keyword("savename", None, "folder for the model, checkpoint, history and plots; None: "
            "trained_models/<network>_<dataset name>", optional_path),
    Keyword("recipe", None, "a named set of defaults for the other keywords "
            "(utils/experiments/recipes.py): "
            + ", ".join(RECIPES) + "; None: 'sample' without a dataset, else 'thesis'", None),
    # -- network -------------------------------------------------------------------------------
    Keyword("network", "A", "A, B, C, D, mlp, or module:NAME of your own registered network",
            None),
    Keyword("last_pool", True, "keep the network's last pooling (the thesis tried B, D "
            "without)", boolean),
    Keyword("projection_shortcut", False, "1x1 conv shortcuts where residual widths differ "
            "(default: zero padding)", boolean),
    # -- methodology ---------------------------------------------------------------------------
    Keyword("criterion", "entropy", "what picks the epoch: 'entropy' (min validation "
            "cross-entropy) or 'error' (min validation error)", one_of("entropy", "error")),
    Keyword("patience", None, "stop the search after this many epochs without improvement "
            "(None: run all n_epochs)", optional_positive_int),
    Keyword("time_budget", None, "seconds of training the run may take (val=False): n_epochs "
            "is fixed from this run's own step, timed on this machine before training (see "
            "utils/experiments/time_budget.py); None: n_epochs as given",
            optional_positive_number),
    Keyword("anneal_epochs", 10, "epochs of learning-rate annealing after training",
            non_negative_int),
    Keyword("anneal_factor", 0.1, "learning rate multiplier while annealing", fraction),
    Keyword("optimizer", "sgd", "sgd (the thesis's), momentum, nesterov, adam, rmsprop, "
            "adagrad, adadelta", one_of(*OPTIMIZERS)),
    Keyword("optimizer_options", {}, "optimizer settings, e.g. {'momentum': 0.95} or "
            "{'b1': 0.9, 'b2': 0.999}", settings_dict),
    Keyword("lr_schedule", "constant", "constant, step, exponential, time, plateau "
            "(reduce on validation plateau), cosine (to 0 over n_epochs), onecycle (up over "
            "warmup_epochs, down to ~0 at n_epochs)", one_of(*SCHEDULES)),
    Keyword("lr_schedule_options", {}, "schedule settings, e.g. {'drop_every': 10, "
            "'factor': 0.5} for step", settings_dict),
    Keyword("warmup_epochs", 0, "epochs of linear learning-rate warm-up from 0 before the "
            "schedule (onecycle: the epochs of its rise)", non_negative_int),
    # -- modern regularisation (none in the thesis) --------------------------------------------
    Keyword("augment", None, "online augmentation on the device, parts in the order applied: "
            "rotate:D (degrees), scale:S (zoom 1+-S), shift:P (pixels), crop:P (pad P, random "
            "window of the same size), crop_to:S (random SxS window; tests on ten-crops), flip, "
            "brightness:B, contrast:C, erase:P (random erasing with probability P); e.g. "
            "'crop:4,flip,rotate:10,scale:0.1,erase:0.5'; None: off", augment_spec),
    Keyword("label_smoothing", 0.0, "targets (1-e) one-hot + e/K", below_one),
    Keyword("mixup", 0.0, "mixup's alpha: image pairs and their targets blended by "
            "Beta(a, a); 0: off", non_negative_number),
    Keyword("cutmix", 0.0, "CutMix's alpha: a box pasted from another image, targets by "
            "area; with mixup too, each step takes one of them; 0: off", non_negative_number),
    Keyword("weight_decay", 0.0, "decoupled weight decay on the weights (AdamW, SGDW): "
            "-lr * wd * w per step, beside L1_reg/L2_reg", non_negative_number),
    Keyword("ema_decay", 0.0, "moving average of the weights, d per step (e.g. 0.9998): the "
            "model validated, tested and saved is the average, with BN population statistics "
            "of its own; 0: off", below_one),
    Keyword("teacher", None, "distillation: saved model(s) (model.msgpack or run folder; a list:"
            " an ensemble) whose softened outputs the student learns too; None: off", model_paths),
    Keyword("distill_temperature", 4.0, "distillation's T: outputs softened as softmax(z/T)",
            positive_number),
    Keyword("distill_weight", 0.9, "w: cost (1-w) hard + w T^2 KL(teacher_T||student_T)",
            unit_interval),
    Keyword("distill_views", "model", "teacher's views: 'model' (its test-time views, e.g. "
            "ten-crop) or 'plain' (its centre view)", one_of("model", "plain")),
    # -- class imbalance -------------------------------------------------------------------------
    Keyword("class_weights", None, "cost weighted per class: 'balanced' (w_k = N / (K n_k), "
            "n_k the training split's count of class k; FER+ soft targets: the sum of their "
            "distributions), or a list of K weights; None: unweighted", class_weights),
    Keyword("sampler", None, "'balanced': every mini-batch holds each class equally often "
            "(rare classes' images repeat, frequent ones' wait for later epochs; seeded, same "
            "number of batches per epoch); None: each epoch a permutation of the split",
            sampler_name),
    Keyword("bn_stats", "population", "test-time BN statistics: 'population' (BN paper, "
            "over bn_batches training batches) or 'ema'", one_of("population", "ema")),
    Keyword("bn_batches", 100, "training mini-batches the population statistics average over",
            positive_int),
    Keyword("bn_momentum", 0.99, "EMA momentum when bn_stats='ema'", momentum),
    Keyword("test_each_epoch", True, "print the test error each epoch, as the thesis did "
            "(never used to pick anything)", boolean),
    Keyword("dtype", "float32", "compute dtype: float32, or bfloat16 (mixed precision: convs, "
            "matmuls, activations in bfloat16; parameters, optimiser, BN statistics, softmax, "
            "cost in float32)", compute_dtype_name),
    Keyword("seed", 0, "seed of initialisation, dropout, noise and data order",
            non_negative_int),
    # -- run management ------------------------------------------------------------------------
    Keyword("resume", False, "continue the run saved under savename from its checkpoint",
            boolean),
    Keyword("init_from", None, "start from this saved model's parameters (a model.msgpack or "
            "its folder)", optional_path),
    Keyword("overwrite", False, "replace a finished or stopped run under savename", boolean),
    Keyword("devices", None, "how many local devices to train on (None: all)", device_count),
    Keyword("coordinator_address", None, "multi-host: host:port of process 0; every host "
            "runs the same command with its process_id", optional_path),
    Keyword("num_processes", None, "multi-host: how many processes (hosts) in all",
            optional_positive_int),
    Keyword("process_id", None, "multi-host: this process's index, 0 .. num_processes-1",
            lambda name, v: None if v is None else non_negative_int(name, v)),
    Keyword("registry", "trained_models/experiments.csv", "CSV the run's row is appended to",
            optional_path),
    Keyword("tensorboard", True, "TensorBoard event files in the run folder (per epoch, every "
            "tensorboard_every steps, the confusion image and hparams at the end)", boolean),
    Keyword("tensorboard_every", 10, "training steps between two points of the training cost "
            "in the event files", positive_int),
    Keyword("progress", None, "progress bar within epochs (None: when on a terminal)", None),
]
KEYWORD_NAMES = [k.name for k in KEYWORDS]
DEFAULTS = {k.name: k.default for k in KEYWORDS}


def help_text() -> str:
    width = max(len(k.name) for k in KEYWORDS)
    lines = ["usage: python run_experiment.py [key=value ...]",
             "",
             "Runs an experiment: entropy-point search on train_noval with validation, "
             "retraining on the full",
             "training set, learning-rate annealing, plain and augmented test. Values are "
             "Python literals",
             "(n_hidden=[1024,512], p_dropConv=[0.2,0.3,0.4,0.5], val=False); bare words are "
             "strings (activation=relu).",
             "",
             "keywords (default) meaning:"]
    for k in KEYWORDS:
        default = repr(k.default)
        if k.name in RECIPES[SAMPLE_RECIPE]:
            default += f"; {RECIPES[SAMPLE_RECIPE][k.name]!r} on the built-in sample"
        lines.append(f"  {k.name.ljust(width)}  ({default}) {k.meaning}")
    lines += ["", "recipes (the defaults each one changes; keywords given always win):"]
    for name, settings in RECIPES.items():
        changes = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        lines.append(f"  {name}: " + (changes or "none (the defaults above are the thesis's)"))
    return "\n".join(lines)


def parse_value(text: str):
    """A Python literal if it is one, else the bare string (so network=A, activation=relu)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_command_line(arguments: list[str]) -> dict:
    config = {}
    for argument in arguments:
        if "=" not in argument:
            raise KeywordError(f"argument {argument!r} is not key=value (see --help)")
        name, text = argument.split("=", 1)
        if name.strip() in config:
            raise KeywordError(f"{name.strip()} is given twice (the second time as {argument!r})"
                               f": give each keyword once")
        config[name.strip()] = parse_value(text.strip())
    return config


def _has_non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, (list, tuple, dict)) and any(map(_has_non_finite, items))


def resolve(given: dict, given_as: str = "given") -> dict:
    """Defaults filled in, unknown names refused (closest suggested), every value checked, the
    recipe's settings fitted to the network in force; ``given_as`` says where the given values
    came from in messages ("from the command line")."""
    for name in given:
        if name not in DEFAULTS:
            raise KeywordError(f"unknown keyword {name!r}{closest_name(name, KEYWORD_NAMES)}; "
                               f"see python run_experiment.py --help")
        if _has_non_finite(given[name]):
            raise KeywordError(f"{name}={given[name]!r}: numbers must be finite (a literal "
                               f"beyond 1.8e308, such as 1e309, reads as inf)")
    recipe = recipe_for(given)
    if recipe not in RECIPES:
        raise KeywordError(f"recipe must be one of {', '.join(map(repr, RECIPES))}, got "
                           f"{recipe!r}{closest_name(recipe, RECIPES)}")
    config = {**DEFAULTS, **RECIPES[recipe], **given, "recipe": recipe}
    for keyword in KEYWORDS:
        if keyword.check is not None:
            config[keyword.name] = keyword.check(keyword.name, config[keyword.name])
    sources = KeywordSources(given, recipe, given_as)
    fit_to_network(config, sources)
    check_together(config, sources)
    return config


def fit_to_network(config: dict, sources: KeywordSources) -> None:
    """A recipe's conv dropout stretched over the network in force; a given one of the wrong
    length refused here, naming where the network came from."""
    n_conv = conv_layer_count(config["network"])
    if n_conv is None or config["p_dropConv"] is None:
        return  # an unknown network, or the network's own default: define_run's to judge
    if sources.from_recipe("p_dropConv"):
        config["p_dropConv"] = fit_conv_dropout(config["p_dropConv"], n_conv)
    elif len(config["p_dropConv"]) != n_conv:
        remedy = (f"give {n_conv} value{'s' * (n_conv != 1)}, or leave p_dropConv out for the "
                  f"network's own" if n_conv else "leave p_dropConv out")
        raise KeywordError(f"{sources.shown('p_dropConv', config)} has "
                           f"{len(config['p_dropConv'])} values but network "
                           f"{config['network']} ({sources.of('network')}) has {n_conv} conv "
                           f"layers: {remedy}")


def check_time_budget(config: dict, sources: KeywordSources) -> None:
    """time_budget fixes n_epochs: a recipe's budget yields to an n_epochs given; both given,
    a validation search (whose length the validation decides) or several hosts (each would
    time its own steps) are refused."""
    if config["time_budget"] is None:
        return
    shown = functools.partial(sources.shown, config=config)
    if "n_epochs" in sources.given:
        if "time_budget" not in sources.given:
            config["time_budget"] = None  # the recipe's budget; the given n_epochs wins
            return
        raise KeywordError(f"{shown('time_budget')} fixes n_epochs, but {shown('n_epochs')} "
                           f"is given too: give one")
    if config["val"]:
        raise KeywordError(f"{shown('time_budget')} needs val=False (one training phase); "
                           f"{shown('val')} searches for its length on the validation set: "
                           f"give val=False, or n_epochs instead of time_budget")
    if config["num_processes"] is not None:
        raise KeywordError(f"{shown('time_budget')} is for a run on one host (each host would "
                           f"time its own steps): give n_epochs for a multi-host run")


def conv_layer_count(network: str) -> int | None:
    """How many conv layers the named network has (built with its defaults; no arrays are
    made), or None when it cannot be built so (an unknown name: define_run refuses it)."""
    try:
        return get_network(network).n_conv_layers
    except (ValueError, TypeError):
        return None


def check_together(config: dict, sources: KeywordSources) -> None:
    """Values that are each valid but not together, each named with where it came from."""
    shown = functools.partial(sources.shown, config=config)
    check_time_budget(config, sources)
    if (config["warmup_epochs"] and config["time_budget"] is None
            and config["warmup_epochs"] >= config["n_epochs"]):
        raise KeywordError(f"{shown('warmup_epochs')} is not shorter than the run, "
                           f"{shown('n_epochs')}: give fewer warm-up epochs or more epochs")
    if config["ema_decay"] and config["batch_norm"] and config["bn_stats"] != "population":
        raise KeywordError(f"{shown('ema_decay')} needs bn_stats='population' (the averaged "
                           f"weights need BN statistics of their own, computed after training; "
                           f"{shown('bn_stats')} tracks the raw weights'): give one")
    window = online_augmentation.parse(config["augment"]).crop_to
    if window and config["im_dim"] is not None and config["im_dim"] != [window, window]:
        raise KeywordError(f"{shown('im_dim')} but {shown('augment')} makes {window}x{window} "
                           f"network inputs: use im_dim={[window, window]} or leave im_dim out")
    distilling = sorted(k for k in sources.given if k.startswith("distill_"))
    if config["teacher"] is None and distilling:
        raise KeywordError(f"{distilling[0]} is given but teacher is not: distillation needs "
                           f"teacher=MODEL")
    if config["resume"] and config["init_from"]:
        raise KeywordError("resume=True continues a run; init_from starts a new one: give one")
    if config["resume"] and config["overwrite"]:
        raise KeywordError("resume=True and overwrite=True contradict each other: give one")
    multi_host = [config[k] is not None
                  for k in ("coordinator_address", "num_processes", "process_id")]
    if any(multi_host) and not all(multi_host):
        raise KeywordError("a multi-host run needs coordinator_address, num_processes and "
                           "process_id together")
    if all(multi_host) and config["process_id"] >= config["num_processes"]:
        raise KeywordError(f"process_id={config['process_id']} must be below "
                           f"num_processes={config['num_processes']}")
    if config["progress"] not in (None, True, False):
        raise KeywordError(f"progress must be None, True or False, got {config['progress']!r}")
