"""python -m utils.export on every network and the shipped models: onnxruntime's and OpenCV's
probabilities on 200 real test faces against utils.evaluation.inference's, the metadata, the
refusals; utils.predict --onnx against utils.predict, and without JAX."""
import json
import subprocess
import sys

import cv2
import jax
import numpy as np
import onnx
import pytest

from launcher_support import PROJECT
from loaders.sample import SAMPLE_CSV, extended_csv_text
from loaders.sources import CLASS_NAMES, read_csv
from predict_support import read_rows, resaved_model, run, write_png
from utils.evaluation.inference import InferenceModel
from utils.evaluation.onnx_model import PREFIX, OnnxModel, as_input
from utils.export import cli as export_cli
from utils.export.check import framework_probabilities
from utils.models import model_io
from utils.models.networks import get_network

DEFAULT = PROJECT / "trained_models" / "default"
FERPLUS = PROJECT / "trained_models" / "ferplus"
N_FACES = 200
ONNXRUNTIME_TOLERANCE, OPENCV_TOLERANCE = 1e-5, 1e-4


@pytest.fixture(scope="module", name="faces")
def faces_fixture(tmp_path_factory):
    """200 real PublicTest faces: the extended built-in sample's (280)."""
    path = tmp_path_factory.mktemp("sample") / "extended.csv"
    path.write_bytes(extended_csv_text())
    data = read_csv(path)
    return data.images[data.usage == "PublicTest"][:N_FACES]


def training_faces(size: int, n: int = 64) -> np.ndarray:
    """float32 [n, size, size, 1]: the built-in sample's first Training faces, their centres."""
    data = read_csv(SAMPLE_CSV)
    start = (48 - size) // 2
    faces = data.images[data.usage == "Training"][:n, start:start + size, start:start + size]
    return faces[..., None].astype(np.float32) / 255


def saved_model(folder, network: str, variant="raw", augment=None, class_names=CLASS_NAMES,
                seed=0):
    """A model file as the launcher saves one: random weights, batch norm's gamma and beta drawn
    away from their initial values and population statistics of those weights (so the export
    must use them)."""
    size = {"crop5": 44, "variant14": 42}.get(variant, 48)
    if augment and "crop_to:40" in augment:
        size = 40
    net = get_network(network, im_dim=[size, size], n_hidden=[16],
                      n_classes=len(class_names))
    params, bn_state = net.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)

    def drawn(path, leaf):
        name = getattr(path[-1], "key", "")
        shape = np.shape(leaf)
        draws = {"gamma": lambda: rng.uniform(0.5, 1.5, shape),
                 "beta": lambda: rng.normal(0, 0.3, shape)}
        return np.asarray(draws[name](), np.float32) if name in draws else leaf

    params = jax.tree_util.tree_map_with_path(drawn, params)
    # Population statistics of the drawn weights on real training faces, as training would
    # leave them: drawn ones push a deep network (V) to one answer whatever the face.
    images = training_faces(size)
    bn_state = net.apply(params, bn_state, images, train=True, key=jax.random.key(seed))[1]
    header = {"config": {"network": network, "im_dim": [size, size], "augment": augment},
              "network_options": net.options, "class_names": list(class_names),
              "dataset_variant": variant, "code_version": "test-version"}
    path = folder / f"{network.replace(':', '_')}_{variant}.msgpack"
    model_io.save(path, model_io.MODEL_FORMAT, header, {"params": params, "bn_state": bn_state})
    return path


def exported(capsys, model_path, out, *options):
    code, printed, errors = run_export(capsys, model_path, "--onnx", out, *options)
    assert code == 0, errors
    assert "checked: onnxruntime's probabilities on 16 sample faces" in printed
    return OnnxModel(out)


def run_export(capsys, *argv):
    code = export_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_matches_the_framework(path, model, faces):
    """onnxruntime within 1e-5 and cv2.dnn within 1e-4 of utils.evaluation.inference, with the
    same argmax, on the faces."""
    exported_model = OnnxModel(path)
    ours = framework_probabilities(model, faces, exported_model.views)
    theirs = exported_model.probabilities(as_input(faces))
    assert theirs.shape == ours.shape == (len(faces), len(model.class_names))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=ONNXRUNTIME_TOLERANCE)
    np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(as_input(faces))
    np.testing.assert_allclose(net.forward(), ours, rtol=0, atol=OPENCV_TOLERANCE)
    # Not a constant answer: the probabilities move with the face, far beyond the tolerance.
    assert ours.std(axis=0).max() > 100 * ONNXRUNTIME_TOLERANCE
    return exported_model


# One model per network, each trained (as the header says) with other test-time views: 1 to
# 10 views, crops, corners, mirrors; tiny is a registered user network (tests/tiny_net.py).
NETWORKS = [("A", "mirror", None), ("B", "raw", None), ("C", "raw", None),
            ("D", "raw", "flip"), ("S", "crop5", None), ("V", "mirror", None),
            ("mlp", "raw", "crop:4,flip"), ("tiny_net:tiny", "raw", "crop_to:40")]


@pytest.mark.parametrize("network, variant, augment", NETWORKS)
def test_every_network_exports_and_runs_alike_in_onnxruntime_and_opencv(
        tmp_path, capsys, faces, network, variant, augment):
    model_path = saved_model(tmp_path, network, variant, augment)
    exported(capsys, model_path, tmp_path / "model.onnx")
    model = InferenceModel(model_path)
    exported_model = assert_matches_the_framework(tmp_path / "model.onnx", model, faces)
    assert exported_model.n_views == model.n_views
    assert exported_model.network == model.network.name


def test_the_default_model_exports_its_ten_crop_and_plain_view(tmp_path, capsys, faces):
    model = InferenceModel(DEFAULT)
    views = exported(capsys, DEFAULT, tmp_path / "default.onnx")
    assert views.n_views == 10 and views.view_names[:2] == [
        "original, centre window", "original, centre window, mirrored"]
    assert_matches_the_framework(tmp_path / "default.onnx", model, faces)
    plain = exported(capsys, DEFAULT, tmp_path / "plain.onnx", "--views", "plain")
    assert plain.views == "plain" and plain.n_views == 1
    assert_matches_the_framework(tmp_path / "plain.onnx", model, faces)
    metadata = {entry.key: entry.value for entry in onnx.load(tmp_path / "default.onnx")
                .metadata_props}
    assert json.loads(metadata[PREFIX + "class_names"]) == list(CLASS_NAMES)
    assert metadata[PREFIX + "network"] == "V" and metadata[PREFIX + "views"] == "all"
    assert metadata[PREFIX + "model_code_version"] == model.header["code_version"] == "45fddd7d2ace"
    assert metadata[PREFIX + "export_code_version"]
    graph = onnx.load(tmp_path / "default.onnx").graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # a dynamic batch
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [48, 48, 1]
    ops = {node.op_type for node in graph.node}
    assert {"Conv", "MaxPool", "Softmax"} <= ops and not ops & {"Dropout", "RandomNormal"}


def test_the_ferplus_model_exports_with_its_own_eight_classes(tmp_path, capsys, faces):
    model = InferenceModel(FERPLUS)
    assert len(set(framework_probabilities(model, faces, "all").argmax(axis=1))) >= 5
    exported_model = exported(capsys, FERPLUS, tmp_path / "ferplus.onnx")
    assert exported_model.class_names == model.class_names and len(model.class_names) == 8
    assert "contempt" in exported_model.class_names
    assert_matches_the_framework(tmp_path / "ferplus.onnx", model, faces)


def test_variant14_exports_within_its_documented_tolerance(tmp_path, capsys, faces):
    model_path = saved_model(tmp_path, "tiny_net:tiny", "variant14")
    exported_model = exported(capsys, model_path, tmp_path / "v14.onnx")
    model = InferenceModel(model_path)
    assert exported_model.n_views == model.n_views == 14
    ours = framework_probabilities(model, faces, "all")
    theirs = exported_model.probabilities(as_input(faces))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))
