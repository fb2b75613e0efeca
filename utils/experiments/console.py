"""What the launcher prints: the run's header, the thesis's line per epoch, the results table."""
from __future__ import annotations

import jax

from utils.nn.precision import bfloat16_cpu_note


def log(message: str = "") -> None:
    if jax.process_index() == 0:  # one voice in a multi-host run
        print(message, flush=True)


def print_header(config: dict, info: dict, network, devices, run_dir) -> None:
    height, width = info["image_size"]
    windows = ("" if list(config["im_dim"]) == [height, width] else
               f", network input {config['im_dim'][0]}x{config['im_dim'][1]} windows")
    log(f"dataset {config['dataset']} (variant {info.get('variant')}, {height}x{width}"
        f"{windows}): " + ", ".join(f"{k} {v}" for k, v in info["split_sizes"].items()))
    log(network.summary())
    log(f"devices: {len(devices)} x {devices[0].device_kind} | optimizer {config['optimizer']} "
        f"lr {config['learning_rate']:g} ({config['lr_schedule']}) | batch "
        f"{config['batch_size']} | seed {config['seed']} | saving to {run_dir}")
    if config["dtype"] == "bfloat16" and devices[0].platform == "cpu":
        log(bfloat16_cpu_note())


def print_phase_header(phase, n_epochs: int, loader) -> None:
    log(f"\n== {phase.title}: {n_epochs} epochs of {loader.n_batches} batches "
        f"({loader.n_examples} images) ==")


def print_epoch(row: dict, phase) -> None:
    """``epoch x, validation error x %, test error x %`` or ``epoch x, train cost x ...``."""
    test = (f", test error {100 * row['test_error']:.2f} %"
            if row["test_error"] is not None else "")
    if phase.validates:
        line = (f"epoch {row['epoch']}, validation error {100 * row['val_error']:.2f} %"
                f"{test} (train cost {row['train_cost']:.4f}, validation cost "
                f"{row['val_cost']:.4f})")
    else:
        line = f"epoch {row['epoch']}, train cost {row['train_cost']:.4f}{test}"
    log(f"{line} [{phase.name}, lr {row['learning_rate']:.3g}, "
        f"{row.get('epoch_seconds', 0):.1f} s]")


def print_point(name: str, best: dict) -> None:
    log(f"{name}: epoch {best['epoch']} (validation cost {best['val_cost']:.4f}, "
        f"validation error {100 * best['val_error']:.2f} %)")


def duration(seconds: float) -> str:
    """``1 h 20 min``, ``9 min 36 s``, ``8.3 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, whole_seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {whole_seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _percent(value) -> str:
    return "   -   " if value is None else f"{100 * value:6.2f} %"


def print_summary(r: dict, network_name: str, dataset_name: str, config: dict) -> None:
    log(f"\nresults ({network_name}, {dataset_name}, seed {config['seed']})")
    if r["entropy_epoch"]:
        log(f"  entropy point        epoch {r['entropy_epoch']} (validation error "
            f"{_percent(r['best_val_error']).strip()}, cost {r['best_val_cost']:.4f})")
    log(f"  {'':20} {'all':>9} {'PublicTest':>11} {'PrivateTest':>11}")
    for prefix, label in (("test", "test error"), ("aug_test", "augmented test error")):
        if f"{prefix}_error" in r:
            log(f"  {label:20} {_percent(r[f'{prefix}_error'])} "
                f"{_percent(r[f'{prefix}_error_PublicTest']):>11} "
                f"{_percent(r[f'{prefix}_error_PrivateTest']):>11}")
    print_recall(r)
    log(f"  training time {r['train_seconds']:.1f} s ({r['seconds_per_epoch']:.1f} s per "
        f"epoch, {sum(r['epochs'].values())} epochs: " +
        ", ".join(f"{k} {v}" for k, v in r["epochs"].items()) + ")")
    events = ", TensorBoard event files" if config.get("tensorboard") else ""
    log(f"  saved in {config['savename']}: model.msgpack, history.csv, cost.png, "
        f"confusion.png, results.json{events}; registry row in {config['registry']}")


def print_recall(r: dict) -> None:
    """Recall per class (the augmented test's when there is one), all / PublicTest / PrivateTest."""
    recall = r.get("per_class_recall")
    if not recall:
        return
    test = "aug_test" if "aug_test" in recall else "test"
    log(f"  recall per class ({'augmented test' if test == 'aug_test' else 'test'}):")
    by_split = recall[test]
    for name in r["class_names"]:
        figures = [None if by_split[s] is None else by_split[s][name]
                   for s in ("all", "PublicTest", "PrivateTest")]
        log(f"    {name:18} {_percent(figures[0])} {_percent(figures[1]):>11} "
            f"{_percent(figures[2]):>11}")
