"""Where a network's training step goes, per layer and per op class, measured.

    python -m utils.benchmark.breakdown V --batch-size 128 --rounds 3 [--dtype bfloat16]
    python -m utils.benchmark.breakdown V --im-dim 40 40     # on the modern recipe's windows

Each layer of the network is timed on its own, as compiled pieces on the input it sees in a
real step: a conv layer's convolution (forward, input gradient, weight gradient) and the
whole layer forward and backward, whose difference is its tail (batch norm, pooling,
activation, dropout); residual blocks and dense layers forward and backward as a whole; the
SGD update; and the whole training step (``utils.training.steps.Steps.train``), in interleaved
rounds, best of each. What the pieces do not cover (the loss, XLA's work between layers, and
what it overlaps) is the whole step minus their sum.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from utils.nn.precision import COMPUTE_DTYPES


def layer_pieces(network, batch_size: int, dtype) -> list[tuple[str, str, object, tuple]]:
    """(layer name, op class, function, arguments) for every timed piece of each layer."""
    import jax
    import numpy as np

    from utils import rna

    params, state = network.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    h = jax.numpy.asarray(rng.random((batch_size, *network.input_shape), np.float32), dtype)
    key = jax.random.key(1)
    pieces = []
    for index, (layer, p, s) in enumerate(zip(network.body.layers, params, state)):
        out = layer.apply(p, s, h, train=True, key=jax.random.fold_in(key, index))[0]
        g = jax.numpy.asarray(rng.normal(size=out.shape), out.dtype)

        def whole(h, p, g, layer=layer, s=s, k=jax.random.fold_in(key, index), first=index == 0):
            run = lambda h, p: layer.apply(p, s, h, train=True, key=k)[0]  # noqa: E731
            return jax.vjp(run, h, p)[1](g)[1 if first else 0:]

        kind = _layer_kind(p)
        if kind == "conv":
            w = p["w"]
            z_grad = jax.numpy.asarray(rng.normal(size=rna.conv2d(h, w).shape), h.dtype)
            pieces.append((layer.name, "conv forward", rna.conv2d, (h, w)))
            if index:
                pieces.append((layer.name, "conv input gradient", lambda h, w, g: jax.vjp(
                    lambda h: rna.conv2d(h, w), h)[1](g), (h, w, z_grad)))
            pieces.append((layer.name, "conv weight gradient", lambda h, w, g: jax.vjp(
                lambda w: rna.conv2d(h, w), w)[1](g), (h, w, z_grad)))
        if kind:
            pieces.append((layer.name, f"{kind} layer (forward + backward)", whole, (h, p, g)))
        h = out
    update = lambda p: jax.tree_util.tree_map(lambda w: w - 0.1 * w, p)  # noqa: E731
    pieces.append(("all parameters", "SGD update", update, (params,)))
    return pieces


def _layer_kind(params) -> str | None:
    if "conv_a" in params:
        return "residual block"
    if "w" in params:
        return "conv" if params["w"].ndim == 4 else "dense"
    return None  # pooling, flatten: no parameters, timed within the whole step only


def measure(network_name: str, batch_size: int, dtype: str, rounds: int,
            im_dim: tuple[int, int] | None = None) -> dict:
    """Best milliseconds of each piece; ``im_dim``: the input's size (the network's own by
    default, 48x48 for the built-in ones)."""
    import jax

    from utils.benchmark.workers import batch_arrays
    from utils.models.networks import get_network
    from utils.training.optim import make_optimizer, make_schedule
    from utils.nn.precision import compute_dtype
    from utils.training.steps import Steps

    network = get_network(network_name, **({"im_dim": list(im_dim)} if im_dim else {}))
    pieces = layer_pieces(network, batch_size, compute_dtype(dtype))
    steps = Steps(network, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                  dtype=dtype)
    x, y = batch_arrays(batch_size, network.input_shape[:2])
    pieces.append(("network", "whole training step", steps._train_step,
                   (steps.init_state(0, 1), x, y)))
    compiled = [jax.jit(function) for _, _, function, _ in pieces]
    for function, (_, _, _, args) in zip(compiled, pieces):
        jax.block_until_ready(function(*args))
    best = [float("inf")] * len(pieces)
    for _ in range(rounds):
        for number, (function, (_, _, _, args)) in enumerate(zip(compiled, pieces)):
            started = time.perf_counter()
            jax.block_until_ready(function(*args))
            best[number] = min(best[number], time.perf_counter() - started)
    return {"rows": [(layer, kind, 1e3 * seconds)
                     for (layer, kind, _, _), seconds in zip(pieces, best)],
            "im_dim": tuple(network.input_shape[:2])}


def op_classes(rows) -> dict[str, float]:
    """Milliseconds per op class: conv-layer tails are the whole layers minus their convs."""
    classes, convs = defaultdict(float), defaultdict(float)
    for layer, kind, ms in rows:
        if kind.startswith("conv ") and kind != "conv layer (forward + backward)":
            classes["convolutions"] += ms
            convs[layer] += ms
    for layer, kind, ms in rows:
        if kind == "conv layer (forward + backward)":
            classes["conv-layer tails (BN, pooling, activation, dropout)"] += ms - convs[layer]
        elif kind in ("residual block layer (forward + backward)",
                      "dense layer (forward + backward)", "SGD update"):
            classes[kind.replace(" layer (forward + backward)", "s")] += ms
    whole = next(ms for _, kind, ms in rows if kind == "whole training step")
    classes["the rest (loss, between and around the pieces)"] = whole - sum(classes.values())
    classes["whole training step"] = whole
    return dict(classes)


def format_breakdown(name: str, batch_size: int, dtype: str, result: dict) -> str:
    height, width = result["im_dim"]
    lines = [f"{name} @ {batch_size} {dtype}, {height}x{width} inputs: one training step, by "
             f"layer (ms, best round)",
             "| layer | piece | ms |", "|---|---|---|"]
    lines += [f"| {layer} | {kind} | {ms:.1f} |" for layer, kind, ms in result["rows"]]
    classes = op_classes(result["rows"])
    whole = classes["whole training step"]
    lines += ["", "| op class | ms | % of the step |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.1f} | {100 * ms / whole:.0f} |" for kind, ms in classes.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark.breakdown",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("network", help="a network name (A, S, V, ...)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=COMPUTE_DTYPES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--im-dim", type=int, nargs=2, metavar=("H", "W"),
                        help="the input's size (default: the network's own, 48 48)")
    args = parser.parse_args(argv)
    from utils.support import host_tuning

    host_tuning.apply()
    from utils.models.networks import get_network

    try:
        get_network(args.network, **({"im_dim": args.im_dim} if args.im_dim else {}))
    except ValueError as error:  # an unknown name or a size too small: one sentence
        parser.error(str(error))
    result = measure(args.network, args.batch_size, args.dtype, args.rounds, args.im_dim)
    print(format_breakdown(args.network, args.batch_size, args.dtype, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
