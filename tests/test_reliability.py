"""Nothing lost: one run per folder, verified checkpoints and models, resume that checks the
data, a full disk. Each test replays a probe of the issue that used to end in silent damage
(exit 0, wrong results) and checks that it is now refused with a sentence, or resumes bit
for bit to what an uninterrupted run gives.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization
from launcher_support import PROJECT, quick_config, sabotage_train_step
from test_resume import sample  # noqa: F401 - the module-scoped built-in sample fixture
from test_resume import assert_same_run, command, environment, final_model

import run_experiment as launcher
from loaders.build_dataset import build_dataset
from loaders.sample import SAMPLE_CSV, ensure_sample_dataset
from utils.experiments import experiment as run
from utils.models import model_io
from utils.support import safe_files
from utils.experiments.keywords import resolve
from utils.experiments.run_folder import RunFolderError, check_same_dataset, check_same_definition


@pytest.fixture(scope="module")
def reference(sample, tmp_path_factory):
    """The uninterrupted run every interrupted one must end as: (results, leaves)."""
    folder = tmp_path_factory.mktemp("reference")
    launcher.run_experiment(**quick_config(folder, sample))
    return final_model(folder / "run")


def arguments(config: dict) -> list[str]:
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]


def stopped_run(config: dict, stop_after: int = 25) -> Path:
    """Run ``config`` and stop it as Ctrl-C would after ``stop_after`` training steps (epoch 2
    of the search, batch 6: checkpoint.msgpack there, checkpoint.previous.msgpack at the end
    of epoch 1). Returns the run folder."""
    experiment = run.Experiment(resolve(config))

    def request_stop(real_train, *arguments):
        experiment.stop.requested = "SIGINT"
        return real_train(*arguments)

    sabotage_train_step(experiment, stop_after, request_stop)
    with pytest.raises(run.RunStopped):
        experiment.run()
    return Path(config["savename"])


def flip_bytes(path: Path, n: int = 64, start: int = 200) -> bytes:
    """Flip n bytes from ``start`` on (past the file's small outer map: in what it holds)."""
    data = bytearray(path.read_bytes())
    for position in start + np.random.default_rng(0).choice(len(data) - start, n,
                                                             replace=False):
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def registry_rows(config: dict) -> list[dict]:
    return list(csv.DictReader(open(config["registry"])))


# ---- one run per folder --------------------------------------------------------------------
def test_a_second_launcher_into_a_running_folder_is_refused_and_a_killed_ones_lock_cleared(
        sample, tmp_path, reference, capsys):
    config = quick_config(tmp_path, sample)
    first = subprocess.Popen(command(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=environment(), cwd=PROJECT)
    try:
        for line in first.stdout:  # the folder is claimed before the first epoch starts
            if line.startswith("epoch 1,"):
                break
        assert launcher.main(arguments(config)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / 'run'} is in use by process {first.pid} on "
                              f"host ") and "Traceback" not in err
        assert err.endswith(": two runs cannot share a run folder; wait for that run to end or "
                            "stop it, or give this one another savename\n")
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
        first.wait()
    assert (tmp_path / "run" / ".run.lock").exists()
    assert launcher.main(arguments({**config, "resume": True})) == 0
    out = capsys.readouterr().out
    assert f"note: {tmp_path / 'run'} was left locked by process {first.pid} on host " in out
    assert_same_run(final_model(tmp_path / "run"), reference)
    assert len(registry_rows(config)) == 1 and not (tmp_path / "run" / ".run.lock").exists()


# ---- checksums -----------------------------------------------------------------------------
def test_a_damaged_checkpoint_is_refused_kept_and_the_previous_one_resumes(sample, tmp_path,
                                                                          reference, capsys):
    config = quick_config(tmp_path, sample)
    folder = stopped_run(config)
    checkpoint, previous = folder / "checkpoint.msgpack", folder / "checkpoint.previous.msgpack"
    damaged = flip_bytes(checkpoint)
    assert launcher.main(arguments({**config, "resume": True})) == 2
    assert capsys.readouterr().err == (
        f"error: {checkpoint}: damaged: its contents do not match the checksum saved with it (a "
        f"bad disk block, an interrupted copy or an edit), so it is not used and is left as it "
        f"is; the previous checkpoint {previous} is intact (saved after search epoch 1): move "
        f"the damaged one aside (mv {checkpoint} {checkpoint}.damaged) and resume=True goes on "
        f"from the previous one\n")
    assert checkpoint.read_bytes() == damaged  # never deleted, never rewritten
    checkpoint.rename(f"{checkpoint}.damaged")  # as the message says
    assert launcher.main(arguments({**config, "resume": True})) == 0
    assert f"note: {folder} has no checkpoint.msgpack; resuming from checkpoint.previous" \
           f".msgpack" in capsys.readouterr().out
    assert_same_run(final_model(folder), reference)
    assert Path(f"{checkpoint}.damaged").read_bytes() == damaged


def test_damaged_models_are_refused_by_every_loader_and_kept(sample, tmp_path, capsys):
    config = quick_config(tmp_path, sample, val=True, n_epochs=1, anneal_epochs=0)
    launcher.run_experiment(**config)
    model, point = tmp_path / "run" / "model.msgpack", tmp_path / "run" / "entropy_point.msgpack"
    damaged = {path: flip_bytes(path) for path in (model, point)}
    with pytest.raises(model_io.DamagedFile, match=rf"^{model}: damaged: its contents do not "
                                                   r"match the checksum .* left as it is; "
                                                   r"restore it from a copy or train it again$"):
        model_io.load_model(model)  # what utils.predict and evaluation load through
    new_run = {**config, "savename": str(tmp_path / "next"), "init_from": str(point)}
    assert launcher.main(arguments(new_run)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {point}: damaged: ") and "Traceback" not in err
    assert all(path.read_bytes() == data for path, data in damaged.items())
    assert not (tmp_path / "next").exists()


def test_a_file_without_a_checksum_is_still_read_and_one_that_lost_it_is_refused(tmp_path):
    shipped = PROJECT / "trained_models" / "default" / "model.msgpack"
    before = shipped.read_bytes()
    header, trees = model_io.load(shipped, model_io.MODEL_FORMAT)
    assert shipped.read_bytes() == before  # reading never rewrites
    # The same model as format version 1 wrote it: header and trees in the top-level map.
    version_1 = tmp_path / "version1.msgpack"
    version_1.write_bytes(serialization.msgpack_serialize(
        {"format": model_io.MODEL_FORMAT, "format_version": 1,
         "header": json.dumps(header), **trees}))
    loaded = model_io.load_model(version_1)
    assert loaded.network.name == header["network"]
    def by_name(tree):
        leaves = jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(tree))[0]
        return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}

    read, saved = by_name(loaded.params), by_name(trees["params"])
    assert read.keys() == saved.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(read[name], value)
    path = tmp_path / "model.msgpack"
    model_io.save(path, model_io.MODEL_FORMAT, {"config": {}}, {"params": {"w": np.ones(3)}})
    header, trees = model_io.load(path, model_io.MODEL_FORMAT)
    assert header == {"config": {}} and np.array_equal(trees["params"]["w"], np.ones(3))
    saved = path.read_bytes()
    for position in range(len(saved)):  # any byte, the outer map's included
        path.write_bytes(saved[:position] + bytes([saved[position] ^ 0xFF]) +
                         saved[position + 1:])
        with pytest.raises(model_io.ModelFileError, match=f"^{path}: "):
            model_io.load(path, model_io.MODEL_FORMAT)


# ---- the dataset a run resumes on ------------------------------------------------------------
def test_resume_compares_the_datasets_contents_not_its_path(tmp_path, reference, capsys,
                                                             monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    dataset = ensure_sample_dataset("mirror", folder=data)
    original = dataset.read_bytes()
    config = quick_config(tmp_path, dataset)
    checkpoint = stopped_run(config) / "checkpoint.msgpack"
    build_dataset(SAMPLE_CSV, "mirror", dataset, seed=1, overwrite=True)  # same path, other data
    assert launcher.main(arguments({**config, "resume": True})) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dataset} is not the dataset {checkpoint} was trained on: "
                          f"labels_sha256 ") and "seed 1 (the run's: 0)" in err
    assert err.endswith("resume with the dataset the run used (the same file, or one built "
                        "with the same options), or start a new run\n")
    # The same data by a relative path, and the run folder moved: both are fine.
    dataset.write_bytes(original)
    moved = tmp_path / "moved" / "run"
    shutil.move(tmp_path / "run", moved)
    monkeypatch.chdir(data)
    assert launcher.main(arguments({**config, "dataset": dataset.name, "savename": str(moved),
                                    "resume": True})) == 0
    assert_same_run(final_model(moved), reference)


def test_a_checkpoint_without_the_datasets_identity_compares_its_path(tmp_path, monkeypatch):
    dataset = tmp_path / "d.h5"
    dataset.touch()
    monkeypatch.chdir(tmp_path)
    check_same_dataset(Path("ckpt"), None, {}, {"dataset": str(dataset)}, Path("d.h5"))
    with pytest.raises(RunFolderError, match=r"is not the dataset ckpt was trained on: path"):
        check_same_dataset(Path("ckpt"), None, {}, {"dataset": str(dataset)}, Path("e.h5"))


def test_resume_refuses_changed_keywords_and_takes_new_ones_at_their_default():
    saved = {"learning_rate": 0.1, "n_epochs": 3, "dataset": "a.h5"}  # older code: no ema_decay
    check_same_definition(Path("ckpt"), saved, {**saved, "dataset": "b.h5", "ema_decay": 0.0})
    with pytest.raises(RunFolderError, match=r"ckpt was saved by a run with different settings: "
                                             r"ema_decay=0.0 \(now 0.999\), n_epochs=3 \(now 4\)"):
        check_same_definition(Path("ckpt"), saved, {**saved, "n_epochs": 4, "ema_decay": 0.999})


# ---- a full disk ----------------------------------------------------------------------------
def fill_disk_at(monkeypatch, target: str, nth: int) -> None:
    """The nth write of ``target`` (a run file's name) finds the disk full half way."""
    real, seen = safe_files.write_durably, [0]

    def write(path, data):
        if Path(path).name.startswith(f".{target}.tmp"):
            seen[0] += 1
            if seen[0] == nth:
                Path(path).write_bytes(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(safe_files, "write_durably", write)


@pytest.mark.parametrize("target,nth", [("checkpoint.msgpack", 3), ("model.msgpack", 1),
                                        ("experiments.csv", 1)])
def test_a_full_disk_ends_with_a_sentence_and_the_run_resumes_bit_for_bit(
        sample, tmp_path, reference, capsys, monkeypatch, target, nth):
    config = quick_config(tmp_path, sample)
    with monkeypatch.context() as patch:
        fill_disk_at(patch, target, nth)
        assert launcher.main(arguments(config)) == 2
    folder = tmp_path / "run"
    failed = folder / target if target != "experiments.csv" else tmp_path / target
    assert capsys.readouterr().err == (
        f"error: could not write {failed}: No space left on device; the last checkpoint, "
        f"{folder / 'checkpoint.msgpack'}, is intact, and the same command with resume=True "
        f"goes on from it once there is free space\n")
    assert not [p for p in (*folder.iterdir(), *tmp_path.iterdir()) if ".tmp" in p.name]
    assert launcher.main(arguments({**config, "resume": True})) == 0
    assert_same_run(final_model(folder), reference)
    assert len(registry_rows(config)) == 1
