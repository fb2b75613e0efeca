"""Training on FER+ labels: soft targets learned as distributions, the launcher on an 8-class
dataset, and evaluation and predict on the model it makes."""
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from launcher_support import quick_config
from loaders_testdata import SAMPLE_CSV, sample_lines

import run_experiment as launcher
from loaders.batches import BatchLoader
from loaders.build_dataset import build_dataset
from loaders.hdf5 import read_split, read_targets
from loaders.ferplus import CLASS_NAMES as FERPLUS_NAMES
from mlp.networks import build_mlp
from utils import evaluate
from utils.models.model_io import load_model
from utils.training.objective import Objective
from utils.training.optim import make_optimizer, make_schedule
from utils.predict import main as predict_main
from utils.training.steps import Steps

# FER2013's classes (angry, disgust, fear, happy, sad, surprise, neutral) in FER+'s order.
FERPLUS_OF_FER2013 = [4, 5, 6, 1, 3, 2, 0]


def test_soft_targets_are_learned_as_distributions():
    # Two kinds of image; each kind's target is a distribution, not a class.
    rng = np.random.default_rng(0)
    kinds = rng.integers(0, 2, size=64)
    x = (rng.normal(0, 0.05, size=(64, 4, 4, 1)) + kinds[:, None, None, None]).astype(np.float32)
    wanted = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    net = build_mlp(im_dim=[4, 4], n_hidden=[8], p_drop=0.0, batch_norm=False, n_classes=2)
    steps = Steps(net, make_optimizer("adam", 0.05), make_schedule("constant", 0.05),
                  objective=Objective(targets="distribution"))
    state = steps.init_state(jax.random.key(0), jax.random.key(1))
    for _ in range(300):
        state, _ = steps.train(state, jnp.asarray(x), jnp.asarray(kinds, jnp.int32),
                               jnp.asarray(wanted[kinds]))
    logits = np.asarray(steps.eval(state.params, state.bn_state, jnp.asarray(x)))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for kind in (0, 1):
        np.testing.assert_allclose(probabilities[kinds == kind].mean(axis=0), wanted[kind],
                                   atol=0.03)


def write_ferplus_labels(path):
    """FER+ votes for the sample's rows: 7 for the FER2013 class, 3 for the next; every 25th
    row contempt, so that every FER+ class occurs."""
    _, rows = sample_lines()
    lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
             "unknown,NF"]
    for index, row in enumerate(rows):
        main = 7 if index % 25 == 0 else FERPLUS_OF_FER2013[int(row.split(",", 1)[0])]
        votes = [0] * 10
        votes[main], votes[(main + 1) % 8] = 7, 3
        lines.append(f"{row.rsplit(',', 1)[1]},fer{index:07d}.png," + ",".join(map(str, votes)))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ferplus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ferplus_run")
    dataset = build_dataset(SAMPLE_CSV, "mirror", folder / "ferplus.h5",
                            ferplus=write_ferplus_labels(folder / "labels.csv"),
                            label_mode="crossentropy")
    results = launcher.run_experiment(**quick_config(folder, dataset, val=False, n_epochs=1,
                                                     anneal_epochs=0))
    return folder, dataset, results


def test_the_launcher_trains_an_eight_class_model_with_the_datasets_names(ferplus_run):
    folder, _, results = ferplus_run
    assert results["class_names"] == list(FERPLUS_NAMES)
    assert np.asarray(results["confusion"]).shape == (8, 8)
    network, _, _, header = load_model(folder / "run")
    assert header["class_names"][-1] == "contempt" and network.options["n_classes"] == 8
    registry = list(csv.DictReader(open(folder / "experiments.csv")))
    assert "contempt" in registry[0]["class_names"]


def test_evaluation_of_a_ferplus_model_is_the_launchers(ferplus_run):
    folder, dataset, results = ferplus_run
    row = evaluate.evaluate([folder / "run"], dataset)["models"][0]
    assert row["plain"]["all"] == pytest.approx(1 - results["test_error"])
    assert row["views"]["all"] == pytest.approx(1 - results["aug_test_error"])
    with pytest.raises(Exception, match=r"classifies 8 classes .* has 7"):
        evaluate.evaluate([folder / "run"], SAMPLE_CSV)


def test_predict_names_the_ferplus_classes(ferplus_run, tmp_path, capsys):
    folder, _, _ = ferplus_run
    import cv2

    from loaders.sources import read_csv
    crops = tmp_path / "crops"
    crops.mkdir()
    for index, face in enumerate(read_csv(SAMPLE_CSV).images[:3]):
        cv2.imwrite(str(crops / f"face{index}.png"), face)
    assert predict_main([str(crops), "--no-detect", "--model", str(folder / "run"),
                         "--out", str(tmp_path / "out")]) == 0
    header = next(csv.reader(open(tmp_path / "out" / "faces.csv")))
    assert [name for name in header if name.startswith("p_")] == [
        f"p_{name}" for name in FERPLUS_NAMES]
    assert "contempt" in capsys.readouterr().out  # the frequency table lists all 8


def test_balanced_weights_and_sampler_on_soft_targets(ferplus_run, tmp_path):
    # FER+ crossentropy targets: a class's frequency is the sum of its share of every
    # training image's distribution, so the weights are N / (K sum_i t_ik); the sampler
    # balances each image's stored (peak) label.
    _, dataset, _ = ferplus_run
    targets, (_, labels) = read_targets(dataset, "train"), read_split(dataset, "train")
    soft = targets.astype(np.float64).sum(axis=0)
    assert not np.allclose(soft, np.bincount(labels, minlength=8))  # soft, not the labels
    results = launcher.run_experiment(**quick_config(
        tmp_path, dataset, val=False, n_epochs=1, anneal_epochs=0, batch_size=48,
        class_weights="balanced", sampler="balanced"))
    assert results["class_weights"] == pytest.approx(len(targets) / (8 * soft))
    with BatchLoader(dataset, "train", 48, sampler="balanced") as loader:
        for batch in loader.batches(0):
            assert np.bincount(np.asarray(batch.y), minlength=8).tolist() == [6] * 8
