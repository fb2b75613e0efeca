"""A short run's costs, pinned: the launcher's results must not drift when its code is moved.

The figures were recorded with the launcher as it was before the redesign that split it into
utils/experiments/methodology.py, experiment.py, run_folder.py, ... (commit f5096c5) and reproduced
bit for bit after it on the recording machine. The tolerance only absorbs float32 rounding
differences between CPUs (other SIMD widths change XLA's summation order); a changed rule of the
methodology, a different key or data order, or a changed cost moves them far more.
"""
import csv

import pytest
from launcher_support import quick_config

import run_experiment as launcher
from loaders.sample import ensure_sample_dataset

# (phase, epoch, train cost, validation cost) per epoch; then test cost, augmented test cost.
WITH_VALIDATION = [("search", 1, 2.1811346192108956, 1.975160147475661),
                   ("search", 2, 2.0751219234968485, 1.9400953315301699),
                   ("retrain", 1, 2.1929743831807915, None),
                   ("retrain", 2, 2.0655215816064314, None),
                   ("anneal", 1, 1.9982424540953203, None)]
WITH_VALIDATION_TEST = (1.9909769904936467, 2.015534180650825)
WITHOUT_VALIDATION = [("train", 1, 2.1929743831807915, None),
                      ("train", 2, 2.0655215816064314, None),
                      ("anneal", 1, 1.9982424540953203, None),
                      ("anneal", 2, 2.0121840888803657, None)]
WITHOUT_VALIDATION_TEST = (1.9890467756717856, 2.01158510200644)
RELATIVE = 1e-4


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


@pytest.mark.parametrize("keywords,expected,test_costs", [
    ({}, WITH_VALIDATION, WITH_VALIDATION_TEST),
    ({"val": False, "anneal_epochs": 2}, WITHOUT_VALIDATION, WITHOUT_VALIDATION_TEST),
])
def test_a_short_run_reproduces_its_pinned_costs(tmp_path, sample, keywords, expected,
                                                 test_costs):
    results = launcher.run_experiment(**quick_config(tmp_path, sample, **keywords))
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    got = [(row["phase"], int(row["epoch"]), float(row["train_cost"]),
            float(row["val_cost"]) if row["val_cost"] else None) for row in history]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    for (*_, train, val), (*_, want_train, want_val) in zip(got, expected):
        assert train == pytest.approx(want_train, rel=RELATIVE)
        assert val == (None if want_val is None else pytest.approx(want_val, rel=RELATIVE))
    assert results["test_cost"] == pytest.approx(test_costs[0], rel=RELATIVE)
    assert results["aug_test_cost"] == pytest.approx(test_costs[1], rel=RELATIVE)
