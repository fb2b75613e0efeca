"""FER+ labels: FERPlus's label modes against hand computations, the row alignment with the
FER2013 source, builds in every mode on a generated labels file for the built-in sample, the
loaders on FER+ files, and (when ../shared is here) the published majority-mode counts."""
import csv

import h5py
import numpy as np
import pytest

from ferplus_reference import ferplus_image
from loaders import preview
from loaders.batches import BatchLoader
from loaders.build_dataset import build_dataset, main
from loaders.ferplus import DROP_REASONS, apply_mode, read_ferplus
from loaders.hdf5 import dataset_info, read_targets, read_votes
from loaders.sources import DatasetError
from loaders_testdata import FULL_CSV, SAMPLE_CSV, sample_lines

FULL_FERPLUS = FULL_CSV.parent.parent / "ferplus" / "fer2013new.csv"
# Written out here rather than imported, so that a wrong order in the code fails the tests.
VOTE_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
              "contempt", "unknown", "NF")
EMOTIONS = VOTE_NAMES[:8]
HEADER = "Usage,Image name," + ",".join(VOTE_NAMES)
MODES = ("majority", "probability", "crossentropy", "multi_target")


def votes(**counts):
    return [counts.get(name, 0) for name in VOTE_NAMES]


def distribution(**shares):
    return [shares.get(name, 0.0) for name in EMOTIONS]


def marked(*names):
    """multi_target's stored target: 1 for the marked classes, FERPlus's epsilon 0.001 elsewhere
    ((1 - 0.001) x 1 + 0.001 for the marked ones)."""
    return [1.0 if name in names else 0.001 for name in EMOTIONS]


def outcome(row_votes, mode, named=True):
    """(class name or None, target or the drop reason) of one image under `mode`."""
    result = apply_mode(np.array([row_votes], np.uint8), np.array([named]), mode)
    if not result.kept[0]:
        assert result.labels[0] == -1 and not result.targets[0].any()
        return None, DROP_REASONS[result.reasons[0]]
    return EMOTIONS[result.labels[0]], result.targets[0]


# ---------------------------------------------------------------- the label modes by hand

# (votes, majority, crossentropy, multi_target): a class and its target, or a drop reason.
HAND_CASES = {
    # 5 of 10 votes is no majority, but the five single votes do not count: 5 of 5.
    "single votes removed": (
        votes(neutral=5, happiness=1, surprise=1, sadness=1, anger=1, fear=1),
        ("neutral", distribution(neutral=1)), ("neutral", distribution(neutral=1)),
        ("neutral", marked("neutral"))),
    "exactly half is no majority; 3 of 10 is multi_target's 30 %": (
        votes(neutral=5, happiness=3, sadness=2), "no majority",
        ("neutral", distribution(neutral=5 / 8, happiness=3 / 8)),
        ("neutral", marked("neutral", "happiness"))),
    "just over half": (
        votes(neutral=6, happiness=4), ("neutral", distribution(neutral=1)),
        ("neutral", distribution(neutral=0.6, happiness=0.4)),
        ("neutral", marked("neutral", "happiness"))),
    # 6 of 8 is 75 %: the walk stops; 2 of 8 is under 30 % (2.4).
    "75 % reached after one class": (
        votes(neutral=6, happiness=2), ("neutral", distribution(neutral=1)),
        ("neutral", distribution(neutral=1)), ("neutral", marked("neutral"))),
    "under 75 % after one class": (
        votes(neutral=5, happiness=3), ("neutral", distribution(neutral=1)),
        ("neutral", distribution(neutral=5 / 8, happiness=3 / 8)),
        ("neutral", marked("neutral", "happiness"))),
    "two emotions tied at the top: both taken, the first in FER+ order labels": (
        votes(neutral=4, happiness=4, sadness=2), "no majority",
        ("neutral", distribution(neutral=0.5, happiness=0.5)),
        ("neutral", marked("neutral", "happiness"))),
    "a tie in the second pass is taken whole": (
        votes(neutral=6, happiness=2, sadness=2), ("neutral", distribution(neutral=1)),
        ("neutral", distribution(neutral=0.6, happiness=0.2, sadness=0.2)),
        ("neutral", marked("neutral"))),
    # 9 votes once anger's single is gone: 3 + three tied 2s makes 4 classes; 30 % is 2.7.
    "four classes": (
        votes(neutral=3, happiness=2, surprise=2, sadness=2, anger=1), "no majority",
        "more than 3 classes", "kept votes <= 50 %"),
    # 18 votes: 5 + 4 + 3 = 12 is under 13.5 (75 %), but three classes end the walk.
    "three passes": (
        votes(neutral=5, happiness=4, surprise=3, sadness=2, anger=2, fear=2), "no majority",
        ("neutral", distribution(neutral=5 / 12, happiness=4 / 12, surprise=3 / 12)),
        "kept votes <= 50 %"),
    # The tie with unknown ends the walk without unknown: 4 of 10 taken.
    "an emotion tied with unknown": (
        votes(happiness=4, unknown=4, neutral=2), "no majority", "kept votes <= 50 %",
        ("happiness", marked("happiness"))),
    "unknown tied in the second pass: the emotions before it are taken": (
        votes(happiness=6, neutral=2, unknown=2), ("happiness", distribution(happiness=1)),
        ("happiness", distribution(neutral=0.25, happiness=0.75)),
        ("happiness", marked("happiness"))),
    "unknown on top": (
        votes(unknown=6, sadness=4), "top class unknown", "top class unknown",
        "top class unknown"),
    "unknown tied with NF": (
        votes(unknown=4, NF=4, anger=2), "no majority", "kept votes <= 50 %",
        "top class unknown"),
    "not a face": (
        votes(NF=10), "top class NF (not a face)", "top class NF (not a face)",
        "top class NF (not a face)"),
    "NF on top of an emotion": (
        votes(NF=7, neutral=3), "top class NF (not a face)", "top class NF (not a face)",
        "top class NF (not a face)"),
    "every vote single": (
        votes(**{name: 1 for name in VOTE_NAMES}), "no majority", "kept votes <= 50 %",
        "kept votes <= 50 %"),
    # 9 votes: 30 % is 2.7, so 3 votes count and 2 do not.
    "30 % of 9 votes": (
        votes(neutral=4, happiness=3, sadness=2), "no majority",
        ("neutral", distribution(neutral=4 / 7, happiness=3 / 7)),
        ("neutral", marked("neutral", "happiness"))),
    "multi_target's classes hold exactly half": (
        votes(neutral=4, happiness=2, surprise=2), "no majority",
        ("neutral", distribution(neutral=0.5, happiness=0.25, surprise=0.25)),
        "kept votes <= 50 %"),
    "multi_target marks equally but labels the most voted class": (
        votes(neutral=3, happiness=5, sadness=2), "no majority",
        ("happiness", distribution(neutral=3 / 8, happiness=5 / 8)),
        ("happiness", marked("neutral", "happiness"))),
}


@pytest.mark.parametrize("case", list(HAND_CASES))
@pytest.mark.parametrize("mode", ["majority", "crossentropy", "multi_target"])
def test_each_mode_against_a_hand_computation(case, mode):
    row_votes, *expected = HAND_CASES[case]
    expected = expected[["majority", "crossentropy", "multi_target"].index(mode)]
    label, target_or_reason = outcome(row_votes, mode)
    if isinstance(expected, str):
        assert (label, target_or_reason) == (None, expected)
    else:
        assert label == expected[0]
        np.testing.assert_array_equal(target_or_reason, np.float32(expected[1]))


def test_probability_mode_keeps_crossentropy_rows_and_targets():
    table = np.array([case[0] for case in HAND_CASES.values()], np.uint8)
    named = np.ones(len(table), bool)
    probability, crossentropy = (apply_mode(table, named, mode)
                                 for mode in ("probability", "crossentropy"))
    np.testing.assert_array_equal(probability.reasons, crossentropy.reasons)
    np.testing.assert_array_equal(probability.targets, crossentropy.targets)
    np.testing.assert_array_equal(probability.labels, crossentropy.labels)


@pytest.mark.parametrize("mode", MODES)
def test_a_row_without_image_name_is_dropped_first(mode):
    assert outcome(votes(neutral=10), mode, named=False) == (None, "no image name")
    assert outcome(votes(NF=10), mode, named=False) == (None, "no image name")


def test_modes_match_ferplus_code_on_random_vote_tables():
    rng = np.random.default_rng(0)
    table = np.zeros((3000, 10), np.uint8)
    for row in table:
        classes = rng.choice(10, size=rng.integers(1, 6), replace=False)
        row[classes] = rng.multinomial(rng.integers(6, 13), np.full(len(classes),
                                                                    1 / len(classes)))
    for mode in MODES:
        _assert_matches_ferplus(table, apply_mode(table, np.ones(len(table), bool), mode), mode)


def _assert_matches_ferplus(table, result, mode):
    for index, row_votes in enumerate(table):
        kept, peak, target = ferplus_image(row_votes, mode)
        assert result.kept[index] == kept, (mode, row_votes)
        if kept:
            assert result.labels[index] == peak, (mode, row_votes)
            np.testing.assert_array_equal(result.targets[index], np.float32(target))


# ---------------------------------------------------------------- a generated labels file

# Row i of the sample takes pattern i % 16: (votes, has an image name, the class kept by
# majority, crossentropy/probability and multi_target, or None where the mode drops it).
PATTERNS = [
    (votes(neutral=10), True, "neutral", "neutral", "neutral"),
    (votes(happiness=7, surprise=3), True, "happiness", "happiness", "happiness"),
    (votes(surprise=6, fear=4), True, "surprise", "surprise", "surprise"),
    (votes(sadness=8, neutral=2), True, "sadness", "sadness", "sadness"),
    (votes(anger=9, disgust=1), True, "anger", "anger", "anger"),
    (votes(disgust=6, anger=4), True, "disgust", "disgust", "disgust"),
    (votes(fear=5, surprise=5), True, None, "surprise", "surprise"),
    (votes(contempt=6, neutral=4), True, "contempt", "contempt", "contempt"),
    (votes(happiness=4, unknown=4, neutral=2), True, None, None, "happiness"),
    (votes(unknown=6, sadness=4), True, None, None, None),
    (votes(NF=10), True, None, None, None),
    (votes(neutral=2, happiness=2, surprise=2, sadness=2, anger=2), True, None, None, None),
    (votes(neutral=10), False, None, None, None),
    (votes(contempt=7, disgust=3), True, "contempt", "contempt", "contempt"),
    (votes(fear=8, sadness=2), True, "fear", "fear", "fear"),
    # 13 votes: a majority of 7, but then three tied 2s make 4 classes for crossentropy.
    (votes(neutral=7, happiness=2, surprise=2, sadness=2), True, "neutral", None, "neutral"),
]
PATTERN_COLUMN = {"majority": 2, "probability": 3, "crossentropy": 3, "multi_target": 4}
# The sample: 560 Training rows (35 of each pattern), then 140 PublicTest rows.
N_SAMPLE_TRAINING = 560


def pattern_of(row):
    return PATTERNS[row % len(PATTERNS)]


def kept_class(row, mode):
    """The class a source row keeps in the file: the mode's for Training, majority's for test."""
    column = PATTERN_COLUMN[mode if row < N_SAMPLE_TRAINING else "majority"]
    return pattern_of(row)[column]


def write_labels(path, usages, patterns=None):
    lines = [HEADER]
    for row, usage in enumerate(usages):
        row_votes, named, *_ = pattern_of(row) if patterns is None else patterns[row]
        name = f"fer{row:07d}.png" if named else ""
        lines.append(f"{usage},{name}," + ",".join(map(str, row_votes)))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def sample_usages():
    _, rows = sample_lines()
    usages = [row.rsplit(",", 1)[1] for row in rows]
    assert usages == ["Training"] * N_SAMPLE_TRAINING + ["PublicTest"] * 140
    return usages


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory, sample_usages):
    return write_labels(tmp_path_factory.mktemp("ferplus") / "labels.csv", sample_usages)


@pytest.fixture(scope="module")
def built(tmp_path_factory, labels_file):
    folder = tmp_path_factory.mktemp("ferplus_built")
    files = {(mode, "mirror"): build_dataset(SAMPLE_CSV, "mirror", folder / f"{mode}.h5",
                                             ferplus=labels_file, label_mode=mode)
             for mode in MODES}
    for variant in ("raw", "crop5", "variant14"):
        files["majority", variant] = build_dataset(SAMPLE_CSV, variant, folder / f"{variant}.h5",
                                                   ferplus=labels_file)
    return files


def kept_rows(mode, rows):
    return [row for row in rows if kept_class(row, mode) is not None]


TRAINING_ROWS, TEST_ROWS = range(N_SAMPLE_TRAINING), range(N_SAMPLE_TRAINING, 700)
# Patterns kept: majority and crossentropy 10 of 16 (350 of 560), multi_target 12 (420);
# of the 140 test rows (patterns 0-11 nine times, 12-15 eight times) majority keeps 87.
HAND_N_TRAINING = {"majority": 350, "probability": 350, "crossentropy": 350,
                   "multi_target": 420}
HAND_N_TEST = 87


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_keeps_the_hand_counted_rows_with_their_labels(built, mode):
    assert len(kept_rows(mode, TRAINING_ROWS)) == HAND_N_TRAINING[mode]
    assert len(kept_rows(mode, TEST_ROWS)) == HAND_N_TEST
    with h5py.File(built[mode, "mirror"], "r") as file:
        sources = file["train/source_index"][...]
        assert sorted(set(sources)) == kept_rows(mode, TRAINING_ROWS)
        expected = [EMOTIONS.index(kept_class(source, mode)) for source in sources]
        np.testing.assert_array_equal(file["train/labels"][...], expected)
        # The test split is the same for every mode: majority's rows and labels.
        expected = [EMOTIONS.index(kept_class(row, mode)) for row in kept_rows(mode, TEST_ROWS)]
        np.testing.assert_array_equal(file["test/labels"][...], expected)
        np.testing.assert_array_equal(
            file["test/votes"][...], [pattern_of(row)[0] for row in kept_rows(mode, TEST_ROWS)])
        assert file["test/labels"].dtype == np.int32 and file["test/votes"].dtype == np.uint8


def _rows_of_pattern(file, split, pattern):
    return np.flatnonzero(file[f"{split}/source_index"][...] % len(PATTERNS) == pattern)


def test_stored_votes_targets_and_labels_by_hand(built):
    with h5py.File(built["crossentropy", "mirror"], "r") as file:
        tied = _rows_of_pattern(file, "train", 6)  # fear 5, surprise 5
        assert len(tied) == 35 * 2
        np.testing.assert_array_equal(file["train/votes"][tied], [votes(fear=5, surprise=5)] * 70)
        np.testing.assert_array_equal(file["train/targets"][tied],
                                      np.float32([distribution(surprise=0.5, fear=0.5)] * 70))
        assert set(file["train/labels"][tied]) == {EMOTIONS.index("surprise")}
        two = _rows_of_pattern(file, "train", 1)  # happiness 7, surprise 3
        np.testing.assert_array_equal(file["train/targets"][two[0]],
                                      np.float32(distribution(happiness=0.7, surprise=0.3)))
        # Test row of source 575 (pattern 15): crossentropy drops it (4 classes), so its target
        # is the majority one-hot; source 561 (pattern 1) keeps crossentropy's target.
        test_sources = kept_rows("majority", TEST_ROWS)
        targets = file["test/targets"][...]
        np.testing.assert_array_equal(targets[test_sources.index(575)],
                                      np.float32(distribution(neutral=1)))
        np.testing.assert_array_equal(targets[test_sources.index(561)],
                                      np.float32(distribution(happiness=0.7, surprise=0.3)))
        assert file.attrs["n_test_majority_targets"] == 8  # pattern 15 in the test rows
    with h5py.File(built["multi_target", "mirror"], "r") as file:
        unknown_tie = _rows_of_pattern(file, "train", 8)  # happiness 4, unknown 4, neutral 2
        np.testing.assert_array_equal(file["train/targets"][unknown_tie],
                                      np.float32([marked("happiness")] * 70))
        assert set(file["train/labels"][unknown_tie]) == {EMOTIONS.index("happiness")}
        pair = _rows_of_pattern(file, "train", 2)  # surprise 6, fear 4
        np.testing.assert_array_equal(file["train/targets"][pair],
                                      np.float32([marked("surprise", "fear")] * 70))


@pytest.mark.parametrize("mode", MODES)
def test_targets_are_distributions_or_multi_target_marks(built, mode):
    with h5py.File(built[mode, "mirror"], "r") as file:
        for split in ("train", "val", "test", "test_aug"):
            targets = file[f"{split}/targets"][...]
            assert targets.dtype == np.float32 and targets.shape[1] == 8
            if mode == "multi_target":  # FERPlus's epsilon: rows do not sum to 1
                assert set(np.unique(targets)) <= {np.float32(0.001), np.float32(1.0)}
                assert (targets == 1).any(axis=1).all()
            else:
                np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-6)
            labels = file[f"{split}/labels"][...]
            assert (targets[np.arange(len(labels)), labels] == targets.max(axis=1)).all()


# round(thesis count x 350 / 28709) for majority's 350 Training images.
HAND_N_VAL = {"raw": 45, "mirror": 45, "crop5": 37, "variant14": 35}
N_VARIANTS = {"raw": 1, "mirror": 2, "crop5": 10, "variant14": 14}


@pytest.mark.parametrize("variant", list(N_VARIANTS))
def test_split_sizes_of_every_variant(built, variant):
    n_variants, n_val = N_VARIANTS[variant], HAND_N_VAL[variant]
    expected = {"train": 350 * n_variants, "train_noval": (350 - n_val) * n_variants,
                "val": n_val * n_variants, "test": HAND_N_TEST}
    if variant != "raw":
        expected["test_aug"] = HAND_N_TEST * n_variants
    info = dataset_info(built["majority", variant])
    assert info["split_sizes"] == expected
    with h5py.File(built["majority", variant], "r") as file:
        for split, size in expected.items():
            assert file[f"{split}/votes"].shape == (size, 10)
            assert file[f"{split}/targets"].shape == (size, 8)
        assert file["val/targets"].is_virtual and file["train_noval/votes"].is_virtual
        # Every variant of a source repeats the source's votes, target and label.
        for name in ("votes", "targets", "labels"):
            values = file[f"train/{name}"][...].reshape(350, n_variants, -1)
            assert (values == values[:, :1]).all()
        if variant != "raw":
            aug_sources = file["test_aug/source_index"][...]
            for name in ("votes", "targets", "labels"):
                np.testing.assert_array_equal(file[f"test_aug/{name}"][...],
                                              file[f"test/{name}"][...][aug_sources])


def test_validation_is_stratified_over_eight_classes_without_leaks(built):
    with h5py.File(built["majority", "mirror"], "r") as file:
        noval = set(file["train_noval/source_index"][...])
        val_sources = np.unique(file["val/source_index"][...])
        val_labels = file["val/labels"][::2]
    assert not noval & set(val_sources)
    assert noval | set(val_sources) == set(kept_rows("majority", TRAINING_ROWS))
    np.testing.assert_array_equal(val_labels, [EMOTIONS.index(kept_class(source, "majority"))
                                               for source in val_sources])
    # Training classes: neutral and contempt 70 each, the six others 35. 45 validation
    # sources: quotas 9 and 4.5; the three left over go to the lowest tied classes 1, 2, 3.
    assert np.bincount(val_labels, minlength=8).tolist() == [9, 5, 5, 5, 4, 4, 4, 9]


def test_attributes_of_a_ferplus_file(built, labels_file):
    import hashlib
    info = dataset_info(built["majority", "mirror"])
    assert info["class_names"] == list(EMOTIONS) and info["n_classes"] == 8
    assert (info["label_source"], info["label_mode"], info["test_label_mode"]) == \
        ("ferplus", "majority", "majority")
    assert info["ferplus_name"] == "labels.csv"
    assert info["ferplus_sha256"] == hashlib.sha256(labels_file.read_bytes()).hexdigest()
    assert info["format_version"] == 1 and info["n_training_sources"] == 350
    assert info["drop_usages"] == ["Training", "PublicTest"]
    assert info["usage_rows"] == [560, 140]
    assert info["drop_reasons"] == ["no image name", "no majority", "kept votes <= 50 %",
                                    "more than 3 classes", "top class unknown",
                                    "top class NF (not a face)"]
    # Training, 35 rows a pattern: no name 12; no majority 6, 8, 11; unknown 9; NF 10.
    # PublicTest: patterns 0-11 nine rows each, 12-15 eight.
    assert info["drop_counts"] == [[35, 105, 0, 0, 35, 35], [8, 27, 0, 0, 9, 9]]


def test_a_fer2013_build_gains_no_dataset_nor_attribute(tmp_path):
    out = build_dataset(SAMPLE_CSV, "mirror", tmp_path / "fer2013.h5", val_sources=10)
    with h5py.File(out, "r") as file:
        assert set(file["train"]) == {"images", "labels", "source_index", "variant_index"}
        assert set(file["test"]) == {"images", "labels", "usage"}
        assert set(file["test_aug"]) == {"images", "labels", "usage", "source_index",
                                         "variant_index"}
        assert set(file.attrs) == {
            "format_version", "builder", "variant", "n_variants", "variant_names",
            "image_size", "source_image_size", "class_names", "source_name", "source_kind",
            "source_sha256", "seed", "val_sources", "val_sources_rule", "n_training_sources",
            "n_test_sources", "drop_blank", "n_blank_dropped_training", "n_blank_dropped_test",
            "n_bad_rows_skipped"}
    assert dataset_info(out)["n_classes"] == 7
    with pytest.raises(DatasetError, match=r"fer2013.h5: split 'train' has no targets \(only "
                                           r"files built with FER\+ labels, --ferplus, store "
                                           r"votes and targets\)"):
        read_targets(out, "train")
    with BatchLoader(out, "test", 64, drop_remainder=False, shared=True) as loader:
        assert all(batch.targets is None for batch in loader.batches(0))


# ---------------------------------------------------------------- alignment and bad input

def _build_with_labels(tmp_path, usages, patterns=None):
    labels = write_labels(tmp_path / "fer2013new.csv", usages,
                          patterns or [pattern_of(row) for row in range(len(usages))])
    with pytest.raises(DatasetError) as error:
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "out.h5", ferplus=labels)
    assert not (tmp_path / "out.h5").exists()
    return labels, str(error.value)


def test_a_labels_file_one_row_short_or_long_is_refused(tmp_path, sample_usages):
    labels, message = _build_with_labels(tmp_path, sample_usages[:-1])
    assert message == (f"{labels} has 699 data rows and {SAMPLE_CSV} 700: data row 700 of "
                       f"{SAMPLE_CSV} has no partner in {labels}; the FER+ labels must match "
                       f"the FER2013 source row for row")
    labels, message = _build_with_labels(tmp_path, sample_usages + ["PublicTest"])
    assert message.startswith(f"{labels} has 701 data rows and {SAMPLE_CSV} 700: data row 701 "
                              f"of {labels} has no partner in {SAMPLE_CSV};")


def test_a_shifted_labels_file_is_refused_at_the_first_row_that_disagrees(tmp_path,
                                                                       sample_usages):
    # Row 100 missing: every later row moves up one, and the first Usage that differs is that
    # of data row 560, the last Training row of the sample.
    labels, message = _build_with_labels(tmp_path, sample_usages[:99] + sample_usages[100:]
                                         + ["PublicTest"])
    assert message == (f"{labels}, data row 560 (line 561): Usage PublicTest, but data row 560 "
                       f"of {SAMPLE_CSV} is Training; the FER+ labels must list the FER2013 "
                       f"rows in the same order")
    shifted = list(sample_usages)
    shifted[4] = "PublicTest"
    labels, message = _build_with_labels(tmp_path, shifted)
    assert message.startswith(f"{labels}, data row 5 (line 6): Usage PublicTest, but data row 5 "
                              f"of {SAMPLE_CSV} is Training;")


def test_the_cli_refuses_misaligned_labels_with_status_2(tmp_path, sample_usages, capsys):
    labels = write_labels(tmp_path / "short.csv", sample_usages[:10])
    assert main([str(SAMPLE_CSV), "--variant", "raw", "--out", str(tmp_path / "o.h5"),
                 "--ferplus", str(labels)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {labels} has 10 data rows and {SAMPLE_CSV} 700: data row "
                            f"11 of {SAMPLE_CSV} has no partner") and error.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    ("", "empty file (expected the FER+ header Usage,Image name,neutral,"),
    ("emotion,pixels,Usage\n0,1 2,Training\n", "line 1: not the FER+ header (expected Usage,"),
    (f"{HEADER}\nTraining,a.png,1,2,3\n",
     "data row 1 (line 2): expected 12 comma-separated fields, found 5"),
    (f"{HEADER}\nTraining,a.png,{','.join(['0'] * 10)}\n\nTrain,b.png,{','.join(['0'] * 10)}\n",
     "data row 2 (line 4): unknown Usage 'Train' (expected Training, PublicTest or "
     "PrivateTest)"),
    (f"{HEADER}\nPrivateTest,,{','.join(['0'] * 9)},x\n",
     "data row 1 (line 2): vote count 'x' is not a whole number 0..255"),
    (f"{HEADER}\nTraining,a.png,{','.join(['0'] * 9)},256\n",
     "data row 1 (line 2): vote count '256' is not a whole number 0..255"),
])
def test_bad_labels_files_are_named_by_row(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(DatasetError) as error:
        read_ferplus(path)
    assert str(error.value).startswith(f"{path}") and message in str(error.value)


def test_a_labels_file_reads_with_crlf_bom_quotes_and_gzip(tmp_path, labels_file):
    import gzip
    plain = read_ferplus(labels_file)
    lines = labels_file.read_text().splitlines()
    variant = "\ufeff" + "\r\n".join(['"' + line.replace(",", '","') + '"' for line in lines])
    (tmp_path / "other.csv.gz").write_bytes(gzip.compress(variant.encode()))
    other = read_ferplus(tmp_path / "other.csv.gz")
    for name in ("usage", "named", "votes", "lines"):
        np.testing.assert_array_equal(getattr(other, name), getattr(plain, name))
    assert plain.votes.dtype == np.uint8 and plain.named.sum() == 700 - 35 - 8  # pattern 12
    with pytest.raises(DatasetError, match=r"nothing.csv: no such FER\+ labels file"):
        read_ferplus(tmp_path / "nothing.csv")


def test_a_folder_source_and_skipped_rows_are_refused_with_ferplus(tmp_path, labels_file,
                                                                   capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    assert main([str(folder), "--variant", "raw", "--out", str(tmp_path / "o.h5"),
                 "--ferplus", str(labels_file)]) == 2
    assert capsys.readouterr().err == (
        f"error: {folder}: a folder of images has no row order, and FER+ labels belong to the "
        f"rows of fer2013.csv by position; pass the Kaggle fer2013.csv (or .csv.gz) the labels "
        f"were made for\n")
    with pytest.raises(DatasetError, match=r"cannot be used with FER\+ labels: leaving rows out "
                                           r"would shift the FER2013 rows"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "o.h5", ferplus=labels_file,
                      skip_bad_rows=True)
    with pytest.raises(DatasetError, match=r"a label mode \(--label-mode\) applies to FER\+ "
                                           r"labels only"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "o.h5", label_mode="majority")
    with pytest.raises(DatasetError, match=r"unknown label mode 'soft' \(choose one of "
                                           r"majority, probability, crossentropy, "
                                           r"multi_target\)"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "o.h5", ferplus=labels_file,
                      label_mode="soft")
    assert not (tmp_path / "o.h5").exists()


# ---------------------------------------------------------------- the CLI and the loaders

def test_cli_builds_and_prints_the_drops(tmp_path, labels_file, capsys):
    out = tmp_path / "ce.h5"
    assert main([str(SAMPLE_CSV), "--variant", "raw", "--out", str(out), "--ferplus",
                 str(labels_file), "--label-mode", "crossentropy"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{out}: raw (1 per image, 48x48), train 350, ")
    # Training: no name 12; 50 % or less 8; more than 3 classes 11, 15; unknown 9; NF 10.
    assert printed[1:] == [
        "Training (crossentropy mode): kept 350 of 560; dropped: 35 no image name, 35 kept "
        "votes <= 50 %, 70 more than 3 classes, 35 top class unknown, 35 top class NF "
        "(not a face)",
        "PublicTest (majority mode, for evaluation): kept 87 of 140; dropped: 8 no image "
        "name, 27 no majority, 9 top class unknown, 9 top class NF (not a face)"]
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert "--ferplus FILE" in usage and "{majority,probability,crossentropy,multi_target}" in usage


@pytest.mark.parametrize("shared", [False, True])
def test_batches_carry_the_targets_of_their_rows(built, shared):
    path = built["crossentropy", "mirror"]
    targets, labels = read_targets(path, "train_noval"), read_votes(path, "train_noval")
    assert targets.dtype == np.float32 and labels.shape == (len(targets), 10)
    with BatchLoader(path, "train_noval", 64, seed=3, shared=shared) as loader:
        order = loader.epoch_order(1)
        for number, batch in enumerate(loader.batches(1)):
            rows = order[number * 64:(number + 1) * 64]
            np.testing.assert_array_equal(np.asarray(batch.targets), targets[rows])
    test_targets = read_targets(path, "test")
    with BatchLoader(path, "test", 50, shuffle=False, drop_remainder=False,
                     shared=shared) as loader:
        last = list(loader.batches(0))[-1]
    assert last.n_valid == HAND_N_TEST - 50
    padded = np.asarray(last.targets)
    np.testing.assert_array_equal(padded[:last.n_valid], test_targets[50:])
    np.testing.assert_array_equal(padded[last.n_valid:], test_targets[[-1] * 13])


def test_shared_and_streamed_targets_are_identical(built):
    path = built["multi_target", "mirror"]
    with BatchLoader(path, "train", 100, seed=2, shared=True) as shared, \
            BatchLoader(path, "train", 100, seed=2, prefetch=0) as streamed:
        for first, second in zip(shared.batches(0), streamed.batches(0)):
            np.testing.assert_array_equal(np.asarray(first.targets).view(np.uint32),
                                          np.asarray(second.targets).view(np.uint32))
            np.testing.assert_array_equal(np.asarray(first.y), np.asarray(second.y))


def test_preview_draws_a_ferplus_file(built, tmp_path):
    import cv2
    # Source 7 is contempt, class 7: only the FER+ class names have it.
    out = preview.preview_grid(built["majority", "mirror"], tmp_path / "grid.png",
                               sources=[0, 7])
    assert cv2.imread(str(out)) is not None


# ---------------------------------------------------------------- the real FER+ labels

needs_shared = pytest.mark.skipif(not (FULL_CSV.exists() and FULL_FERPLUS.exists()),
                                  reason="the shared FER2013 and FER+ files are not here")


@needs_shared
def test_full_ferplus_majority_keeps_the_published_counts(tmp_path):
    out = build_dataset(FULL_CSV, "raw", tmp_path / "ferplus.h5", ferplus=FULL_FERPLUS)
    info = dataset_info(out)
    assert info["split_sizes"]["train"] == 25060 and info["split_sizes"]["test"] == 3199
    training_labels = h5py.File(out, "r")["train/labels"][...]
    assert np.bincount(training_labels, minlength=8).tolist() == \
        [8740, 7287, 3149, 3014, 2100, 119, 532, 119]


@needs_shared
def test_full_ferplus_every_mode_matches_ferplus_code():
    with open(FULL_FERPLUS, newline="") as file:
        rows = list(csv.reader(file))[1:]
    table = np.array([[int(count) for count in row[2:]] for row in rows], np.uint8)
    named = np.array([bool(row[1].strip()) for row in rows])
    for mode in MODES:
        result = apply_mode(table, named, mode)
        _assert_matches_ferplus(table[named], _subset(result, named), mode)
        assert not result.kept[~named].any()


def _subset(result, rows):
    return type(result)(result.targets[rows], result.labels[rows], result.reasons[rows])
