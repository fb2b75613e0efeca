"""What an experiment leaves behind: history CSV, plots, and its row in the experiment registry."""
from __future__ import annotations

import io
import json
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from utils.experiments.methodology import CRITERIA
from utils.experiments.registry import append_registry_row, csv_text
from utils.support.safe_files import atomic_write

HISTORY_COLUMNS = ["phase", "epoch", "train_cost", "train_error", "val_cost", "val_error",
                   "test_error", "learning_rate", "epoch_seconds"]


def code_version() -> str:
    """The git commit (with -dirty when the tree has changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "fer-jax " + metadata.version("fer-jax")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_history(path: Path, history: list[dict]) -> None:
    atomic_write(path, csv_text(HISTORY_COLUMNS, history).encode())


def record_run(folder, config: dict, results: dict, history: list[dict],
               entropy_epoch: int | None, run_management, version: str) -> None:
    """A finished run's files in its folder (history.csv, cost.png, results.json) and its row
    in the registry: every keyword that defines the run, every result, time, code version."""
    write_history(folder.file("history.csv"), history)
    plot_costs(folder.file("cost.png"), history, entropy_epoch, config["criterion"])
    atomic_write(folder.file("results.json"),
                 json.dumps({"config": config, "results": results}, indent=2,
                            default=str).encode())
    row = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "code_version": version}
    values = {**{k: v for k, v in config.items() if k not in run_management},
              **{k: v for k, v in results.items() if k not in ("confusion", "epochs")}}
    row.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                for k, v in values.items()})
    append_registry_row(Path(config["registry"]), row)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def plot_costs(path: Path, history: list[dict], entropy_epoch: int | None,
               criterion: str = "entropy") -> None:
    """Training and validation cost per epoch of the validated search, its entropy point
    marked; then the training that followed, each later phase's start marked."""
    plt = pyplot()
    search = [h for h in history if h["val_cost"] is not None]
    final = [h for h in history if h["val_cost"] is None]
    panels = [p for p in (search, final) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    axes = axes[0]
    if search:
        ax = axes[0]
        epochs = [h["epoch"] for h in search]
        ax.plot(epochs, [h["train_cost"] for h in search], color="tab:blue", label="train")
        ax.plot(epochs, [h["val_cost"] for h in search], color="tab:red", label="validation")
        if entropy_epoch:
            point = search[entropy_epoch - 1]
            ax.axvline(entropy_epoch, color="gray", linestyle=":")
            ax.plot([entropy_epoch], [point["val_cost"]], "o", color="black",
                    label=f"{CRITERIA[criterion][1]} (epoch {entropy_epoch})")
        ax.set_title(f"{search[0]['phase']}, validating every epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cost (cross-entropy)")
        ax.legend()
    if final:
        ax = axes[-1]
        steps = np.arange(1, len(final) + 1)
        ax.plot(steps, [h["train_cost"] for h in final], color="tab:blue", label="train")
        for i in range(1, len(final)):
            if final[i]["phase"] != final[i - 1]["phase"]:
                ax.axvline(i + 0.5, color="gray", linestyle="--",
                           label=f"{final[i]['phase']} starts")
        ax.set_title("training on the full training set")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cost (cross-entropy)")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(path: Path, counts: np.ndarray, class_names: list[str], title: str) -> bytes:
    """Row-normalised confusion matrix (rows: true class), with the counts written in; the
    PNG's bytes are returned too (the event files show the same picture)."""
    plt = pyplot()
    n = len(class_names)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                    fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> bytes:
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return buffer.getvalue()
