"""Models in the prediction app: files checked on load, ensembles, fixed compiled shapes, and
the faces of many items classified in runs."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from loaders.sample import SAMPLE_CSV
from loaders.sources import CLASS_NAMES, read_csv
from predict_support import (model_fixture, probabilities_of, read_rows, resaved_model, run,
                             sample_fixture, variant_model, write_png)
from utils.evaluation import inference
from utils.evaluation.batching import batch_bounds, images_per_batch
from utils.models.model_io import ModelFileError
from utils.nn.network import Network
from utils.predict import DEFAULT_MODEL, EmotionModel, Ensemble, load_models
from utils.predict.inputs import Item, Problem
from utils.predict.pipeline import classified


def test_an_ensemble_averages_its_models_softmax_outputs(sample, model, tmp_path, capsys):
    other_path = variant_model(tmp_path, "raw", 48)  # network S, random weights
    faces = sample.images[:5]
    for index, face in enumerate(faces):
        write_png(tmp_path / "crops" / f"crop{index}.png", face)
    code, printed, _ = run(capsys, tmp_path / "crops", "--no-detect", "--out", tmp_path / "out",
                           "--model", DEFAULT_MODEL, "--model", other_path)
    assert code == 0
    expected = (model.probabilities(faces, True)
                + EmotionModel(other_path).probabilities(faces, True)) / 2
    rows = read_rows(tmp_path / "out" / "faces.csv")
    np.testing.assert_allclose(probabilities_of(rows), expected, atol=1e-6)
    assert [row["label"] for row in rows] == [CLASS_NAMES[i] for i in expected.argmax(1)]
    assert printed.startswith(f"ensemble of 2 models, probabilities averaged: model "
                              f"{DEFAULT_MODEL} (network {model.network.name}")
    single = load_models([DEFAULT_MODEL])
    np.testing.assert_array_equal(single.probabilities(faces, True),
                                  model.probabilities(faces, True))


def test_models_of_other_classes_cannot_form_an_ensemble(tmp_path):
    renamed = resaved_model(tmp_path, lambda h: h.update(
        class_names=[name.upper() for name in h["class_names"]]))
    with pytest.raises(ModelFileError, match=f"{renamed}: its classes \\(ANGRY, .*\\) differ "
                                             f"from those of {DEFAULT_MODEL}"):
        Ensemble([EmotionModel(DEFAULT_MODEL), EmotionModel(renamed)])


def test_a_model_is_verified_on_load_and_refused_naming_the_file(tmp_path, capsys):
    image = tmp_path / "face.png"
    write_png(image, read_csv(SAMPLE_CSV).images[0])

    def refused(model_path) -> str:
        code, printed, error = run(capsys, image, "--no-detect", "--model", model_path,
                                   "--out", tmp_path / "out")
        assert code == 2 and printed == "" and not (tmp_path / "out").exists()
        return error

    def poison(params):
        params["0"]["w"] = np.full_like(params["0"]["w"], np.nan)

    nan_model = resaved_model(tmp_path, change_params=poison)
    assert refused(nan_model) == (
        f"error: {nan_model}: params[0]['w'] holds NaN or infinite values (a damaged file or a "
        f"diverged training); retrain the model or restore its file\n")
    eight = resaved_model(tmp_path, lambda h: h.update(class_names=[*CLASS_NAMES, "contempt"]))
    assert refused(eight) == (f"error: {eight}: its network has 7 outputs but its header names "
                              f"8 classes; the file is damaged: retrain or restore it\n")
    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(DEFAULT_MODEL.read_bytes()[:100_000])
    message = refused(truncated)
    assert message.startswith(f"error: {truncated}: not a fer-jax model file, or ")
    assert message.endswith("so it is not used and is left as it is; restore it from a copy or "
                            "train it again\n")


@pytest.mark.parametrize("augment", [True, False])
def test_every_face_count_runs_through_fixed_shapes_of_bounded_rows(sample, model, monkeypatch,
                                                                     augment):
    calls = []
    name = "_on_views" if augment else "_on_plain"
    original = getattr(model, name)

    def counting(params, bn_state, pixels):
        calls.append(pixels.shape)
        return original(params, bn_state, pixels)

    monkeypatch.setattr(model, name, counting)
    counts = (1, 8, 9, 300, 400)
    for n_faces in counts:
        probabilities = model.probabilities(sample.images[:n_faces], augment=augment)
        assert probabilities.shape == (n_faces, 7)
    # The faces (their variant's versions: 1 for raw, 2 for mirror) go in batches of the large
    # shape while they fill it; the rest in one more large batch if it fills more than half of
    # one, else in batches of 16 (online views are cut inside): less than one small batch of
    # padding. The large shape holds at most 256 of the network's rows: 256 plain views, or 16
    # faces in the default model's ten-crop (160 rows: one shape).
    per_face = model.versions(sample.images[:1]).shape[1] if augment else 1
    large = 16 if augment else 256
    assert model.batch_faces(augment) == large
    expected = []
    for n_faces in counts:
        rows = n_faces * per_face
        rest = rows % large
        expected += [(large, 48, 48)] * (rows // large + (2 * rest > large))
        expected += [(16, 48, 48)] * (-(-rest // 16) if 2 * rest <= large else 0)
    assert calls == expected
    if not augment:  # 400 plain faces: two large batches, no small one
        assert calls[-2:] == [(256, 48, 48)] * 2


def test_a_large_batch_holds_at_most_256_network_rows():
    # faces per large batch for 1 to 300 rows a face: a multiple of 16, at least 16
    for rows_per_face in range(1, 301):
        faces = images_per_batch(rows_per_face)
        assert faces % 16 == 0 and faces >= 16
        assert faces * rows_per_face <= 256 or faces == 16
        assert (faces + 16) * rows_per_face > 256  # as large as the bound allows
    assert [images_per_batch(r) for r in (1, 2, 10, 16, 17)] == [256, 128, 16, 16, 16]
    bounds = batch_bounds(304, 256)
    assert bounds == [(0, 256), (256, 272), (272, 288), (288, 304)]
    # a rest over half a large batch takes one more large batch (padded), not small ones
    assert batch_bounds(385, 256) == [(0, 256), (256, 512)]
    assert batch_bounds(384, 256) == [(0, 256)] + [(s, s + 16) for s in range(256, 384, 16)]
    assert batch_bounds(129, 256) == [(0, 256)] and batch_bounds(9, 256) == [(0, 16)]
    assert batch_bounds(0, 256) == [] and batch_bounds(40, 16) == [(0, 16), (16, 32), (32, 48)]


def test_faces_classified_in_runs_match_one_batch_in_order(sample, model):
    faces = sample.images[:7]
    counts = [2, 0, 1, 3, 1]  # an image without a face, and a problem, in between
    items, start = [], 0
    for index, count in enumerate(counts):
        items.append(Item(f"image{index}", None, None, np.zeros((4, 4, 3), np.uint8),
                          np.zeros((count, 5)), np.full(count, np.nan),
                          faces[start:start + count]))
        start += count
        if index == 1:
            items.append(Problem("broken.png", "not an image OpenCV can read"))
    expected = model.probabilities(faces, augment=True)
    runs = list(classified(iter(items), model, True, faces_per_run=3, items_per_run=2))
    # runs close at 3 faces or 2 items, whichever comes first
    assert [[item.source for item in run] for run in runs] == [
        ["image0", "image1"], ["broken.png", "image2"], ["image3"], ["image4"]]
    result = [item for run in runs for item in run]
    assert [getattr(item, "source") for item in result] == [
        "image0", "image1", "broken.png", "image2", "image3", "image4"]
    analysed = [item for item in result if isinstance(item, Item)]
    np.testing.assert_allclose(np.concatenate([item.probabilities for item in analysed]),
                               expected, atol=1e-6)
    assert [len(item.probabilities) for item in analysed] == counts


def test_each_run_starts_before_the_one_before_it_is_awaited_the_last_one_too():
    """The network always has the next run queued: every run, the stream's last partial one
    included, is started before the previous run's outputs are awaited."""
    events = []

    class Recording:
        class_names = CLASS_NAMES

        def start(self, faces, augment):
            run = len([event for event in events if event[0] == "start"])
            events.append(("start", run, len(faces)))

            class Outputs:
                def probabilities(self):
                    events.append(("await", run))
                    return np.zeros((len(faces), len(CLASS_NAMES)))
            return Outputs()

    items = [Item(f"image{index}", None, None, np.zeros((4, 4), np.uint8), np.zeros((1, 5)),
                  np.full(1, np.nan), np.zeros((1, 48, 48), np.uint8)) for index in range(7)]
    result = [item for run in classified(iter(items), Recording(), False, faces_per_run=3)
              for item in run]
    assert [item.source for item in result] == [item.source for item in items]
    assert events == [("start", 0, 3), ("start", 1, 3), ("await", 0), ("start", 2, 1),
                      ("await", 1), ("await", 2)]


def test_the_load_check_traces_the_network_once_for_the_large_plain_batch(tmp_path,
                                                                          monkeypatch):
    """Loading checks the outputs by tracing the network as a large batch of plain views is
    called, so that call does not trace it again (a smaller batch does: a shape of its own)."""
    monkeypatch.setattr(inference, "_COMPILED", {})  # no trace kept from another test's model
    traced = []
    original = Network.apply

    def counting(self, *args, **kwargs):
        traced.append(len(args[2]))  # the batch traced
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Network, "apply", counting)
    model = EmotionModel(variant_model(tmp_path, "raw", 48))
    assert traced == [256]
    large = jax.ShapeDtypeStruct((256, 48, 48), np.uint8)
    model._on_plain.lower(model.params, model.bn_state, large)  # what a call traces first
    assert traced == [256]
    model._on_plain.lower(model.params, model.bn_state, jax.ShapeDtypeStruct((16, 48, 48),
                                                                             np.uint8))
    assert traced == [256, 16]
