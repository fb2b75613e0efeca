"""An exported file in use and what is refused: utils.predict --onnx against utils.predict on a
folder of crops (and without JAX), damaged, foreign and unknown files, one sentence each."""
import subprocess
import sys

import pytest

from launcher_support import PROJECT
from loaders.sample import SAMPLE_CSV
from loaders.sources import read_csv
from predict_support import read_rows, resaved_model, run, write_png
from test_export import run_export, saved_model
from utils.export.cli import main as export_main

BLOCK_JAX = """
import runpy, sys
class NoJax:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax"):
            raise ImportError(f"{name} is blocked: this path must not need it")
sys.meta_path.insert(0, NoJax())
sys.argv = ["utils.predict"] + sys.argv[1:]
runpy.run_module("utils.predict", run_name="__main__")
"""


@pytest.fixture(scope="module", name="tiny_onnx")
def tiny_onnx_fixture(tmp_path_factory):
    """A tiny model with a ten-crop, exported (the module's one conversion)."""
    folder = tmp_path_factory.mktemp("tiny")
    model = saved_model(folder, "tiny_net:tiny", "raw", "crop_to:40,flip")
    assert export_main([str(model), "--onnx", str(folder / "tiny.onnx")]) == 0
    return model, folder / "tiny.onnx"


@pytest.fixture(scope="module", name="crops")
def crops_fixture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops") / "crops"
    data = read_csv(SAMPLE_CSV)
    for index, face in enumerate(data.images[data.usage == "PublicTest"][:30]):
        write_png(folder / f"face{index:02d}.png", face)
    return folder


def test_predict_with_onnx_gives_the_labels_of_predict_without_it(tmp_path, capsys, tiny_onnx,
                                                                 crops):
    model, onnx_file = tiny_onnx
    code, _, errors = run(capsys, crops, "--no-detect", "--model", model, "--out",
                          tmp_path / "framework")
    assert code == 0, errors
    code, printed, errors = run(capsys, crops, "--no-detect", "--onnx", onnx_file, "--out",
                                tmp_path / "exported")
    assert code == 0, errors
    assert "through onnxruntime; outputs averaged over its 10 test-time views" in printed
    ours, theirs = (read_rows(tmp_path / name / "faces.csv") for name in ("framework",
                                                                          "exported"))
    assert len(ours) == len(theirs) == 30
    assert [row["source"] for row in theirs] == [row["source"] for row in ours]
    assert [row["label"] for row in theirs] == [row["label"] for row in ours]
    assert len({row["label"] for row in ours}) > 1
    for mine, other in zip(ours, theirs):
        assert abs(float(mine["probability"]) - float(other["probability"])) < 1e-5


def test_predict_with_onnx_runs_where_jax_cannot_be_imported(tmp_path, tiny_onnx, crops):
    done = subprocess.run([sys.executable, "-c", BLOCK_JAX, str(crops), "--no-detect", "--onnx",
                           str(tiny_onnx[1]), "--out", str(tmp_path / "out")], cwd=PROJECT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(tmp_path / "out" / "faces.csv")) == 30


def test_predict_refuses_what_an_exported_file_cannot_do(tmp_path, capsys, tiny_onnx, crops):
    model, onnx_file = tiny_onnx
    code, _, errors = run(capsys, crops, "--no-detect", "--no-augment", "--onnx", onnx_file)
    assert code == 2 and errors.count("\n") == 1
    assert "cannot give the plain view: drop --no-augment, or export the model again with " \
           "--views plain" in errors
    with pytest.raises(SystemExit):
        run(capsys, crops, "--onnx", onnx_file, "--model", model)
    assert "give --model or --onnx, not both" in capsys.readouterr().err


def test_a_damaged_or_foreign_onnx_file_is_refused_in_one_sentence(tmp_path, capsys, tiny_onnx,
                                                                  crops):
    data = bytearray(tiny_onnx[1].read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit, inside the weights
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    yunet = PROJECT / "utils" / "predict" / "models" / "face_detection_yunet_2026may.onnx"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    for path, sentence in [(damaged, "damaged: its graph does not match the checksum"),
                           (yunet, "not one exported by python -m utils.export"),
                           (garbage, "not an ONNX file, or a damaged one"),
                           (tmp_path / "missing.onnx", "no such file")]:
        code, _, errors = run(capsys, crops, "--no-detect", "--onnx", path)
        assert code == 2, path
        assert errors.startswith(f"error: {path}: ") and sentence in errors
        assert errors.count("\n") == 1 and "Traceback" not in errors


def test_export_refuses_damaged_unknown_and_existing_in_one_sentence(tmp_path, capsys,
                                                                    tiny_onnx):
    model, onnx_file = tiny_onnx
    damaged = tmp_path / "damaged.msgpack"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x01
    damaged.write_bytes(bytes(data))

    def unknown(header):
        header["config"]["network"] = "resnet_e"

    cases = [(damaged, "damaged: its contents do not match the checksum"),
             (resaved_model(tmp_path, unknown), "cannot rebuild its network (unknown network "
                                                "'resnet_e'"),
             (tmp_path / "nothing.msgpack", "no such file")]
    for path, sentence in cases:
        code, _, errors = run_export(capsys, path, "--onnx", tmp_path / "out.onnx")
        assert code == 2 and sentence in errors, errors
        assert errors.count("\n") == 1 and "Traceback" not in errors
        assert not (tmp_path / "out.onnx").exists()
    before = onnx_file.read_bytes()
    code, _, errors = run_export(capsys, model, "--onnx", onnx_file)
    assert code == 2 and "already exists (--overwrite replaces it)" in errors
    assert onnx_file.read_bytes() == before
