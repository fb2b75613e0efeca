"""python -m utils.gpu_check: what matters checked on JAX's default backend, in a minute or two.

    pip install -e '.[cuda]' && python -m utils.gpu_check     # on an NVIDIA GPU
    python -m utils.gpu_check --checks primitives resume      # some of the checks

1. ``primitives``: the layer's primitives and a small network, outputs and gradients, against
   plain references on random inputs (``primitives``);
2. ``resume``: a short launcher run on the built-in sample stopped after its first epoch and
   resumed, against the same run uninterrupted: bit for bit, or within ``--tolerance``
   (``resume``);
3. ``predict``: the prediction app on a collage of sample faces with the default model, its
   probabilities against the CPU backend's (``photo``).

One line per check, PASS or FAIL with its figure, then a count; exit status 0 when every check
passed, 1 when one failed, 2 for an argument that cannot be used. The command adds
``--xla_gpu_deterministic_ops=true`` to XLA_FLAGS (unless they name that flag already) before
JAX starts, and prints the flags in force; nothing is left behind (its runs and outputs go to
a temporary folder).
"""
