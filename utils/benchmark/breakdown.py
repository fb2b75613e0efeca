"""Where a network's training step goes, per layer and per op class, measured.

    python -m utils.benchmark.breakdown V --batch-size 128 --rounds 3 [--dtype bfloat16]
    python -m utils.benchmark.breakdown V --im-dim 40 40     # on the modern recipe's windows
    python -m utils.benchmark.breakdown V --peer torch_cl    # beside PyTorch's, layer by layer

Each layer of the network is timed on its own, as compiled pieces on the input it sees in a
real step: a conv layer's convolution (forward, input gradient, weight gradient) and the
whole layer forward and backward, whose difference is its tail (batch norm, pooling,
activation, dropout); residual blocks and dense layers forward and backward as a whole; the
SGD update; and the whole training step (``utils.training.steps.Steps.train``), in interleaved
rounds, best of each. What the pieces do not cover (the loss, XLA's work between layers, and
what it overlaps) is the whole step minus their sum.

``--peer torch`` / ``torch_cl`` (the ``bench`` extra) then trains the same network in PyTorch
(NCHW, or channels_last) and sets its convolutions' forward and backward, profiled inside its
own training step (``peers.torch_profile``), beside ours layer by layer, with both whole steps:
where the step's gap to PyTorch lies. Ours and the peer's are measured one after the other,
not interleaved: on a machine whose speed drifts, run it twice.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from utils.benchmark.measure import available_peers
from utils.nn.precision import COMPUTE_DTYPES


def layer_pieces(network, batch_size: int, dtype) -> list[tuple[str, str, object, tuple]]:
    """(layer name, op class, function, arguments) for every timed piece of each layer."""
    import jax
    import numpy as np

    from utils import rna
    from utils.nn import cpu_bfloat16

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
            # the dtype the layer convolves in (bfloat16 on a CPU: float32 for narrow layers)
            x = h.astype(jax.numpy.float32) if cpu_bfloat16.float32_layer(h, w) else h
            z_grad = jax.numpy.asarray(rng.normal(size=rna.conv2d(x, w).shape), x.dtype)
            pieces.append((layer.name, "conv forward", rna.conv2d, (x, w)))
            if index:
                pieces.append((layer.name, "conv input gradient", lambda x, w, g: jax.vjp(
                    lambda x: rna.conv2d(x, w), x)[1](g), (x, w, z_grad)))
            pieces.append((layer.name, "conv weight gradient", lambda x, w, g: jax.vjp(
                lambda w: rna.conv2d(x, w), w)[1](g), (x, w, z_grad)))
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


def conv_layer_shapes(network) -> list[tuple[str, tuple]]:
    """(layer name, (C_in, H, W, C_out, kh, kw)) of each conv layer, in order."""
    import jax

    shapes, shape = [], tuple(network.input_shape)
    for layer in network.body.layers:
        out_shape, params, _ = layer.init(jax.random.key(0), shape)
        if _layer_kind(params) == "conv":
            kh, kw, c_in, c_out = params["w"].shape
            shapes.append((layer.name, (c_in, shape[0], shape[1], c_out, kh, kw)))
        shape = out_shape
    return shapes


def peer_comparison(rows, layer_shapes, peer: dict) -> list[tuple]:
    """(layer, ours forward, ours backward, peer forward, peer backward) ms for each conv layer
    (a shape's peer time shared by the layers of that shape), then the convolutions' totals."""
    sharing = defaultdict(int)
    for _, shape in layer_shapes:
        sharing[shape] += 1
    table = []
    for (layer, forward, backward, _), (_, shape) in zip(conv_layers(rows), layer_shapes,
                                                         strict=True):
        times = peer["convs"].get(shape, {"forward": float("nan"), "backward": float("nan")})
        table.append((layer, forward, backward, times["forward"] / sharing[shape],
                      times["backward"] / sharing[shape]))
    table.append(("all conv layers", *(sum(row[i] for row in table) for i in range(1, 5))))
    return table


def format_peer_comparison(rows, layer_shapes, peer: dict) -> str:
    name = peer["name"]
    whole = next(ms for _, kind, ms in rows if kind == "whole training step")
    steps = peer["profiled_steps"]
    lines = ["", f"Beside {name} {peer['version']} ({peer['threads']} threads): its "
             f"convolutions profiled in its own training step (median of {steps} steps), ms; "
             f"speed = {name}'s ms / ours",
             f"| layer | ours forward | ours backward | {name} forward | {name} backward "
             f"| speed, forward + backward |", "|---|---|---|---|---|---|"]
    for layer, ours_f, ours_b, peer_f, peer_b in peer_comparison(rows, layer_shapes, peer):
        lines.append(f"| {layer} | {ours_f:.1f} | {ours_b:.1f} | {peer_f:.1f} | {peer_b:.1f} "
                     f"| {(peer_f + peer_b) / (ours_f + ours_b):.2f}x |")
    lines.append(f"| whole training step (best round; {name}'s unprofiled) | {whole:.1f} | "
                 f"| {peer['step_ms']:.1f} | | {peer['step_ms'] / whole:.2f}x |")
    return "\n".join(lines)


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


def conv_layers(rows) -> list[tuple[str, float, float, float]]:
    """(layer, its convolution's forward, its backward (input + weight gradient), the whole
    layer forward and backward) ms for each conv layer, in order: a layer's conv pieces come
    before its whole-layer row (two layers may have the same name)."""
    layers, forward, backward = [], 0.0, 0.0
    for layer, kind, ms in rows:
        if kind == "conv forward":
            forward += ms
        elif kind in ("conv input gradient", "conv weight gradient"):
            backward += ms
        elif kind == "conv layer (forward + backward)":
            layers.append((layer, forward, backward, ms))
            forward, backward = 0.0, 0.0
    return layers


def op_classes(rows) -> dict[str, float]:
    """Milliseconds per op class: conv-layer tails are the whole layers minus their convs."""
    classes = defaultdict(float)
    for _, forward, backward, whole_layer in conv_layers(rows):
        classes["convolutions"] += forward + backward
        classes["conv-layer tails (BN, pooling, activation, dropout)"] += (
            whole_layer - forward - backward)
    for layer, kind, ms in rows:
        if kind in ("residual block layer (forward + backward)",
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
    parser.add_argument("--peer", choices=("torch", "torch_cl"),
                        help="also profile PyTorch's convolutions (NCHW, or channels_last) in "
                             "its training step and set them beside ours, layer by layer")
    args = parser.parse_args(argv)
    if args.peer and args.dtype != "float32":
        parser.error("--peer compares float32 steps: leave --dtype out")
    if args.peer and available_peers([args.peer])[args.peer]:
        parser.error("--peer needs PyTorch, which is not installed: pip install -e '.[bench]'")
    from utils.support import host_tuning

    host_tuning.apply()
    from utils.models.networks import get_network

    try:
        network = get_network(args.network, **({"im_dim": args.im_dim} if args.im_dim else {}))
    except ValueError as error:  # an unknown name or a size too small: one sentence
        parser.error(str(error))
    result = measure(args.network, args.batch_size, args.dtype, args.rounds, args.im_dim)
    print(format_breakdown(args.network, args.batch_size, args.dtype, result))
    if args.peer:
        from utils.benchmark.peers.torch_profile import profile_steps

        peer = profile_steps(network, args.batch_size, channels_last=args.peer == "torch_cl",
                             rounds=args.rounds)
        print(format_peer_comparison(result["rows"], conv_layer_shapes(network), peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
