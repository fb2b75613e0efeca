"""Setting a run up from its keywords: the dataset checked, the network and the compiled steps.

``define_run`` turns the launcher's resolved keywords into the run's definition (what was left
to the dataset filled in: its path, image size, the network's conv dropout, the run folder),
refusing, before any work, a dataset that lacks what the methodology's phases need.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from loaders.augment import get_variant
from loaders.hdf5 import class_frequencies, dataset_info
from loaders.integrity import verify_dataset
from loaders.sample import ensure_sample_dataset
from utils.experiments import methodology
from utils.training import online_augmentation
from utils.experiments.keywords import KeywordError
from utils.nn.network import Network
from utils.models.networks import get_network
from utils.training.optim import make_optimizer, make_plateau, make_schedule
from utils.training.objective import TARGET_RULES, Objective, balanced_class_weights
from utils.training.steps import Steps
from utils.training.views import OnlineViews

# Keywords that manage the run rather than define it: they may differ when resuming.
RUN_MANAGEMENT = ("resume", "overwrite", "progress", "registry", "devices",
                  "coordinator_address", "num_processes", "process_id", "tensorboard",
                  "tensorboard_every")
# Population BN statistics are taken from an order no training epoch uses.
STATS_EPOCH_OFFSET = 1_000_000
NETWORK_KEYWORDS = ("n_hidden", "activation", "batch_norm", "p_drop", "p_dropConv",
                    "gaussian_std", "last_pool", "projection_shortcut")


def dataset_path(config: dict) -> Path:
    """The dataset file of a run: the one given, or the built-in sample (built on first use)."""
    if config["dataset"] is None:
        return ensure_sample_dataset("mirror", extended=True)
    path = Path(config["dataset"])
    if not path.is_file():
        raise KeywordError(f"dataset={str(path)!r}: no such file (build one with python -m "
                           f"loaders.build_dataset, or leave dataset out to use the "
                           f"built-in sample)")
    return path


def check_dataset(path: Path, info: dict, config: dict) -> list[int]:
    """The network's input size (the dataset's image size, or online augmentation's crop_to
    window), once the dataset is known to hold what the run needs."""
    sizes, image_size = info["split_sizes"], list(info["image_size"])
    augmentation = online_augmentation.parse(config["augment"])
    input_size = list(augmentation.output_size(*image_size))
    if augmentation.crop_to > min(image_size):
        raise KeywordError(f"augment: crop_to:{augmentation.crop_to} is larger than the "
                           f"{image_size[0]}x{image_size[1]} images of {path}")
    if config["im_dim"] is not None and config["im_dim"] != input_size:
        windows = (f", which augment's crop_to cuts to {input_size[0]}x{input_size[1]}"
                   if input_size != image_size else "")
        raise KeywordError(f"im_dim={config['im_dim']} but {path} holds {image_size[0]}x"
                           f"{image_size[1]} images (variant {info.get('variant')}){windows}; "
                           f"use im_dim={input_size} or leave it out")
    for phase in methodology.phases(config):
        for split in (phase.split, "val") if phase.validates else (phase.split,):
            if sizes.get(split, 0) == 0:
                hint = (" (built with no validation sources; use val=False or rebuild with "
                        "--val-sources)" if split in ("train_noval", "val") else "")
                raise KeywordError(f"{path} has no {split!r} images{hint}")
            if split != "val" and config["batch_size"] > sizes[split]:
                raise KeywordError(f"batch_size={config['batch_size']} is larger than the "
                                   f"{sizes[split]} images of split {split!r} in {path}")
    if sizes.get("test", 0) == 0:
        raise KeywordError(f"{path} has no 'test' images")
    return input_size


class RunDefinition(NamedTuple):
    config: dict  # the keywords as run
    dataset: Path
    info: dict  # the dataset's attributes and split sizes
    network: Network
    class_weights: tuple | None  # the cost's weight per class (class_weights=), None: off


def define_run(given: dict) -> RunDefinition:
    dataset = dataset_path(given)
    labels_sha256 = verify_dataset(dataset)  # whole splits, valid labels: before any use
    info = {**dataset_info(dataset), "labels_sha256": labels_sha256}
    image_size = check_dataset(dataset, info, given)
    network = get_network(given["network"], im_dim=image_size,
                          n_classes=len(info["class_names"]),
                          **{k: given[k] for k in NETWORK_KEYWORDS})
    savename = given["savename"] or Path("trained_models") / f"{given['network']}_{dataset.stem}"
    config = {**given, "dataset": str(dataset), "im_dim": image_size,
              "p_dropConv": network.options["p_dropConv"], "savename": str(savename)}
    return RunDefinition(config, dataset, info, network, cost_class_weights(config, info))


def cost_class_weights(config: dict, info: dict) -> tuple | None:
    """class_weights= as one weight per class of the dataset: 'balanced' from the class
    frequencies of the split the run first trains on (the validation images are stratified
    like it), a list checked against the dataset's classes."""
    weights, names = config["class_weights"], list(info["class_names"])
    if weights is None:
        return None
    if weights != "balanced":
        if len(weights) != len(names):
            raise KeywordError(f"class_weights has {len(weights)} values but {config['dataset']} "
                               f"has {len(names)} classes ({', '.join(names)}): give one weight "
                               f"per class, in that order")
        return tuple(weights)
    split = methodology.phases(config)[0].split
    frequencies = class_frequencies(config["dataset"], split)
    absent = [name for name, n in zip(names, frequencies) if n <= 0]
    if absent:
        raise KeywordError(f"class_weights='balanced': split {split!r} of {config['dataset']} "
                           f"has no images of {', '.join(absent)}, so there is no inverse "
                           f"frequency to weight by: give a list of {len(names)} weights")
    return tuple(balanced_class_weights(frequencies))


def online_test_views(config: dict, info: dict) -> OnlineViews:
    """The online test-time views matching how the run trains on this dataset."""
    return OnlineViews.matching(online_augmentation.parse(config["augment"]),
                                get_variant(info["variant"]).mirrored)


def training_steps(config: dict, network: Network, info: dict, class_weights=None,
                   teachers=None):
    """(optimizer, reduce-on-plateau or None, the compiled Steps) the keywords ask for;
    ``teachers``: distillation's (``utils.experiments.teachers.load_teachers``), or None."""
    optimizer = make_optimizer(config["optimizer"], config["learning_rate"],
                               config["optimizer_options"], config["weight_decay"])
    schedule = make_schedule(config["lr_schedule"], config["learning_rate"],
                             config["lr_schedule_options"], config["n_epochs"],
                             config["warmup_epochs"])
    plateau = (make_plateau(config["lr_schedule_options"])
               if config["lr_schedule"] == "plateau" else None)
    objective = Objective(augmentation=online_augmentation.parse(config["augment"]),
                          targets=TARGET_RULES[info.get("label_mode")],
                          label_smoothing=config["label_smoothing"], mixup=config["mixup"],
                          cutmix=config["cutmix"], class_weights=class_weights)
    steps = Steps(network, optimizer, schedule, L1_reg=config["L1_reg"], L2_reg=config["L2_reg"],
                  bn_stats=config["bn_stats"], bn_momentum=config["bn_momentum"],
                  objective=objective, views=online_test_views(config, info),
                  dtype=config["dtype"], ema_decay=config["ema_decay"],
                  **({} if teachers is None else {"distillation": teachers.distillation,
                                                  "teacher_trees": teachers.trees}))
    return optimizer, plateau, steps
