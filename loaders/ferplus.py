"""FER+ labels for the FER2013 images: read fer2013new.csv, align it with the FER2013 rows and
apply one of FERPlus's label modes (microsoft/FERPlus, src/ferplus.py, `_process_data` and
`_process_target`; Barsoum et al., ICMI 2016).

The labels file has one row per FER2013 row, in the same order (FERPlus's own
generate_training_data.py pairs them by position):
    Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
ten vote counts per image: the eight emotions (CLASS_NAMES, FER+ order), then unknown and NF
(not a face). The rules, as FERPlus applies them:
- In every mode a single vote is noise: counts of 1 become 0.
- majority: the class with more than half of the remaining votes, else no label.
- probability, crossentropy: take the classes with the most votes, then the next most, while
  they hold under 75 % of the votes and fewer than 3 classes are taken; ties are taken
  together, and a tie with unknown or NF stops the walk (unknown/NF is kept only when nothing
  came before it). The image is dropped when the taken classes hold 50 % of the votes or less,
  or more than 3 were taken. Target: the taken votes normalised (probability samples a class
  from it each time the image is used, which is the trainer's business).
- multi_target: every class with at least 30 % of the votes; dropped when they hold 50 % or
  less. Target: 1 for those classes, then FERPlus's (1 - eps) * t + eps with eps = 0.001.
- An image whose kept votes peak (first of ties, np.argmax) at unknown or NF is dropped, and so
  is a row without an image name (FERPlus never writes its image).
The hard label is that peak, FERPlus's class index for the image.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loaders.sources import USAGE_NAMES, DatasetError, Labelling, SourceData, file_sha256

CLASS_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
               "contempt")
VOTE_COLUMNS = CLASS_NAMES + ("unknown", "NF")
HEADER = ("Usage", "Image name") + VOTE_COLUMNS
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
# The mode the FER+ paper evaluates with, whatever the training mode.
EVALUATION_MODE = "majority"
N_EMOTIONS = len(CLASS_NAMES)
UNKNOWN, NOT_A_FACE = N_EMOTIONS, N_EMOTIONS + 1  # columns of the votes
MULTI_TARGET_EPSILON = 0.001
# Why a row is left out; each row counts under the first reason that applies, in this order.
DROP_REASONS = ("no image name", "no majority", "kept votes <= 50 %", "more than 3 classes",
                "top class unknown", "top class NF (not a face)")
KEPT = -1
(NO_IMAGE_NAME, NO_MAJORITY, HALF_OR_LESS, OVER_THREE_CLASSES, TOP_UNKNOWN,
 TOP_NOT_A_FACE) = range(len(DROP_REASONS))
TARGET_RULES = {
    "majority": "one-hot of the majority class",
    "probability": "the votes of the taken classes, normalised (sample one class per use)",
    "crossentropy": "the votes of the taken classes, normalised",
    "multi_target": f"(1 - {MULTI_TARGET_EPSILON}) x (1 for each class with >= 30 % of the "
                    f"votes) + {MULTI_TARGET_EPSILON}; does not sum to 1",
}


# ---------------------------------------------------------------- the labels file

@dataclass(frozen=True)
class FerPlusFile:
    path: Path
    usage: np.ndarray  # str [N]
    named: np.ndarray  # bool [N]: the row has an image name
    votes: np.ndarray  # uint8 [N, 10], VOTE_COLUMNS order
    lines: np.ndarray  # int [N]: each data row's line in the file (the header is line 1)
    sha256: str


def read_ferplus(path: str | os.PathLike) -> FerPlusFile:
    """Read fer2013new.csv (plain or gzip-compressed); blank lines are ignored."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such FER+ labels file") from None
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the FER+ labels ({error})") from None
    numbered = [(number, line.rstrip("\r")) for number, line in
                enumerate(text.split("\n"), 1) if line.strip()]
    if not numbered:
        raise DatasetError(f"{path}: empty file (expected the FER+ header {','.join(HEADER)})")
    names = tuple(field.strip().strip('"') for field in numbered[0][1].split(","))
    if tuple(name.lower() for name in names) != tuple(name.lower() for name in HEADER):
        raise DatasetError(f"{path}, line {numbered[0][0]}: not the FER+ header (expected "
                           f"{','.join(HEADER)})")
    rows = [_parse_row(path, row, number, line)
            for row, (number, line) in enumerate(numbered[1:], 1)]
    usage, named, votes = zip(*rows) if rows else ((), (), ())
    return FerPlusFile(path, np.array(usage, str), np.array(named, bool),
                       np.array(votes, np.uint8).reshape(-1, len(VOTE_COLUMNS)),
                       np.array([number for number, _ in numbered[1:]], np.int64),
                       file_sha256(path))


def _parse_row(path: Path, row: int, number: int, line: str) -> tuple[str, bool, list[int]]:
    where = f"{path}, data row {row:,} (line {number:,})"
    fields = [field.strip().strip('"').strip() for field in line.split(",")]
    if len(fields) != len(HEADER):
        raise DatasetError(f"{where}: expected {len(HEADER)} comma-separated fields, "
                           f"found {len(fields)}")
    if fields[0] not in USAGE_NAMES:
        raise DatasetError(f"{where}: unknown Usage {fields[0]!r} (expected Training, "
                           f"PublicTest or PrivateTest)")
    counts = fields[2:]
    bad = next((count for count in counts if not (count.isdigit() and int(count) <= 255)), None)
    if bad is not None:
        raise DatasetError(f"{where}: vote count {bad!r} is not a whole number 0..255")
    return fields[0], bool(fields[1]), [int(count) for count in counts]


def check_alignment(labels: FerPlusFile, data: SourceData, source: str | os.PathLike) -> None:
    """Refuse labels that are not row for row the source's: the same number of data rows and
    the same Usage in each. Data rows count from 1, the header not counted."""
    n_common = min(len(labels.usage), len(data.usage))
    differing = np.flatnonzero(labels.usage[:n_common] != data.usage[:n_common])
    if differing.size:
        row = int(differing[0])
        raise DatasetError(
            f"{labels.path}, data row {row + 1:,} (line {labels.lines[row]:,}): Usage "
            f"{labels.usage[row]}, but data row {row + 1:,} of {source} is {data.usage[row]}; "
            f"the FER+ labels must list the FER2013 rows in the same order")
    if len(labels.usage) != len(data.usage):
        longer, shorter = ((labels.path, source) if len(labels.usage) > len(data.usage)
                           else (source, labels.path))
        raise DatasetError(
            f"{labels.path} has {len(labels.usage):,} data rows and {source} "
            f"{len(data.usage):,}: data row {n_common + 1:,} of {longer} has no partner in "
            f"{shorter}; the FER+ labels must match the FER2013 source row for row")


# ---------------------------------------------------------------- the label modes

@dataclass(frozen=True)
class ModeLabels:
    targets: np.ndarray  # float32 [N, 8]; zeros where the row is dropped
    labels: np.ndarray  # int32 [N], the hard label; -1 where the row is dropped
    reasons: np.ndarray  # int8 [N], KEPT or an index of DROP_REASONS

    @property
    def kept(self) -> np.ndarray:
        return self.reasons == KEPT


def apply_mode(votes: np.ndarray, named: np.ndarray, mode: str) -> ModeLabels:
    """Each row's target, hard label and keep/drop decision under FERPlus's `mode`."""
    if mode not in LABEL_MODES:
        raise DatasetError(f"unknown label mode {mode!r} (choose one of {', '.join(LABEL_MODES)})")
    counts = votes.astype(np.float64)
    counts[counts <= 1] = 0  # FERPlus: a count below 1 + machine epsilon becomes 0
    taken, reasons = _MODE_RULES[mode](counts)
    peak = taken.argmax(axis=1)  # np.argmax as FERPlus: the first of tied classes
    reasons[(reasons == KEPT) & (peak == UNKNOWN)] = TOP_UNKNOWN
    reasons[(reasons == KEPT) & (peak == NOT_A_FACE)] = TOP_NOT_A_FACE
    reasons[~named] = NO_IMAGE_NAME
    kept = reasons == KEPT
    emotions = taken[kept, :N_EMOTIONS]
    targets = np.zeros((len(votes), N_EMOTIONS), np.float32)
    targets[kept] = mode_target(emotions / emotions.sum(axis=1, keepdims=True), mode)
    return ModeLabels(targets, np.where(kept, peak, -1).astype(np.int32), reasons)


def mode_target(distribution: np.ndarray, mode: str) -> np.ndarray:
    """FERPlus's `_process_target` for the stored target: the distribution itself, except in
    multi_target, where every class in it counts 1, plus the epsilon FERPlus adds."""
    if mode != "multi_target":
        return distribution
    return (1 - MULTI_TARGET_EPSILON) * (distribution > 0) + MULTI_TARGET_EPSILON


def _majority(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The votes of the class with more than half of them; reasons KEPT or NO_MAJORITY."""
    rows = np.arange(len(counts))
    top = counts.argmax(axis=1)
    has_majority = counts[rows, top] > 0.5 * counts.sum(axis=1)
    taken = np.zeros_like(counts)
    taken[rows[has_majority], top[has_majority]] = counts[rows[has_majority], top[has_majority]]
    return taken, np.where(has_majority, KEPT, NO_MAJORITY).astype(np.int8)


def _largest_classes(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probability / crossentropy: FERPlus's walk down the classes by number of votes, one pass
    per vote count, all rows still walking at once (3 passes at most)."""
    total = counts.sum(axis=1)
    remaining, taken = counts.copy(), np.zeros_like(counts)
    n_taken = np.zeros(len(counts), np.int64)
    taken_votes = np.zeros(len(counts))
    stopped = np.zeros(len(counts), bool)
    while True:
        rows = np.flatnonzero(~stopped & (taken_votes < 0.75 * total) & (n_taken < 3))
        if not rows.size:
            break
        top = remaining[rows].max(axis=1, keepdims=True)
        tied = remaining[rows] == top
        # FERPlus's loop visits the emotions before unknown and NF, so every tied emotion is
        # taken before a tied unknown/NF ends the walk.
        emotions = tied[:, :N_EMOTIONS]
        taken[rows, :N_EMOTIONS] += np.where(emotions, top, 0)
        remaining[rows, :N_EMOTIONS] = np.where(emotions, 0, remaining[rows, :N_EMOTIONS])
        n_taken[rows] += emotions.sum(axis=1)
        taken_votes[rows] += top[:, 0] * emotions.sum(axis=1)
        ends = tied[:, N_EMOTIONS:].any(axis=1)
        stopped[rows[ends]] = True
        # The unknown/NF class stays only when nothing came before it.
        alone = ends & (taken[rows].sum(axis=1) == 0)
        first_other = N_EMOTIONS + tied[:, N_EMOTIONS:].argmax(axis=1)
        taken[rows[alone], first_other[alone]] = top[alone, 0]
        n_taken[rows[alone]] += 1
    reasons = np.full(len(counts), KEPT, np.int8)
    reasons[n_taken > 3] = OVER_THREE_CLASSES
    reasons[taken.sum(axis=1) <= 0.5 * total] = HALF_OR_LESS
    return taken, reasons


def _at_least_30_percent(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """multi_target: the classes with at least 30 % of the votes (compared in floating point
    as FERPlus does: 0.3 * total); reasons KEPT or HALF_OR_LESS."""
    total = counts.sum(axis=1, keepdims=True)
    taken = np.where(counts >= 0.3 * total, counts, 0)
    reasons = np.where(taken.sum(axis=1) <= 0.5 * total[:, 0], HALF_OR_LESS, KEPT)
    return taken, reasons.astype(np.int8)


_MODE_RULES = {"majority": _majority, "probability": _largest_classes,
               "crossentropy": _largest_classes, "multi_target": _at_least_30_percent}


# ---------------------------------------------------------------- labels for a build

def ferplus_labelling(path: str | os.PathLike, data: SourceData, source: str | os.PathLike,
                      mode: str) -> Labelling:
    """FER+ labels for the rows of `data`, read from `path` and checked row by row.

    Training rows follow `mode`. Test rows are what the FER+ paper evaluates on: the images
    majority mode keeps, labelled with their majority class; their target is the mode's where
    the mode keeps the image, else the majority one-hot (in multi_target's form, epsilon
    included), so every stored row has one."""
    ferplus = read_ferplus(path)
    check_alignment(ferplus, data, source)
    trained = apply_mode(ferplus.votes, ferplus.named, mode)
    evaluated = (trained if mode == EVALUATION_MODE
                 else apply_mode(ferplus.votes, ferplus.named, EVALUATION_MODE))
    is_training = data.usage == "Training"
    reasons = np.where(is_training, trained.reasons, evaluated.reasons)
    own_target = is_training | trained.kept
    targets = np.where(own_target[:, None], trained.targets,
                       mode_target(evaluated.targets, mode)).astype(np.float32)
    usages = [usage for usage in USAGE_NAMES if (data.usage == usage).any()]
    attributes = {
        "label_source": "ferplus",
        "label_mode": mode,
        "test_label_mode": EVALUATION_MODE,
        "target_rule": TARGET_RULES[mode],
        "ferplus_name": ferplus.path.name,
        "ferplus_sha256": ferplus.sha256,
        "drop_reasons": list(DROP_REASONS),
        "drop_usages": usages,
        "usage_rows": [int((data.usage == usage).sum()) for usage in usages],
        "drop_counts": np.array([_reason_counts(reasons[data.usage == usage])
                                 for usage in usages], np.int64).reshape(len(usages), -1),
        "n_test_majority_targets": int((~own_target & (reasons == KEPT)).sum()),
    }
    labels = np.where(is_training, trained.labels, evaluated.labels).astype(np.int32)
    return Labelling(CLASS_NAMES, labels, reasons == KEPT,
                     {"votes": ferplus.votes, "targets": targets}, attributes)


def _reason_counts(reasons: np.ndarray) -> np.ndarray:
    return np.bincount(reasons[reasons != KEPT], minlength=len(DROP_REASONS))


def drop_summary(info: dict) -> list[str]:
    """One line per usage from a FER+ file's attributes: how many rows were kept, and why the
    others were dropped (e.g. `Training (majority mode): kept 25,060 of 28,709; dropped: ...`)."""
    lines = []
    for usage, n_rows, counts in zip(info["drop_usages"], info["usage_rows"],
                                     info["drop_counts"]):
        mode = (f"{info['label_mode']} mode" if usage == "Training"
                else f"{info['test_label_mode']} mode, for evaluation")
        dropped = ", ".join(f"{count:,} {reason}"
                            for reason, count in zip(info["drop_reasons"], counts) if count)
        lines.append(f"{usage} ({mode}): kept {n_rows - sum(counts):,} of {n_rows:,}; "
                     f"dropped: {dropped or 'none'}")
    return lines
