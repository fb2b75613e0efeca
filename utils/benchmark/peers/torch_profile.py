"""PyTorch's convolutions layer by layer, inside its own training step: the peer's side of
``python -m utils.benchmark.breakdown NET --peer torch`` (or ``torch_cl``).

The peer (``torch_nets.TorchSteps``: the same layers as ours) trains on the benchmark's batch;
a few steps run under ``torch.profiler`` with the operators' input shapes recorded, and each
convolution's forward (``aten::convolution``, its backend's kernel included) and backward
(``aten::convolution_backward``: input and weight gradients together) are credited to the
conv layer of that shape: (input channels, height, width, output channels, window). Layers of
one shape share its time equally; each is the median of steps profiled one at a time. The whole
step is timed apart, unprofiled, best of rounds.
``profile_steps`` needs ``torch`` (the ``bench`` extra); reading the profiler's events does not.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict

# the profiler's operator name -> the part of a convolution it times
CONV_OPERATORS = {"aten::convolution": "forward", "aten::convolution_backward": "backward"}


def conv_shape(input_nchw, weight_oihw) -> tuple:
    """(C_in, H, W, C_out, kh, kw): a convolution's shape from PyTorch's operand shapes."""
    _, c_in, height, width = input_nchw
    c_out, _, kh, kw = weight_oihw
    return (c_in, height, width, c_out, kh, kw)


def conv_milliseconds(events, steps: int) -> dict[tuple, dict[str, float]]:
    """{conv_shape: {"forward": ms, "backward": ms}} a step, from ``key_averages(
    group_by_input_shape=True)`` events of ``steps`` profiled steps (inclusive times)."""
    times = defaultdict(lambda: {"forward": 0.0, "backward": 0.0})
    for event in events:
        part = CONV_OPERATORS.get(event.key)
        if part is None:
            continue
        shapes = event.input_shapes  # forward: input, weight, ...; backward: grad, input, weight
        operands = shapes[:2] if part == "forward" else shapes[1:3]
        times[conv_shape(*operands)][part] += event.cpu_time_total / 1e3 / steps
    return dict(times)


def median_times(profiled: list[dict]) -> dict[tuple, dict[str, float]]:
    """Per shape and part, the median over steps of ``conv_milliseconds`` results."""
    return {shape: {part: statistics.median(step[shape][part] for step in profiled)
                    for part in ("forward", "backward")} for shape in profiled[0]}


def profile_steps(network, batch_size: int, *, channels_last: bool, rounds: int = 3,
                  steps: int = 5) -> dict:
    """The peer's best unprofiled step (ms) over ``rounds`` and its convolutions' ms by shape,
    the median of ``steps`` steps profiled one at a time, with what was run."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from utils.benchmark.peers import peer_spec
    from utils.benchmark.peers.torch_nets import TorchSteps
    from utils.benchmark.workers import SEED, batch_arrays

    peer = TorchSteps(peer_spec(network), seed=SEED, channels_last=channels_last)
    x, y = batch_arrays(batch_size, network.input_shape[:2])
    images, labels = peer.input(x), torch.from_numpy(y).long()
    for _ in range(2):  # kernel selection, allocations
        peer.train(images, labels)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        peer.train(images, labels)
        best = min(best, time.perf_counter() - started)
    profiled = []
    for _ in range(steps):  # one profile a step: a slow moment spoils one step, not the median
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
            peer.train(images, labels)
        profiled.append(conv_milliseconds(profiler.key_averages(group_by_input_shape=True), 1))
    return {"step_ms": 1e3 * best, "convs": median_times(profiled),
            "name": "PyTorch" + (" channels_last" if channels_last else " (NCHW)"),
            "version": torch.__version__, "threads": torch.get_num_threads(),
            "profiled_steps": steps}
