"""The preview grid, the built-in sample and the build benchmark."""
import gzip

import cv2
import numpy as np
import pytest

from loaders import bench_build, preview, sample
from loaders.build_dataset import build_dataset
from loaders.hdf5 import dataset_info
from loaders.sources import DatasetError, read_csv
from loaders_testdata import SAMPLE_CSV


def test_committed_sample_is_small_real_and_complete():
    assert SAMPLE_CSV.stat().st_size <= 2_000_000
    data = read_csv(SAMPLE_CSV)
    for usage in ("Training", "PublicTest"):
        assert (np.bincount(data.labels[data.usage == usage], minlength=7) > 0).all()


def test_the_extended_sample_adds_new_images_of_every_class_within_4_mb():
    assert SAMPLE_CSV.stat().st_size + sample.MORE_CSV.stat().st_size <= 4_100_000
    more, first = read_csv(sample.MORE_CSV), read_csv(SAMPLE_CSV)
    assert more.kind == "csv.bz2"
    for usage, count in (("Training", 140), ("PublicTest", 20)):
        assert np.bincount(more.labels[more.usage == usage], minlength=7).tolist() == [count] * 7
    # No image of the first file again, not even a near copy (checked pair by pair, exactly).
    for image in first.images.astype(np.int32):
        squared = ((more.images.astype(np.int32) - image) ** 2).mean(axis=(1, 2))
        assert np.sqrt(squared.min()) >= sample.COPY_DISTANCE


def test_the_main_job_builds_the_extended_sample(tmp_path):
    path = sample.ensure_sample_dataset("mirror", tmp_path, extended=True)
    assert path == tmp_path / "sample_extended_mirror.h5"
    sizes = dataset_info(path)["split_sizes"]
    assert (sizes["train"], sizes["test"]) == (2 * 7 * 220, 7 * 40)
    assert not list(tmp_path.glob(".sample-*"))  # the joined CSV was temporary
    built_at = path.stat().st_mtime_ns
    assert sample.ensure_sample_dataset("mirror", tmp_path, extended=True) == path
    assert path.stat().st_mtime_ns == built_at


def test_make_sample_is_reproducible_and_a_subset_of_its_source(tmp_path):
    first = sample.make_sample(SAMPLE_CSV, tmp_path / "a.csv.gz", training_per_class=3,
                               test_per_class=2, seed=1)
    second = sample.make_sample(SAMPLE_CSV, tmp_path / "b.csv.gz", training_per_class=3,
                                test_per_class=2, seed=1)
    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes()).startswith(b"emotion,pixels,Usage\n")
    made, source = read_csv(first), read_csv(SAMPLE_CSV)
    assert len(made.images) == 7 * 5
    assert np.bincount(made.labels[made.usage == "Training"], minlength=7).tolist() == [3] * 7
    rows = [np.flatnonzero((source.images == image).all(axis=(1, 2)))[0] for image in made.images]
    assert rows == sorted(rows)  # kept in source order
    np.testing.assert_array_equal(made.labels, source.labels[rows])
    np.testing.assert_array_equal(made.usage, source.usage[rows])


def test_ensure_sample_dataset_builds_once_and_rebuilds_when_stale(tmp_path):
    path = sample.ensure_sample_dataset("crop5", tmp_path)
    assert path == tmp_path / "sample_crop5.h5"
    assert dataset_info(path)["split_sizes"]["train"] == 5600
    built_at = path.stat().st_mtime_ns
    assert sample.ensure_sample_dataset("crop5", tmp_path) == path
    assert path.stat().st_mtime_ns == built_at
    # A file built otherwise (here: with 3 validation sources) is replaced.
    build_dataset(sample.SAMPLE_CSV, "crop5", path, overwrite=True, val_sources=3)
    assert sample.ensure_sample_dataset("crop5", tmp_path) == path
    assert dataset_info(path)["val_sources"] == 59


def test_preview_draws_every_variant_of_the_chosen_sources(tmp_path, capsys):
    dataset = sample.ensure_sample_dataset("variant14", tmp_path)
    out = tmp_path / "grid.png"
    assert preview.main([str(dataset), "--out", str(out), "--count", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    grid = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert grid is not None and grid.shape[1] > grid.shape[0] > 100  # 14 columns, 3 rows
    chosen = preview.preview_grid(dataset, tmp_path / "aug.png", split="test_aug", sources=[0, 139])
    assert cv2.imread(str(chosen)) is not None
    with pytest.raises(DatasetError, match=r"split 'test_aug' has no source image 140"):
        preview.preview_grid(dataset, tmp_path / "x.png", split="test_aug", sources=[140])
    assert preview.main([str(dataset), "--out", str(tmp_path / "x.png"), "--split", "test_aug",
                         "--sources", "999"]) == 2
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_augment_preview_shows_each_image_as_stored_and_augmented(tmp_path, capsys):
    dataset = sample.ensure_sample_dataset("mirror", tmp_path)
    out = tmp_path / "augment.png"
    assert preview.main([str(dataset), "--out", str(out), "--augment", "crop:4,flip,erase:0.5",
                         "--count", "3", "--draws", "4"]) == 0
    grid = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert grid is not None and grid.shape[1] > grid.shape[0]  # 5 columns, 3 rows
    assert preview.main([str(dataset), "--out", str(tmp_path / "x.png"),
                         "--augment", "rotat:10"]) == 2
    assert "unknown part 'rotat' (did you mean 'rotate'?)" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bench_reports_time_speed_and_peak_memory(capsys):
    assert bench_build.main([str(SAMPLE_CSV), "--variants", "mirror"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["variant", "time", "s", "images", "images/s", "output", "MiB",
                                "peak", "MiB", "peak/output", "split", "sizes"]
    fields = lines[2].split()
    assert fields[0] == "mirror" and fields[2] == "1,540"  # 1120 train + 140 test + 280 test_aug
    seconds, peak_mib, ratio = float(fields[1]), float(fields[5]), float(fields[6])
    assert 0 < seconds < 30 and 30 < peak_mib < 2000 and ratio > 1


def test_bench_without_the_full_data(tmp_path, capsys):
    assert bench_build.main([str(tmp_path / "fer2013.csv.gz")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'fer2013.csv.gz'} not found; pass the "
                                       f"full fer2013.csv or fer2013.csv.gz as SOURCE\n")
