"""Saved models as ONNX files that run outside this framework: python -m utils.export.

    python -m utils.export trained_models/default --onnx default.onnx
    python -m utils.export.check default.onnx --model trained_models/default --dataset fer2013.csv

The package, by responsibility: ``views`` (a model's test-time views as a JAX function of
float faces), ``converter`` (the views, network and softmax as one function, converted by
jax2onnx and folded by onnxslim, with the file's metadata), ``cli`` (the command line: convert,
check against the framework, write atomically), ``check`` (an exported file against the
framework on a test set, through onnxruntime and OpenCV). Reading and running an exported file
is ``utils.evaluation.onnx_model``'s (no JAX), shared with ``utils.predict --onnx``.
"""
