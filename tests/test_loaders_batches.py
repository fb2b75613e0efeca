"""Mini-batch loading: shared (device) and streamed (read-ahead) modes, padding, process shares."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loaders.batches import (Batch, BatchLoader, dataset_info, read_split,
                             read_test_aug_source_index, read_usage, scale_pixels)
from loaders.build_dataset import build_dataset
from loaders_testdata import SAMPLE_CSV


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(SAMPLE_CSV, "mirror", tmp_path_factory.mktemp("batches") / "mirror.h5")


def _collect(loader, epoch, start_batch=0):
    return [(np.asarray(batch.x), np.asarray(batch.y), batch.n_valid)
            for batch in loader.batches(epoch, start_batch)]


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x1, y1, n1), (x2, y2, n2) in zip(first, second):
        assert x1.dtype == x2.dtype == np.float32
        np.testing.assert_array_equal(x1.view(np.uint32), x2.view(np.uint32))  # bit for bit
        np.testing.assert_array_equal(y1, y2)
        assert n1 == n2


def test_scale_pixels_is_bit_identical_in_numpy_and_xla():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    by_numpy = scale_pixels(values)
    by_xla = np.asarray(jax.jit(scale_pixels)(jnp.asarray(values)))
    assert by_numpy.shape == by_xla.shape == (16, 16, 1) and by_numpy.dtype == np.float32
    np.testing.assert_array_equal(by_numpy.view(np.uint32), by_xla.view(np.uint32))
    assert by_numpy[0, 0, 0] == 0 and by_numpy[-1, -1, 0] == 1
    np.testing.assert_allclose(by_numpy[..., 0], values / 255, rtol=1e-7)


def test_shared_and_streamed_batches_are_identical(dataset):
    with BatchLoader(dataset, "train", 100, seed=5, shared=True) as shared, \
            BatchLoader(dataset, "train", 100, seed=5) as streamed, \
            BatchLoader(dataset, "train", 100, seed=5, prefetch=0) as direct:
        for epoch in (0, 1):
            expected = _collect(shared, epoch)
            _assert_same_batches(_collect(streamed, epoch), expected)
            _assert_same_batches(_collect(direct, epoch), expected)


def test_batches_follow_the_epoch_order(dataset):
    images, labels = read_split(dataset, "train_noval")
    with BatchLoader(dataset, "train_noval", 64, seed=1) as loader:
        assert (loader.n_examples, loader.n_batches, loader.image_shape) == (976, 15, (48, 48))
        order = loader.epoch_order(3)
        assert sorted(order) == list(range(976))
        batches = _collect(loader, 3)
    assert len(batches) == 15
    for number, (x, y, n_valid) in enumerate(batches):
        rows = order[number * 64:(number + 1) * 64]
        assert x.shape == (64, 48, 48, 1) and n_valid == 64
        np.testing.assert_array_equal(x, scale_pixels(images[rows]))
        np.testing.assert_array_equal(y, labels[rows])


def test_epoch_order_is_reproducible_and_differs_between_epochs(dataset):
    with BatchLoader(dataset, "train", 10, seed=2) as loader, \
            BatchLoader(dataset, "train", 10, seed=2) as again, \
            BatchLoader(dataset, "train", 10, seed=3) as other, \
            BatchLoader(dataset, "train", 10, shuffle=False) as ordered:
        np.testing.assert_array_equal(loader.epoch_order(4), again.epoch_order(4))
        np.testing.assert_array_equal(loader.epoch_order(4),
                                      np.random.default_rng([2, 4]).permutation(1120))
        assert not np.array_equal(loader.epoch_order(4), loader.epoch_order(5))
        assert not np.array_equal(loader.epoch_order(4), other.epoch_order(4))
        np.testing.assert_array_equal(ordered.epoch_order(9), np.arange(1120))


def test_resuming_mid_epoch_yields_the_remaining_batches(dataset):
    with BatchLoader(dataset, "val", 32, seed=4) as loader:
        whole = _collect(loader, 2)
        _assert_same_batches(_collect(loader, 2, start_batch=3), whole[3:])
        assert _collect(loader, 2, start_batch=loader.n_batches) == []
        with pytest.raises(ValueError, match=r"start_batch=5 must be in 0..4"):
            loader.batches(0, 5)


@pytest.mark.parametrize("shared", [False, True])
def test_evaluation_pads_the_last_batch(dataset, shared):
    images, labels = read_split(dataset, "test")  # 140 images
    with BatchLoader(dataset, "test", 64, shuffle=False, drop_remainder=False,
                     shared=shared) as loader:
        assert loader.n_batches == 3
        batches = _collect(loader, 0)
    assert [n_valid for _, _, n_valid in batches] == [64, 64, 12]
    x, y, _ = batches[-1]
    assert x.shape == (64, 48, 48, 1) and y.shape == (64,)
    np.testing.assert_array_equal(x[:12], scale_pixels(images[128:]))
    np.testing.assert_array_equal(y[:12], labels[128:])
    # Padding repeats the last real row.
    np.testing.assert_array_equal(x[12:], np.broadcast_to(x[11], (52, 48, 48, 1)))
    np.testing.assert_array_equal(y[12:], np.full(52, labels[139]))


def test_training_drops_the_remainder(dataset):
    with BatchLoader(dataset, "test", 64, seed=0) as loader:
        batches = _collect(loader, 0)
    assert loader.n_batches == 2 and [n for _, _, n in batches] == [64, 64]


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_shares_make_up_the_global_batch(dataset, drop_remainder):
    options = dict(seed=7, drop_remainder=drop_remainder)
    with BatchLoader(dataset, "test", 48, **options) as whole, \
            BatchLoader(dataset, "test", 48, process_index=0, process_count=2,
                        **options) as first, \
            BatchLoader(dataset, "test", 48, process_index=1, process_count=2,
                        **options) as second:
        for global_batch, share0, share1 in zip(_collect(whole, 1), _collect(first, 1),
                                                _collect(second, 1)):
            assert share0[0].shape == (24, 48, 48, 1)
            np.testing.assert_array_equal(np.concatenate([share0[0], share1[0]]), global_batch[0])
            np.testing.assert_array_equal(np.concatenate([share0[1], share1[1]]), global_batch[1])
            assert share0[2] + share1[2] == global_batch[2]
        last = (_collect(first, 1)[-1][2], _collect(second, 1)[-1][2])
    # 140 = 2 x 48 + 44: the last global batch has 44 real rows, 24 + 20 of them.
    assert last == ((24, 24) if drop_remainder else (24, 20))


def test_a_sharding_gives_global_arrays(dataset):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with BatchLoader(dataset, "test", 64, shuffle=False, drop_remainder=False,
                     sharding=sharding) as loader:
        batch = list(loader.batches(0))[-1]
    assert isinstance(batch, Batch) and batch.x.sharding == sharding and batch.n_valid == 12


def test_data_parallel_sharding_over_two_devices(dataset):
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        from loaders.batches import BatchLoader
        assert len(jax.devices()) == 2
        path = {str(dataset)!r}
        sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
        for shared in (False, True):
            with BatchLoader(path, "train", 32, seed=1, shared=shared,
                             sharding=sharding) as sharded, \\
                    BatchLoader(path, "train", 32, seed=1) as plain:
                for a, b in zip(sharded.batches(0), plain.batches(0)):
                    assert a.x.sharding == sharding and len(a.x.addressable_shards) == 2
                    assert a.x.addressable_shards[1].data.shape == (16, 48, 48, 1)
                    assert np.array_equal(np.asarray(a.x), np.asarray(b.x))
                    assert np.array_equal(np.asarray(a.y), np.asarray(b.y))
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**__import__("os").environ,
                                 "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                                 "JAX_PLATFORMS": "cpu"})
    assert result.stdout.strip() == "ok", result.stderr


def test_stopping_early_and_reusing_the_loader(dataset):
    with BatchLoader(dataset, "train", 20, seed=0, prefetch=1) as loader:
        for number, _ in enumerate(loader.batches(0)):
            if number == 2:
                break
        again = _collect(loader, 0)
        assert len(again) == 56


def test_argument_and_file_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=150 is larger than split 'test' of .*"
                                         r"mirror.h5 \(140 images\): drop_remainder=True would "
                                         r"yield no batch"):
        BatchLoader(dataset, "test", 150)
    assert BatchLoader(dataset, "test", 150, drop_remainder=False).n_batches == 1
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        BatchLoader(dataset, "test", 0)
    with pytest.raises(ValueError, match=r"batch_size=25 must be a multiple of process_count=2"):
        BatchLoader(dataset, "test", 25, process_count=2)
    with pytest.raises(ValueError, match=r"process_index=2 must be in 0..1"):
        BatchLoader(dataset, "test", 24, process_index=2, process_count=2)
    with pytest.raises(ValueError, match=r"mirror.h5: no split 'validation' \(this file has "
                                         r"train, train_noval, val, test, test_aug\)"):
        BatchLoader(dataset, "validation", 10)
    with pytest.raises(ValueError, match=r"nothing.h5: no such dataset file"):
        BatchLoader(tmp_path / "nothing.h5", "train", 10)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"text.h5: not a readable HDF5 dataset file"):
        BatchLoader(tmp_path / "text.h5", "train", 10)


def test_read_helpers(dataset):
    info = dataset_info(dataset)
    assert info["variant"] == "mirror" and info["split_sizes"]["test_aug"] == 280
    assert list(read_usage(dataset)) == ["PublicTest"] * 140
    np.testing.assert_array_equal(read_test_aug_source_index(dataset), np.repeat(np.arange(140), 2))
    images, labels = read_split(dataset, "val")
    assert images.shape == (144, 48, 48) and labels.dtype == np.int32
