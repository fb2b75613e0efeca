"""python -m utils.evaluate: the launcher's own figures, CSV and dataset files alike, per split,
ensembles, and the refusals."""
import json

import numpy as np
import pytest
from launcher_support import build_public_private_dataset, quick_config

import run_experiment as launcher
from loaders.sample import SAMPLE_CSV, ensure_sample_dataset
from utils import evaluate


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    """A model trained with online crops and flips (ten views on the mirror variant: image and
    mirror, each in 5 windows), and the launcher's results."""
    folder = tmp_path_factory.mktemp("trained")
    results = launcher.run_experiment(**quick_config(folder, sample, val=False, n_epochs=1,
                                                     anneal_epochs=0, augment="crop:2,flip"))
    return folder / "run", results


def test_plain_and_view_accuracies_are_the_launchers(trained, sample):
    model, results = trained
    result = evaluate.evaluate([model], sample)
    row = result["models"][0]
    assert row["n_views"] == 10
    assert row["plain"]["all"] == pytest.approx(1 - results["test_error"])
    assert row["views"]["all"] == pytest.approx(1 - results["aug_test_error"])
    assert row["plain"]["PrivateTest"] is None and result["ensemble"] is None
    assert np.asarray(result["confusion"]).sum() == result["n_test"] == 140


def test_an_ensemble_of_two_copies_of_a_model_is_the_model(trained, sample):
    model, _ = trained
    single = evaluate.evaluate([model], sample)
    double = evaluate.evaluate([model, model], sample)
    assert double["ensemble"]["plain"] == single["models"][0]["plain"]
    assert double["ensemble"]["views"] == single["models"][0]["views"]
    assert double["confusion"] == single["confusion"]


def test_a_csv_gives_what_the_dataset_file_gives(trained, sample):
    model, _ = trained
    from_file = evaluate.evaluate([model], sample)["models"][0]
    from_csv = evaluate.evaluate([model], SAMPLE_CSV)["models"][0]
    assert from_csv["plain"] == from_file["plain"]
    assert from_csv["views"] == from_file["views"]


def test_public_and_private_test_are_reported_apart(trained, tmp_path):
    model, _ = trained
    dataset = build_public_private_dataset(tmp_path)
    result = evaluate.evaluate([model], dataset)
    assert result["n_per_split"] == {"PublicTest": 70, "PrivateTest": 70}
    plain = result["models"][0]["plain"]
    assert plain["all"] == pytest.approx((plain["PublicTest"] + plain["PrivateTest"]) / 2)


def test_the_command_prints_the_table_and_writes_its_files(trained, sample, tmp_path, capsys):
    model, results = trained
    assert evaluate.main([str(model), str(model), "--dataset", str(sample),
                          "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * (1 - results['test_error']):6.2f} %" in printed
    assert "ensemble of 2 (mean of softmax)" in printed
    assert (tmp_path / "out" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["models"][0]["plain"]["all"] == pytest.approx(1 - results["test_error"])


@pytest.mark.parametrize("change,message", [
    ({"dataset": "missing.h5"}, "missing.h5: no such dataset file"),
    ({"model": "nowhere"}, "nowhere: no such file"),
])
def test_bad_inputs_get_one_sentence(trained, sample, tmp_path, capsys, change, message):
    model, _ = trained
    arguments = [change.get("model", str(model)), "--dataset",
                 str(tmp_path / change["dataset"]) if "dataset" in change else str(sample),
                 "--out", str(tmp_path / "out")]
    assert evaluate.main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error


def test_a_model_of_other_classes_or_sizes_is_refused(trained, tmp_path, capsys):
    model, _ = trained
    crop5 = ensure_sample_dataset("crop5", folder=tmp_path)
    assert evaluate.main([str(model), "--dataset", str(crop5), "--out", str(tmp_path)]) == 2
    assert "takes 48x48 images (its mirror variant), got 44x44" in capsys.readouterr().err
