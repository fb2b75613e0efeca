"""An exported model file (ONNX, written by ``python -m utils.export``), run by onnxruntime.

    model = OnnxModel("default.onnx")
    probabilities = model.probabilities(faces)   # float32 [N, 48, 48, 1] in [0, 1] -> [N, K]

The file's graph takes float faces and gives the softmax of the model's outputs averaged over
its test-time views (or of its plain view), views made inside the graph; its metadata names the
classes, the network, the views and the code versions (``METADATA``), and holds a SHA-256 of the
graph, verified here before the file is used. Plain Python, onnx and onnxruntime: no JAX, so
``utils.predict --onnx`` runs without it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from utils.evaluation.batching import images_per_batch

FORMAT = "fer-jax exported model"
FORMAT_VERSION = 1
PREFIX = "fer_jax."
# The metadata every exported file carries (keys without PREFIX), and what each holds.
METADATA = {
    "format": FORMAT,
    "format_version": "1",
    "class_names": "the classes, in output order (JSON list)",
    "network": "the network's name",
    "network_options": "the network's options (JSON)",
    "variant": "the dataset variant the model was trained on",
    "views": "'all' (the test-time views, outputs averaged) or 'plain' (the centre view)",
    "view_names": "the views, in the order the graph makes them (JSON list)",
    "image_size": "the side of the faces the graph takes",
    "input": "what the input holds",
    "output": "what the output holds",
    "model_file": "the exported model file's name",
    "model_code_version": "the code version that trained the model",
    "export_code_version": "the code version that exported it",
    "graph_sha256": "SHA-256 of the graph's serialised bytes, checked when the file is read",
}
# loaders.batches.scale_pixels: a multiplication by float32(1/255), as the framework scales.
PIXEL_SCALE = np.float32(1 / 255)


def as_input(faces: np.ndarray) -> np.ndarray:
    """uint8 faces [N, S, S] as the graph takes them: float32 [N, S, S, 1] in [0, 1]."""
    return faces.astype(np.float32)[..., None] * PIXEL_SCALE


class OnnxModelError(ValueError):
    """An exported file that cannot be used (names the file and the reason)."""


def graph_checksum(proto) -> str:
    """SHA-256 of the graph (nodes and weights; the metadata beside it excluded)."""
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def _runtime():
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise OnnxModelError(f"running an exported model needs onnx and onnxruntime ({err}); "
                             f"install them with pip install 'fer-jax[export]'") from None
    return onnx, onnxruntime


def read_exported(path: Path, data: bytes | None = None):
    """(ModelProto, its metadata without PREFIX, the file's bytes), checked: an ONNX file of
    this format and version whose graph matches its checksum. ``data``: the file's bytes, when
    they are not (yet) in the file."""
    onnx, _ = _runtime()
    if data is None:
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such file")
        data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as err:  # protobuf raises its DecodeError, or others on garbage
        raise OnnxModelError(f"{path}: not an ONNX file, or a damaged one "
                             f"({type(err).__name__}); export the model again") from None
    metadata = {entry.key[len(PREFIX):]: entry.value for entry in proto.metadata_props
                if entry.key.startswith(PREFIX)}
    if metadata.get("format") != FORMAT:
        raise OnnxModelError(f"{path}: an ONNX file, but not one exported by python -m "
                             f"utils.export (no {PREFIX}format metadata); export the model "
                             f"with it")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise OnnxModelError(f"{path}: exported file format version "
                             f"{metadata.get('format_version')}, but this code reads version "
                             f"{FORMAT_VERSION}; export the model again with this code")
    if metadata.get("graph_sha256") != graph_checksum(proto):
        raise OnnxModelError(f"{path}: damaged: its graph does not match the checksum saved "
                             f"with it (a bad disk block, an interrupted copy or an edit), so "
                             f"it is not used; export the model again")
    return proto, metadata, data


class OnnxModel:
    """An exported file, checked on load, ready to classify float faces (``data``: the file's
    bytes, to check a file before it is written)."""

    def __init__(self, path, data: bytes | None = None):
        self.path = Path(path)
        _, onnxruntime = _runtime()
        proto, self.metadata, data = read_exported(self.path, data)
        try:
            self.class_names = json.loads(self.metadata["class_names"])
            self.view_names = json.loads(self.metadata["view_names"])
            self.image_size = int(self.metadata["image_size"])
            self.network, self.views = self.metadata["network"], self.metadata["views"]
        except (KeyError, ValueError) as err:
            raise OnnxModelError(f"{self.path}: its metadata lacks {err} or holds a bad value; "
                                 f"export the model again") from None
        self.session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        del proto

    @property
    def n_views(self) -> int:
        return len(self.view_names)

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """float32 [N, classes] of float faces [N, S, S, 1] in [0, 1]."""
        expected = (self.image_size, self.image_size, 1)
        if faces.ndim != 4 or faces.shape[1:] != expected:
            raise OnnxModelError(f"{self.path} takes faces [N, {', '.join(map(str, expected))}]"
                                 f", got {list(faces.shape)}")
        faces = np.ascontiguousarray(faces, np.float32)
        batch = images_per_batch(self.n_views)  # faces a run: bounds the views' memory
        outputs = [self.session.run(None, {self.input_name: faces[start:start + batch]})[0]
                   for start in range(0, len(faces), batch)]
        return (np.concatenate(outputs) if outputs
                else np.zeros((0, len(self.class_names)), np.float32))
