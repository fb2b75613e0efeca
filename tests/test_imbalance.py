"""Class imbalance: the balanced sampler's batches and epochs against counts worked out by hand,
its order reproducible and resumable; class_weights='balanced' from the training split's
counts, and the refusals. (The weighted cost against NumPy: tests/test_objective.py; FER+
soft targets: tests/test_ferplus_training.py; a killed run resuming bit for bit with both:
tests/test_resume.py.)"""
import json
import re

import numpy as np
import pytest
from launcher_support import quick_config
from loaders_testdata import sample_lines, write_csv

import run_experiment as launcher
from loaders.batches import BatchLoader
from loaders.build_dataset import build_dataset
from loaders.hdf5 import class_frequencies, read_split
from loaders.sampler import BALANCED_STREAM, balanced_order
from utils.evaluation.results import per_class_recall
from utils.training.objective import balanced_class_weights

# 3 classes of 5, 2 and 13 images, in no particular order.
LABELS = np.array([2, 0, 2, 1, 2, 2, 0, 2, 2, 0, 2, 2, 1, 2, 0, 2, 2, 2, 0, 2])


def test_the_labels_above_are_as_stated():
    assert np.bincount(LABELS).tolist() == [5, 2, 13]


def test_each_batch_holds_each_class_equally_often():
    # 6 rows a batch, 3 classes: exactly 2 of each in every batch of every epoch.
    for epoch in range(4):
        rows = balanced_order(LABELS, 6, 5, seed=3, epoch=epoch).reshape(5, 6)
        for batch in rows:
            assert np.bincount(LABELS[batch], minlength=3).tolist() == [2, 2, 2]


def test_leftover_rows_go_to_the_classes_in_turn_so_epochs_even_out():
    # 5 rows a batch: 1 of each class plus 2 left over; 4 batches: 20 slots an epoch. Slot g of
    # the run goes to the class at position g % 3 of the seeded class order, so by hand the
    # positions take 7, 7, 6 slots in epoch 0 (g = 0..19), 7, 6, 7 in epoch 1 (g = 20..39) and
    # 6, 7, 7 in epoch 2 (g = 40..59): 20 each over three epochs.
    order = np.random.default_rng([0, BALANCED_STREAM]).permutation(3)
    by_position = {0: [7, 7, 6], 1: [7, 6, 7], 2: [6, 7, 7]}
    totals = np.zeros(3, int)
    for epoch in range(3):
        rows = balanced_order(LABELS, 5, 4, seed=0, epoch=epoch)
        counts = np.bincount(LABELS[rows], minlength=3)
        assert [counts[order[position]] for position in range(3)] == by_position[epoch]
        for batch in rows.reshape(4, 5):
            assert sorted(np.bincount(LABELS[batch], minlength=3)) == [1, 2, 2]
        totals += counts
    assert totals.tolist() == [20, 20, 20]


def test_a_class_uses_every_image_once_before_any_twice():
    # Class 2 has 13 images; over epochs 0 and 1 it takes 13 or 14 of the slots.
    rows = np.concatenate([balanced_order(LABELS, 6, 3, seed=1, epoch=e) for e in range(3)])
    frequent = [r for r in rows if LABELS[r] == 2]  # 18 draws, in stream order per epoch
    assert len(frequent) == 18
    first_epoch = frequent[:6]
    assert len(set(first_epoch)) == 6  # no repeat within the first cycle
    assert len(set(frequent[:12])) == 12
    counts = np.bincount(frequent, minlength=len(LABELS))[LABELS == 2]
    assert counts.min() == 1 and counts.max() == 2  # 13 used once, 5 of them twice
    rare = np.bincount([r for r in rows if LABELS[r] == 1], minlength=len(LABELS))[LABELS == 1]
    assert rare.tolist() == [9, 9]  # 2 images share 18 draws


def test_the_order_is_a_function_of_seed_and_epoch():
    a = balanced_order(LABELS, 6, 5, seed=3, epoch=2)
    np.testing.assert_array_equal(a, balanced_order(LABELS, 6, 5, seed=3, epoch=2))
    assert not np.array_equal(a, balanced_order(LABELS, 6, 5, seed=3, epoch=1))
    assert not np.array_equal(a, balanced_order(LABELS, 6, 5, seed=4, epoch=2))


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """The sample with few disgust (8) and fear (20) Training images; the rest 80 a class."""
    folder = tmp_path_factory.mktemp("imbalanced")
    header, rows = sample_lines()
    kept, seen = [], {}
    for line in rows:
        label, usage = int(line.split(",", 1)[0]), line.rsplit(",", 1)[1]
        seen[label, usage] = seen.get((label, usage), 0) + 1
        if usage != "Training" or seen[label, usage] <= {1: 8, 2: 20}.get(label, 80):
            kept.append(line)
    csv = write_csv(folder / "imbalanced.csv", header, kept)
    return build_dataset(csv, "raw", folder / "imbalanced.h5", val_sources=0)


def test_the_loader_yields_balanced_batches_and_resumes_mid_epoch(imbalanced):
    _, labels = read_split(imbalanced, "train")
    assert np.bincount(labels).tolist() == [80, 8, 20, 80, 80, 80, 80]
    with BatchLoader(imbalanced, "train", 70, seed=5, sampler="balanced") as loader:
        assert loader.n_batches == 428 // 70
        batches = list(loader.batches(3))
        for batch in batches:
            assert np.bincount(np.asarray(batch.y), minlength=7).tolist() == [10] * 7
        tail = list(loader.batches(3, start_batch=4))
        for a, b in zip(batches[4:], tail):
            np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    with BatchLoader(imbalanced, "train", 70, seed=5, sampler="balanced", shared=True) as shared:
        for a, b in zip(batches, shared.batches(3)):
            np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    with pytest.raises(ValueError, match="sampler='balanced' orders training batches"):
        BatchLoader(imbalanced, "test", 70, shuffle=False, drop_remainder=False,
                    sampler="balanced")


def test_balanced_weights_are_the_inverse_class_frequency():
    # N = 20 images, K = 3 classes: w_k = N / (K n_k)
    assert balanced_class_weights([5, 2, 13]) == pytest.approx([20 / 15, 20 / 6, 20 / 39])
    with pytest.raises(ValueError, match="no training images"):
        balanced_class_weights([5, 0, 13])


def test_a_run_weights_its_cost_by_the_training_splits_counts(imbalanced, tmp_path):
    assert class_frequencies(imbalanced, "train").tolist() == [80, 8, 20, 80, 80, 80, 80]
    results = launcher.run_experiment(**quick_config(
        tmp_path, imbalanced, val=False, n_epochs=1, anneal_epochs=0, class_weights="balanced",
        sampler="balanced"))
    n = 428
    assert results["class_weights"] == pytest.approx(
        [n / (7 * 80), n / (7 * 8), n / (7 * 20)] + [n / (7 * 80)] * 4)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["class_weights"] == "balanced"
    assert saved["config"]["sampler"] == "balanced"
    recall = saved["results"]["per_class_recall"]["test"]["PublicTest"]
    assert list(recall) == saved["results"]["class_names"]


@pytest.mark.parametrize("keywords,message", [
    (["class_weights=[1,2,3]"], r"class_weights has 3 values but .*imbalanced.h5 has 7 classes "
                                r"\(angry, disgust, fear, happy, sad, surprise, neutral\): give "
                                r"one weight per class"),
    (["class_weights=balancd"], r"class_weights must be 'balanced' or a list of weights, one per "
                                r"class, got 'balancd' \(did you mean 'balanced'\?\)"),
    (["class_weights=[0,0,0,0,0,0,0]"], r"class_weights must be 'balanced' or a list of weights "
                                        r">= 0, one per class and not all 0"),
    (["class_weights=[1,-1,1,1,1,1,1]"], r"class_weights must be 'balanced' or a list"),
    (["sampler=balance"], r"sampler must be None .* or 'balanced' .*, got 'balance' \(did you "
                          r"mean 'balanced'\?\)"),
])
def test_bad_imbalance_keywords_are_refused_in_one_sentence(imbalanced, tmp_path, capsys,
                                                             keywords, message):
    arguments = [f"dataset={imbalanced}", f"savename={tmp_path / 'run'}", "network=mlp",
                 "n_hidden=[8]", "progress=False", "val=False", *keywords]
    assert launcher.main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_balanced_weights_need_every_class_in_the_training_split(tmp_path, capsys):
    header, rows = sample_lines()
    kept = [r for r in rows if not (r.startswith("1,") and r.endswith(",Training"))]
    dataset = build_dataset(write_csv(tmp_path / "x.csv", header, kept), "raw", tmp_path / "x.h5")
    assert launcher.main([f"dataset={dataset}", f"savename={tmp_path / 'run'}", "network=mlp",
                          "class_weights=balanced"]) == 2
    assert re.search(r"class_weights='balanced': split 'train_noval' of .*x.h5 has no images of "
                     r"disgust, so there is no inverse frequency to weight by: give a list of 7 "
                     r"weights", capsys.readouterr().err)


def test_recall_per_class_and_split_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 2])
    predicted = np.array([0, 1, 0, 1, 0, 2, 0, 0, 1, 2])
    usage = np.array(["PublicTest"] * 6 + ["PrivateTest"] * 4)
    recall = per_class_recall(labels, predicted, usage, ["a", "b", "c"])
    # PublicTest: a 2 of 3, b 1 of 2, c 1 of 1; PrivateTest: a 1 of 1, b 0 of 1, c 1 of 2
    assert recall["PublicTest"] == {"a": 2 / 3, "b": 1 / 2, "c": 1.0}
    assert recall["PrivateTest"] == {"a": 1.0, "b": 0.0, "c": 1 / 2}
    assert recall["all"] == {"a": 3 / 4, "b": 1 / 3, "c": 2 / 3}
    only_public = per_class_recall(labels[:5], predicted[:5], usage[:5], ["a", "b", "c"])
    assert only_public["PrivateTest"] is None and only_public["all"]["c"] is None
