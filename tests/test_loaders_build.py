"""Building the HDF5 datasets: sizes, validation split, pixels, sources, failures, the CLI."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from loaders import build_dataset as builder
from loaders.augment import VARIANTS, Variant
from loaders.build_dataset import build_dataset, default_val_sources, main, stratified_validation
from loaders.hdf5 import dataset_info, read_split, read_test_aug_source_index, read_usage
from loaders.sources import DatasetError, read_csv
from loaders_testdata import (FULL_CSV, SAMPLE_CSV, read_everything, sample_lines, write_csv,
                              write_image_folder)

N_VARIANTS = {"raw": 1, "mirror": 2, "crop5": 10, "variant14": 14}
IMAGE_SIDE = {"raw": 48, "mirror": 48, "crop5": 44, "variant14": 42}
# round(thesis count x 560 / 28709) for the sample's 560 Training images.
SAMPLE_VAL_SOURCES = {"raw": 72, "mirror": 72, "crop5": 59, "variant14": 56}


@pytest.fixture(scope="module")
def sample():
    return read_csv(SAMPLE_CSV)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("built")
    return {variant: build_dataset(SAMPLE_CSV, variant, folder / f"{variant}.h5")
            for variant in VARIANTS}


def test_thesis_validation_counts_on_full_fer2013():
    assert {variant: default_val_sources(variant, 28709) for variant in VARIANTS} == \
        {"raw": 3709, "mirror": 3709, "crop5": 3000, "variant14": 2870}
    assert {variant: default_val_sources(variant, 560) for variant in VARIANTS} == \
        SAMPLE_VAL_SOURCES


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_sizes_on_the_sample(built, variant):
    n_variants, n_val = N_VARIANTS[variant], SAMPLE_VAL_SOURCES[variant]
    expected = {"train": 560 * n_variants, "train_noval": (560 - n_val) * n_variants,
                "val": n_val * n_variants, "test": 140}
    if variant != "raw":
        expected["test_aug"] = 140 * n_variants
    info = dataset_info(built[variant])
    assert info["split_sizes"] == expected
    side = IMAGE_SIDE[variant]
    assert info["image_size"] == [side, side] and info["n_variants"] == n_variants
    assert info["val_sources"] == n_val and info["n_training_sources"] == 560
    with h5py.File(built[variant], "r") as file:
        for split in expected:
            assert file[split]["images"].dtype == np.uint8
            assert file[split]["images"].shape == (expected[split], side, side)
            assert file[split]["labels"].dtype == np.int32


def test_attributes_describe_the_build(built, sample):
    info = dataset_info(built["variant14"])
    assert info["class_names"] == ["angry", "disgust", "fear", "happy", "sad", "surprise",
                                   "neutral"]
    assert info["source_name"] == "fer2013_sample.csv.gz" and info["source_kind"] == "csv.gz"
    assert info["source_sha256"] == sample.sha256 and len(info["source_sha256"]) == 64
    assert info["variant"] == "variant14" and info["format_version"] == 1
    assert info["variant_names"] == list(VARIANTS["variant14"].variant_names)
    assert (info["seed"], info["drop_blank"], info["n_bad_rows_skipped"]) == (0, False, 0)
    assert info["val_sources_rule"] == "thesis count scaled"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_validation_sources_never_leak_into_train_noval(built, variant):
    with h5py.File(built[variant], "r") as file:
        noval = file["train_noval/source_index"][...]
        val = file["val/source_index"][...]
        train = file["train/source_index"][...]
        assert not set(noval) & set(val)
        assert set(noval) | set(val) == set(range(560))
        # /train is train_noval then val, and every source has each variant exactly once.
        np.testing.assert_array_equal(train, np.concatenate([noval, val]))
        n_variants = N_VARIANTS[variant]
        per_source = np.sort(file["train/variant_index"][...].reshape(-1, n_variants), axis=1)
        assert (per_source == np.arange(n_variants)).all()
        assert (train.reshape(-1, n_variants) == train[::n_variants, None]).all()


def test_validation_is_class_stratified(built, sample):
    with h5py.File(built["mirror"], "r") as file:
        val_sources = np.unique(file["val/source_index"][...])
    labels = sample.labels[sample.usage == "Training"]
    # 72 of 7 x 80: 10 2/7 per class; the two leftover go to the lowest classes on a tie.
    assert np.bincount(labels[val_sources], minlength=7).tolist() == [11, 11, 10, 10, 10, 10, 10]


def test_stratified_validation_largest_remainder_and_seed():
    labels = np.repeat(np.arange(3), [50, 5, 45]).astype(np.int32)
    chosen = stratified_validation(labels, 10, seed=3)
    # Quotas 5, 0.5, 4.5: floors 5, 0, 4 and the one left over to class 1 (tie, lower class).
    assert np.bincount(labels[chosen], minlength=3).tolist() == [5, 1, 4]
    assert np.array_equal(chosen, np.sort(chosen)) and len(set(chosen)) == 10
    np.testing.assert_array_equal(chosen, stratified_validation(labels, 10, seed=3))
    assert not np.array_equal(chosen, stratified_validation(labels, 10, seed=4))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stored_pixels_are_the_augmented_sources(built, sample, variant):
    training = sample.images[sample.usage == "Training"]
    test = sample.images[sample.usage != "Training"]
    spec = VARIANTS[variant]
    with h5py.File(built[variant], "r") as file:
        for row in (0, 1, 557, len(file["train/labels"]) - 1):
            source = file["train/source_index"][row]
            variant_index = file["train/variant_index"][row]
            expected = spec.augment(training[source:source + 1])[0, variant_index]
            np.testing.assert_array_equal(file["train/images"][row], expected)
            assert file["train/labels"][row] == sample.labels[sample.usage == "Training"][source]
        np.testing.assert_array_equal(file["test/images"][...], spec.test_view(test))
        np.testing.assert_array_equal(file["test/labels"][...],
                                      sample.labels[sample.usage != "Training"])
        if variant != "raw":
            expected = spec.augment(test)
            sources = file["test_aug/source_index"][...]
            variants = file["test_aug/variant_index"][...]
            np.testing.assert_array_equal(file["test_aug/images"][...], expected[sources, variants])
            np.testing.assert_array_equal(file["test_aug/labels"][...],
                                          file["test/labels"][...][sources])


def test_train_noval_and_val_read_as_rows_of_train(built):
    images, labels = read_split(built["crop5"], "train")
    noval_images, noval_labels = read_split(built["crop5"], "train_noval")
    val_images, val_labels = read_split(built["crop5"], "val")
    np.testing.assert_array_equal(np.concatenate([noval_images, val_images]), images)
    np.testing.assert_array_equal(np.concatenate([noval_labels, val_labels]), labels)
    with h5py.File(built["crop5"], "r") as file:
        assert file["val/images"].is_virtual and not file["train/images"].is_virtual


def test_test_usage_and_aug_sources(tmp_path, built):
    header, rows = sample_lines()
    rows = [row.replace("PublicTest", "PrivateTest") if index % 2 else row
            for index, row in enumerate(rows)]
    out = build_dataset(write_csv(tmp_path / "f.csv", header, rows), "mirror", tmp_path / "m.h5")
    usage = read_usage(out)
    assert set(usage) == {"PublicTest", "PrivateTest"} and len(usage) == 140
    aug_usage = read_usage(out, "test_aug")
    sources = read_test_aug_source_index(out)
    np.testing.assert_array_equal(sources, np.repeat(np.arange(140), 2))
    np.testing.assert_array_equal(aug_usage, usage[sources])
    assert (read_usage(built["mirror"]) == "PublicTest").all()


@pytest.mark.parametrize("variant", ["raw", "variant14"])
def test_csv_and_folder_sources_give_identical_datasets(tmp_path, sample, built, variant):
    folder = write_image_folder(tmp_path / "fer2013", sample)
    from_folder = build_dataset(folder, variant, tmp_path / "folder.h5")
    csv_arrays, csv_attributes = read_everything(built[variant])
    folder_arrays, folder_attributes = read_everything(from_folder)
    assert csv_arrays.keys() == folder_arrays.keys()
    for name in csv_arrays:
        np.testing.assert_array_equal(folder_arrays[name], csv_arrays[name], err_msg=name)
    differing = {key for key in csv_attributes if csv_attributes[key] != folder_attributes[key]}
    assert differing == {"/:source_name", "/:source_kind", "/:source_sha256"}
    assert folder_attributes["/:source_kind"] == "folder"


def test_explicit_validation_count_seed_and_none(tmp_path):
    first = build_dataset(SAMPLE_CSV, "raw", tmp_path / "a.h5", val_sources=100, seed=7)
    again = build_dataset(SAMPLE_CSV, "raw", tmp_path / "b.h5", val_sources=100, seed=7)
    other = build_dataset(SAMPLE_CSV, "raw", tmp_path / "c.h5", val_sources=100, seed=8)
    val = {}
    for path in (first, again, other):
        with h5py.File(path, "r") as file:
            val[path] = set(file["val/source_index"][...])
    assert len(val[first]) == 100 and val[first] == val[again] != val[other]
    assert dataset_info(first)["val_sources_rule"] == "given"
    none = build_dataset(SAMPLE_CSV, "mirror", tmp_path / "none.h5", val_sources=0)
    assert dataset_info(none)["split_sizes"] == {"train": 1120, "train_noval": 1120,
                                                 "test": 140, "test_aug": 280}
    with pytest.raises(DatasetError, match=r"val_sources=560 leaves no training sources "
                                           r"\(the source has 560 usable Training images\)"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "all.h5", val_sources=560)
    with pytest.raises(DatasetError, match="val_sources must be a whole number >= 0, got -1"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "neg.h5", val_sources=-1)
    with pytest.raises(DatasetError, match="seed must be a whole number >= 0, got -2"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "neg.h5", seed=-2)


def test_a_source_without_test_images_builds_empty_test_splits(tmp_path, caplog):
    header, rows = sample_lines()
    source = write_csv(tmp_path / "train_only.csv", header, rows[:30])
    out = build_dataset(source, "crop5", tmp_path / "t.h5", val_sources=3)
    assert dataset_info(out)["split_sizes"] == {"train": 300, "train_noval": 270, "val": 30,
                                                "test": 0, "test_aug": 0}
    assert caplog.messages == [f"{source} has no test images (PublicTest or PrivateTest): "
                               f"/test is empty"]
    with pytest.raises(DatasetError, match=r"test_only.csv: no usable Training images"):
        build_dataset(write_csv(tmp_path / "test_only.csv", header, rows[-5:]), "raw",
                      tmp_path / "u.h5")


def test_drop_blank_removes_constant_images_from_training_and_test(tmp_path):
    header, rows = sample_lines()
    blank = " ".join(["0"] * 2304)
    rows[3] = f"{rows[3].split(',')[0]},{blank},Training"
    test_row = next(index for index, row in enumerate(rows) if row.endswith("PublicTest"))
    rows[test_row] = f"{rows[test_row].split(',')[0]},{' '.join(['17'] * 2304)},PublicTest"
    source = write_csv(tmp_path / "blank.csv", header, rows)
    kept = build_dataset(source, "mirror", tmp_path / "kept.h5", val_sources=10)
    dropped = build_dataset(source, "mirror", tmp_path / "dropped.h5", val_sources=10,
                            drop_blank=True)
    assert dataset_info(kept)["split_sizes"]["train"] == 1120
    info = dataset_info(dropped)
    assert info["split_sizes"]["train"] == 1118 and info["split_sizes"]["test"] == 139
    assert (info["n_blank_dropped_training"], info["n_blank_dropped_test"]) == (1, 1)
    # Source indices still count the source's Training images: image 3 is missing.
    assert 3 not in set(h5py.File(dropped, "r")["train/source_index"][...])


@pytest.mark.skipif(not FULL_CSV.exists(), reason="the full shared FER2013 is not here")
def test_full_fer2013_variant14_has_the_thesis_sizes(tmp_path):
    info = dataset_info(build_dataset(FULL_CSV, "variant14", tmp_path / "v14.h5"))
    assert info["split_sizes"] == {"train": 401926, "train_noval": 361746, "val": 40180,
                                   "test": 3589, "test_aug": 14 * 3589}


# ---------------------------------------------------------------- failures and the CLI

def test_existing_output_is_refused_unless_overwriting(tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(DatasetError) as error:
        build_dataset(SAMPLE_CSV, "raw", out)
    assert str(error.value) == f"{out}: already exists (--overwrite / overwrite=True replaces it)"
    assert out.read_bytes() == b"keep me"
    build_dataset(SAMPLE_CSV, "raw", out, overwrite=True)
    assert dataset_info(out)["variant"] == "raw"


def test_unwritable_outputs(tmp_path):
    with pytest.raises(DatasetError) as error:
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "no" / "d.h5")
    assert str(error.value) == (f"{tmp_path / 'no' / 'd.h5'}: cannot write, the folder "
                                f"{tmp_path / 'no'} does not exist")
    with pytest.raises(DatasetError, match="is a folder, not an output file name"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match="cannot write, the folder .* does not exist"):
        build_dataset(SAMPLE_CSV, "raw", tmp_path / "file" / "d.h5")


def _assert_nothing_written(folder, before):
    assert sorted(path.name for path in folder.iterdir()) == before


def test_bad_input_leaves_no_output_nor_temporary_file(tmp_path):
    header, rows = sample_lines()
    source = write_csv(tmp_path / "bad.csv", header, rows[:5] + ["3,1 2 3,Training"])
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(DatasetError, match=r"bad.csv, line 7: expected 2304 pixel values, found 3"):
        build_dataset(source, "crop5", tmp_path / "out.h5")
    _assert_nothing_written(tmp_path, before)


def test_interrupted_or_failing_write_leaves_no_file(tmp_path, monkeypatch):
    before = sorted(path.name for path in tmp_path.iterdir())
    calls = []

    def interrupt_second_block(variant, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_augment(variant, images)

    real_augment = Variant.augment
    monkeypatch.setattr(builder, "BLOCK_SOURCES", 100)
    monkeypatch.setattr(Variant, "augment", interrupt_second_block)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(SAMPLE_CSV, "variant14", tmp_path / "out.h5")
    assert calls == [100, 100]
    _assert_nothing_written(tmp_path, before)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(builder.hdf5, "create_view_split", disk_full)
    with pytest.raises(DatasetError, match=r"out.h5: cannot write \(\[Errno 28\] No space left"):
        build_dataset(SAMPLE_CSV, "mirror", tmp_path / "out.h5")
    _assert_nothing_written(tmp_path, before)


def test_cli_builds_and_summarises(tmp_path, capsys):
    out = tmp_path / "m.h5"
    assert main([str(SAMPLE_CSV), "--variant", "mirror", "--out", str(out), "--val-sources", "20",
                 "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: mirror (2 per image, 48x48), train 1,120, "
                              f"train_noval 1,080, val 40, test 140, test_aug 280; "
                              f"20 validation sources; ")
    assert dataset_info(out)["seed"] == 3


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, caplog):
    header, rows = sample_lines()
    source = write_csv(tmp_path / "bad.csv", header,
                       rows[:3] + ["8" + rows[3][1:]] + rows[4:6] + rows[-1:])
    out = tmp_path / "out.h5"
    assert main([str(source), "--variant", "raw", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {source}, line 5: emotion '8' is not a class "
                                       f"number 0..6 (--skip-bad-rows / skip_bad_rows=True "
                                       f"leaves them out)\n")
    assert not out.exists()
    assert main([str(source), "--variant", "raw", "--out", str(out), "--skip-bad-rows",
                 "--val-sources", "1"]) == 0
    assert caplog.messages == [f"skipped 1 bad rows or images; the first: {source}, line 5: "
                               f"emotion '8' is not a class number 0..6"]
    assert dataset_info(out)["n_bad_rows_skipped"] == 1
    assert dataset_info(out)["split_sizes"]["train"] == 5
    assert main([str(source), "--variant", "raw", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_as_a_process(tmp_path):
    def run(source, *options):
        return subprocess.run([sys.executable, "-m", "loaders.build_dataset", str(source),
                               "--variant", "raw", "--out", str(tmp_path / "x.h5"), *options],
                              capture_output=True, text=True)

    result = run(tmp_path / "x.csv")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'x.csv'}: no such file or folder\n"
    header, rows = sample_lines()
    source = write_csv(tmp_path / "bad.csv", header, rows[:4] + [rows[4][:-30]] + rows[-1:])
    result = run(source, "--skip-bad-rows", "--quiet")
    assert result.returncode == 0
    assert result.stderr == (f"warning: skipped 1 bad rows or images; the first: {source}, "
                             f"line 6: expected 3 comma-separated fields, found 2\n")
