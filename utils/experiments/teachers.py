"""The teachers of a distilled run (``teacher=``): saved models loaded and checked against the
run's dataset, placed on the devices, and their identity.

A teacher must classify the dataset's classes and take its images (its own windows are cut
from them, as at test time). Its parameters are not copied into the run's checkpoints: each
checkpoint (and the student's model file) records each teacher's path and the SHA-256 of its
file, and resume refuses teachers whose files differ, wherever they are now (the path may
change, as a dataset's may).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, NamedTuple

from utils.evaluation.inference import InferenceModel
from utils.experiments.run_folder import RunFolderError
from utils.models.model_io import ModelFileError, file_of
from utils.training.distillation import Distillation, Teacher


class Teachers(NamedTuple):
    distillation: Distillation
    trees: tuple  # each teacher's (params, bn_state), placed on the devices
    identity: list  # each teacher's {"path", "sha256"} (of its model file)


def load_teachers(config: dict, info: dict, place: Callable = lambda tree: tree,
                  ) -> Teachers | None:
    """The run's teachers, or None without ``teacher=``; a ModelFileError (one sentence naming
    the file) for a teacher that is missing, damaged, or of other classes or image size."""
    if config["teacher"] is None:
        return None
    teachers, trees, identity = [], [], []
    for path in config["teacher"]:
        model = _checked_model(path, info, config["dataset"])
        teachers.append(Teacher(model.network, model.online, model.variant.mirrored))
        trees.append((model.params, model.bn_state))
        file = file_of(path)
        identity.append({"path": str(file),
                         "sha256": hashlib.sha256(file.read_bytes()).hexdigest()})
    distillation = Distillation(tuple(teachers), config["distill_temperature"],
                                config["distill_weight"], config["distill_views"])
    return Teachers(distillation, place(tuple(trees)), identity)


def _checked_model(path: str, info: dict, dataset: str) -> InferenceModel:
    try:
        model = InferenceModel(path)
    except ModelFileError as err:
        raise ModelFileError(f"teacher {err}") from None
    names = list(info["class_names"])
    if model.class_names != names:
        raise ModelFileError(f"teacher {path} classifies {len(model.class_names)} classes "
                             f"({', '.join(model.class_names)}) but {dataset} has {len(names)} "
                             f"({', '.join(names)}): a teacher must classify the dataset's "
                             f"classes")
    size = list(info["image_size"])
    if [model.image_size] * 2 != size:
        raise ModelFileError(f"teacher {path} takes {model.image_size}x{model.image_size} images "
                             f"(its {model.variant.name} variant) but {dataset} holds "
                             f"{size[0]}x{size[1]} ones: a teacher must take the dataset's "
                             f"images (it cuts its own windows from them)")
    return model


def check_same_teachers(path: Path, saved: list | None, now: list | None) -> None:
    """Refuse to resume a checkpoint with teachers other than its own (by their files'
    contents), or with teachers where it had none or none where it had them."""
    saved_sums = [teacher["sha256"] for teacher in saved or []]
    now_sums = [teacher["sha256"] for teacher in now or []]
    if saved_sums == now_sums:
        return
    if not saved_sums or not now_sums:
        had = "without a teacher" if not saved_sums else f"with {len(saved_sums)} teacher(s)"
        raise RunFolderError(f"{path} was trained {had}, but this run has "
                             f"{len(now_sums) or 'no'} teacher(s): resume with the run's "
                             f"keywords or start a new savename")
    detail = "; ".join(f"{teacher['path']} (SHA-256 {teacher['sha256'][:12]}...)"
                       for teacher in now)
    theirs = "; ".join(f"{teacher['path']} ({teacher['sha256'][:12]}...)" for teacher in saved)
    raise RunFolderError(f"the teachers {detail} are not those {path} was trained with "
                         f"({theirs}): resume with the run's teacher files (the same contents, "
                         f"wherever they are now) or start a new run")


def describe_teachers(teachers: Teachers) -> str:
    """The header line of a distilled run: its teachers, their views, T and w."""
    d = teachers.distillation
    each = "; ".join(f"{entry['path']} (network {teacher.network.name}, "
                     f"{teacher.n_views(d.views)} view{'s' * (teacher.n_views(d.views) > 1)})"
                     for entry, teacher in zip(teachers.identity, d.teachers))
    return (f"distilling from {each}: cost (1 - {d.weight:g}) hard + {d.weight:g} x "
            f"{d.temperature:g}^2 KL at temperature {d.temperature:g}")
