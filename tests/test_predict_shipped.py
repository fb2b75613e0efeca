"""The shipped models by name (--model fast), the views each is used with (--views), and the
prediction benchmark's accuracy through the app."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loaders.sample import SAMPLE_CSV
from loaders.sources import CLASS_NAMES, read_csv
from launcher_support import PROJECT
from predict_support import read_rows, run, variant_model, write_png
from utils.predict import EmotionModel, PredictError
from utils.predict.benchmark import test_accuracy as app_accuracy
from utils.predict.benchmark import write_test_folder
from utils.models import model_io
from utils.predict.shipped import SHIPPED, ShippedModel, model_path, views_for
from utils.support import compile_cache


@pytest.fixture(name="crops")
def crops_fixture(tmp_path):
    faces = read_csv(SAMPLE_CSV).images[:6]
    for index, face in enumerate(faces):
        write_png(tmp_path / "crops" / f"face{index}.png", face)
    return tmp_path / "crops", faces


@pytest.fixture(name="fast_model")
def fast_model_fixture(tmp_path, monkeypatch):
    """The shipped name 'fast' pointing at a small model of ten test-time views (mirror variant,
    network S, random weights), as the shipped fast model is one of ten views used on one."""
    path = Path(variant_model(tmp_path, "crop5", 44))
    monkeypatch.setitem(SHIPPED, "fast", ShippedModel(path, "plain"))
    return path


def test_each_run_takes_the_views_of_the_shipped_models_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert views_for(None, None) == "model"  # the default model: its ten-crop
    assert views_for([Path("fast")], None) == "plain"
    assert views_for([Path("fast"), Path("default")], None) == "model"
    assert views_for([Path("fast")], "model") == "model"  # --views wins
    assert views_for([Path("runs/x")], None) == "model"
    (tmp_path / "fast").mkdir()  # a folder of that name here is a path, not the shipped model
    assert views_for([Path("fast")], None) == "model"
    assert model_path(Path("fast")) == Path("fast")


def test_a_shipped_name_is_its_file_and_a_missing_one_is_refused_in_a_sentence(
        tmp_path, monkeypatch, fast_model):
    monkeypatch.chdir(tmp_path)
    assert model_path(Path("fast")) == fast_model
    assert model_path(Path("other.msgpack")) == Path("other.msgpack")  # the loader names it
    monkeypatch.setitem(SHIPPED, "fast", ShippedModel(tmp_path / "gone" / "model.msgpack",
                                                      "plain"))
    with pytest.raises(PredictError, match=r"^--model fast: the shipped fast model is not in "
                                           r"this copy of the project \(.*gone/model.msgpack is "
                                           r"missing\); restore it"):
        model_path(Path("fast"))


def test_model_fast_classifies_its_plain_view_unless_told_otherwise(tmp_path, capsys, crops,
                                                                     fast_model):
    folder, faces = crops
    model = EmotionModel(fast_model)
    code, printed, errors = run(capsys, folder, "--no-detect", "--model", "fast", "--out",
                                tmp_path / "plain")
    assert code == 0, errors
    assert f"model {fast_model} (network S" in printed and "; plain view only" in printed
    rows = read_rows(tmp_path / "plain" / "faces.csv")
    plain = model.probabilities(faces, augment=False)
    np.testing.assert_allclose([[float(row[f"p_{name}"]) for name in CLASS_NAMES]
                                for row in rows], plain, atol=1e-6)
    code, printed, errors = run(capsys, folder, "--no-detect", "--model", "fast", "--views",
                                "model", "--out", tmp_path / "views")
    assert code == 0, errors
    assert "outputs averaged over 10 test-time views" in printed
    every = model.probabilities(faces, augment=True)
    assert np.abs(every - plain).max() > 1e-4  # the two choices differ on these faces
    np.testing.assert_allclose([[float(row[f"p_{name}"]) for name in CLASS_NAMES] for row in
                                read_rows(tmp_path / "views" / "faces.csv")], every, atol=1e-6)


def test_no_augment_is_views_plain_and_contradicting_it_is_refused(tmp_path, capsys, crops,
                                                                   fast_model):
    folder, _ = crops
    outputs = []
    for name, option in (("a", ["--views", "plain"]), ("b", ["--no-augment"])):
        code, printed, _ = run(capsys, folder, "--no-detect", "--model", fast_model, *option,
                               "--out", tmp_path / name)
        assert code == 0 and "; plain view only" in printed
        outputs.append(read_rows(tmp_path / name / "faces.csv"))
    assert outputs[0] == outputs[1]
    with pytest.raises(SystemExit) as stopped:
        run(capsys, folder, "--no-augment", "--views", "model")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: --no-augment is --views plain: give one of them")


def test_the_benchmark_scores_the_apps_labels_against_the_test_folders_classes(tmp_path):
    n = write_test_folder(tmp_path / "test", SAMPLE_CSV, list(CLASS_NAMES))
    data = read_csv(SAMPLE_CSV)
    assert n == (data.usage == "PublicTest").sum() == 140
    files = sorted((tmp_path / "test").rglob("*.png"))
    assert len(files) == n and {f.parent.name for f in files} == set(CLASS_NAMES)
    # faces.csv as the app writes it: right on every third face, wrong elsewhere
    rows = ["source,label"]
    for index, file in enumerate(files):
        truth = file.parent.name
        label = truth if index % 3 == 0 else next(c for c in CLASS_NAMES if c != truth)
        rows.append(f"{file.relative_to(tmp_path / 'test').as_posix()},{label}")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    assert app_accuracy(tmp_path / "faces.csv") == {"PublicTest": (-(-n // 3), n)}


def test_the_compilation_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_folder() == tmp_path / "xdg" / "fer-jax" / "compiled"
    monkeypatch.setenv("FER_JAX_CACHE", str(tmp_path / "mine"))
    assert compile_cache.cache_folder() == tmp_path / "mine"
    monkeypatch.setenv("FER_JAX_CACHE", "0")
    assert compile_cache.cache_folder() is None and compile_cache.enable() is None


def test_a_second_run_loads_its_compiled_network_from_the_cache(tmp_path, crops, fast_model):
    folder, _ = crops
    environment = dict(os.environ, FER_JAX_CACHE=str(tmp_path / "cache"))

    def predict(out):
        done = subprocess.run([sys.executable, "-m", "utils.predict", str(folder), "--no-detect",
                               "--model", str(fast_model), "--views", "plain", "--out",
                               str(tmp_path / out)], cwd=PROJECT, env=environment,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        # The summary reaches a pipe whole (the process ends with os._exit after flushing it).
        assert done.stdout.splitlines()[-1].startswith(f"outputs in {tmp_path / out}: ")
        return sorted(p.name for p in (tmp_path / "cache").iterdir())

    first = predict("first")
    assert first  # the run's compilations were written
    assert predict("second") == first  # and read back: nothing compiled afresh
    assert read_rows(tmp_path / "first" / "faces.csv") == read_rows(
        tmp_path / "second" / "faces.csv")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_model_is_in_the_repository_whole_with_its_reported_figures(name):
    """`--model NAME` works in a fresh clone: the file is there, passes its checksum, and is the
    model its results.json reports (a model replaced without its figures would fail here)."""
    path = SHIPPED[name].path
    header, _ = model_io.load(path, model_io.MODEL_FORMAT)  # checksums verified
    reported = json.loads((path.parent / "results.json").read_text())
    for key in ("test_error_PublicTest", "aug_test_error_PublicTest"):
        assert header["results"][key] == reported["results"][key]
    assert header["network"] == reported["config"]["network"]
    assert model_path(Path(name)) == path
