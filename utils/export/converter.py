"""A saved model as an ONNX graph: its test-time views, network and softmax in one function.

The function (``exported_function``) is what ``utils.evaluation.inference`` computes, from float
faces [N, 48, 48, 1] in [0, 1]: the views (``utils.export.views``), the network in test mode
(batch norm with its population statistics; dropout and noise are identity there), the
pre-softmax outputs averaged over the views, the softmax. jax2onnx converts it, traced with the
layer's plain forms (``rna.plain_forms``: one Conv per convolution, one MaxPool per pooling,
where the CPU fast paths would give dozens of slices); onnxslim then folds the shape arithmetic
that the symbolic batch leaves in the graph (what OpenCV's importer cannot run) into constants.
"""
from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp

from loaders.sources import IMAGE_SIZE
from utils import rna
from utils.evaluation.inference import InferenceModel
from utils.evaluation.onnx_model import FORMAT, FORMAT_VERSION, PREFIX, graph_checksum
from utils.export.views import all_views, plain_view

VIEWS = ("all", "plain")
INPUT, OUTPUT = "faces", "probabilities"
OPSET = 23


def view_names(model: InferenceModel, views: str) -> list[str]:
    """The views the graph makes, in its order."""
    online = model.online
    windows = (["centre", "top-left", "top-right", "bottom-left", "bottom-right"]
               if online.pad or online.size else ["whole"])
    online_names = [f"{window}{mirrored}" for window in windows
                    for mirrored in ([" window", " window, mirrored"] if online.flip
                                     else [" window"])]
    if views == "plain":
        return [f"{model.variant.variant_names[0]}, {online_names[0]}"]
    return [f"{version}, {window}" for version in model.variant.variant_names
            for window in online_names]


def exported_function(model: InferenceModel, views: str):
    """float32 faces [N, 48, 48, 1] -> float32 probabilities [N, classes]."""
    make_views = all_views if views == "all" else plain_view

    def probabilities(faces):
        images = make_views(model.variant, model.online, faces)
        logits = model.network.apply(model.params, model.bn_state,
                                     jnp.concatenate(images, axis=0), train=False)[0]
        n_classes = logits.shape[-1]
        # [views * N, K] -> [views, N, K]: each view's batch is one block of N rows.
        mean = jnp.mean(logits.reshape(len(images), faces.shape[0], n_classes), axis=0)
        return jax.nn.softmax(mean, axis=-1)

    return probabilities


def metadata(model: InferenceModel, views: str, export_code_version: str) -> dict[str, str]:
    header = model.header
    return {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "class_names": json.dumps(model.class_names),
        "network": model.network.name,
        "network_options": json.dumps(model.network.options, sort_keys=True, default=str),
        "variant": model.variant.name, "views": views,
        "view_names": json.dumps(view_names(model, views)),
        "image_size": str(IMAGE_SIZE),
        "input": f"{INPUT}: float32 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1], grayscale faces framed "
                 f"as FER2013's, pixels / 255 (0 black, 1 white)",
        "output": f"{OUTPUT}: float32 [N, {len(model.class_names)}], the softmax of the "
                  f"outputs averaged over the views, classes in class_names order",
        "model_file": model.path.name if model.path.is_file() else "model.msgpack",
        "model_code_version": str(header.get("code_version", "unknown")),
        "export_code_version": export_code_version,
    }


def convert(model: InferenceModel, views: str, export_code_version: str):
    """The ModelProto of the model's exported function, with its metadata and checksum."""
    import onnx
    import onnxslim
    from jax2onnx import to_onnx
    from jax2onnx.plugins.jax.lax import gather

    # onnx_ir warns once per shape tensor it cannot type before onnxslim folds them away.
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    # jax2onnx 0.17.1 registers the constant folders that turn a slicing gather into a Slice
    # on each conversion's context, but remembers in a global that it did: a second export in
    # the same process got GatherND (which OpenCV lacks) for every crop. Each context gets them.
    gather._CONST_HANDLERS_REGISTERED = False
    with rna.plain_forms():
        proto = to_onnx(exported_function(model, views), [("N", IMAGE_SIZE, IMAGE_SIZE, 1)],
                        model_name=f"fer_jax_{model.network.name}", opset=OPSET,
                        input_names=[INPUT], output_names=[OUTPUT])
    proto = onnxslim.slim(proto)
    proto.doc_string = (f"fer-jax network {model.network.name} ({model.variant.name} variant): "
                        f"facial-expression probabilities of {IMAGE_SIZE}x{IMAGE_SIZE} faces, "
                        f"{views} views")
    del proto.metadata_props[:]
    for key, value in metadata(model, views, export_code_version).items():
        proto.metadata_props.add(key=PREFIX + key, value=value)
    proto.metadata_props.add(key=PREFIX + "graph_sha256", value=graph_checksum(proto))
    onnx.checker.check_model(proto)
    return proto
