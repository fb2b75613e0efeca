"""The benchmark tool end to end in quick mode (tiny shapes); no timing is asserted."""
import importlib.util
import os
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest

from convnets.networks import Conv, Pool, build_convnet
from loaders.sample import ensure_sample_dataset
from utils.benchmark import cli, measure

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_quick_run_end_to_end_writes_the_documented_json(tmp_path, capsys):
    peers = ["flax", "torch", "torch_cl"] if HAS_TORCH else ["flax"]
    dataset = ensure_sample_dataset("mirror", tmp_path)
    out = tmp_path / "bench.json"
    code = cli.main(["--networks", "mlp", "--batch-sizes", "8", "--im-dim", "16", "16",
                     "--quick", "--peers", *peers, "--json", str(out),
                     "--pipeline-network", "mlp", "--dataset", str(dataset),
                     "--pipeline-batches", "2", "--devices", "1", "2", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "input pipeline" in printed

    report = json.loads(out.read_text())
    assert set(report) == {"command", "device", "host_tuning", "bfloat16_note", "settings",
                           "matmul_peak_gflops", "results", "input_pipeline",
                           "device_scaling"}
    assert report["device"]["platform"] in ("cpu", "gpu") and report["device"]["name"]
    assert set(report["matmul_peak_gflops"]) == {"float32", "bfloat16"}
    assert min(report["matmul_peak_gflops"].values()) > 0
    if report["device"]["platform"] == "cpu":  # bfloat16 on a CPU is said to be no fast path
        assert "bfloat16 on CPU" in report["bfloat16_note"]
        assert report["bfloat16_note"] in printed
    # One result per dtype, in the order asked, each with the same network and peers.
    assert [result["dtype"] for result in report["results"]] == ["float32", "bfloat16"]
    assert "| mlp | 8 | float32 |" in printed and "| mlp | 8 | bfloat16 |" in printed
    for rounds, name in (("best rounds", "ratios"), ("medians", "ratios_median")):
        result = report["results"][0]
        assert (f"mlp @ 8 float32: ours / peer, {rounds}: train vs flax "
                f"{result[name]['train_vs_flax']:.2f}x") in printed
    for result in report["results"]:
        check_network_result(result, peers)
        check_augmented_step(result, printed)

    pipeline = report["input_pipeline"]
    assert pipeline["batches_per_epoch"] == 2 and pipeline["im_dim"] == [48, 48]
    for key in ("resident_img_s", "streamed_img_s", "loader_img_s"):
        assert pipeline[key] > 0
    assert {"streaming_cost_pct", "loader_share_of_step_pct"} <= set(pipeline)

    # Throughput per device count (forced CPU devices here); 8 images do not split across 3.
    scaling = report["device_scaling"]
    assert scaling["network"] == "mlp" and scaling["batch_size"] == 8
    one, two, three = scaling["rows"]
    assert (one["devices"], two["devices"], three["devices"]) == (1, 2, 3)
    assert one["train_scaling"] == 1.0 and one["eval_scaling"] == 1.0
    assert two["train_img_s"] > 0 and two["eval_img_s"] > 0
    assert two["train_scaling"] == two["train_img_s"] / one["train_img_s"]
    assert "batch_size=8 does not split evenly across 3 devices" in three["error"]
    assert "| 3 | " in printed and "devices (mlp @ 8" in printed


def check_network_result(result, peers):
    assert result["network"] == "mlp" and result["batch_size"] == 8
    assert result["params"] == 16 * 16 * 1024 + 2 * 1024 + 1024 * 7 + 7
    assert result["flops_per_image"] == {"forward": 2 * (256 * 1024 + 1024 * 7),
                                         "train": 2 * (2 * 256 * 1024 + 3 * 1024 * 7)}
    for kind in ("ours", *peers):
        figures = result["implementations"][kind]
        assert figures["params"] == result["params"]  # the peers are the same network
        for key in ("compile_s", "train_img_s", "train_img_s_median", "eval_img_s",
                    "eval_img_s_median", "train_pct_of_peak", "eval_pct_of_peak"):
            assert figures[key] > 0, (kind, key)
        assert figures["memory"]["process_peak_rss_bytes"] > 0
    assert result["implementations"]["ours"]["memory"]["train_step_bytes"] > 0
    assert set(result["ratios"]) == {f"{f}_vs_{p}" for f in ("train", "eval") for p in peers}
    ours = result["implementations"]["ours"]
    for figure in ("train", "eval"):
        for peer in peers:
            theirs = result["implementations"][peer]
            key = f"{figure}_vs_{peer}"
            assert result["ratios"][key] == (ours[f"{figure}_img_s"]
                                             / theirs[f"{figure}_img_s"])
            assert result["ratios_median"][key] == (ours[f"{figure}_img_s_median"]
                                                    / theirs[f"{figure}_img_s_median"])


def check_augmented_step(result, printed):
    """Our step with the default online augmentation, timed in the same rounds."""
    assert result["augment"] == cli.DEFAULT_AUGMENT
    plain, augmented = (result["implementations"][kind] for kind in ("ours", measure.AUGMENTED))
    assert augmented["params"] == plain["params"] and augmented["train_img_s"] > 0
    expected = 100 * (plain["train_img_s"] / augmented["train_img_s"] - 1)
    assert result["augment_cost_pct"] == pytest.approx(expected)
    assert (f"mlp @ 8 {result['dtype']}: online augmentation ({cli.DEFAULT_AUGMENT}) adds "
            f"{result['augment_cost_pct']:.1f} % to the training step") in printed
    assert f"| {measure.AUGMENTED} |" in printed


def test_a_missing_peer_is_reported_not_fatal(monkeypatch):
    monkeypatch.setattr(measure.importlib.util, "find_spec", lambda name: None)
    assert measure.available_peers(["torch"]) == {"torch": "torch is not installed"}


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--batch-sizes", "0"],
                                  ["--peers", "jax"], ["--devices", "0"],
                                  ["--dtypes", "float16"], ["--augment", "flipp"],
                                  ["--augment", "crop_to:40"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    if argv[0] == "--augment":  # one sentence naming the option and what to do
        message = capsys.readouterr().err
        assert "--augment" in message
        assert ("did you mean 'flip'" in message if argv[1] == "flipp"
                else "use crop:P" in message)


def test_breakdown_times_every_layer_and_sums_the_op_classes_to_the_step():
    from utils.benchmark import breakdown

    result = breakdown.measure("tiny_net:tiny", 8, "float32", rounds=1, im_dim=(24, 24))
    assert result["im_dim"] == (24, 24)
    pieces = [(layer.split()[0], kind) for layer, kind, _ in result["rows"]]
    # tiny: conv 4 (pooled), two more poolings, flatten, hidden 8... (the launcher's default
    # hidden size), softmax: the first conv has no input gradient to compute.
    assert pieces[:3] == [("conv", "conv forward"), ("conv", "conv weight gradient"),
                          ("conv", "conv layer (forward + backward)")]
    assert [kind for _, kind in pieces[3:]] == ["dense layer (forward + backward)"] * 2 + [
        "SGD update", "whole training step"]
    assert all(ms > 0 for _, _, ms in result["rows"])
    classes = breakdown.op_classes(result["rows"])
    parts = {kind: ms for kind, ms in classes.items() if kind != "whole training step"}
    assert sum(parts.values()) == pytest.approx(classes["whole training step"])
    convs = sum(ms for _, kind, ms in result["rows"] if kind.startswith("conv ")
                and "layer" not in kind)
    assert classes["convolutions"] == pytest.approx(convs)
    printed = breakdown.format_breakdown("tiny", 8, "float32", result)
    assert printed.startswith("tiny @ 8 float32, 24x24 inputs: one training step")
    assert "| op class | ms | % of the step |" in printed


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's bfloat16 layers")
def test_breakdown_in_bfloat16_times_a_narrow_layers_convolution_in_float32():
    # such a layer convolves in float32 (cpu_bfloat16.float32_layer): its pieces must too,
    # or the tails (the whole layer minus its pieces) would be wrong
    from utils.benchmark import breakdown

    network = build_convnet("narrow", [Conv(8), Pool(), Conv(16), Pool()], im_dim=[8, 8])
    pieces = breakdown.layer_pieces(network, 2, jnp.bfloat16)
    convs = [args for _, kind, _, args in pieces
             if kind.startswith("conv ") and "layer" not in kind]
    assert len(convs) == 2 * 3 - 1  # the first layer has no input gradient
    assert {args[0].dtype for args in convs} == {jnp.dtype(jnp.float32)}


def test_breakdown_refuses_an_unknown_network_in_one_sentence(capsys):
    from utils.benchmark import breakdown

    with pytest.raises(SystemExit):
        breakdown.main(["Q"])
    # The valid names: the built-in ones, then any a test module registered.
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "python -m utils.benchmark.breakdown: error: unknown network 'Q'; valid: A, B, C, D, "
        "S, V, F, mlp")
    with pytest.raises(SystemExit):
        breakdown.main(["V", "--im-dim", "4", "4"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m utils.benchmark.breakdown: error: network V pools 2x2 4 times, so it needs "
        "inputs of at least 16x16; got 4x4")


class _ProfilerEvent(NamedTuple):  # what torch.profiler's key_averages yields, in part
    key: str
    input_shapes: list
    cpu_time_total: float  # microseconds, over all the profiled steps


def test_the_peers_convolutions_are_credited_to_the_layer_of_their_shape():
    from utils.benchmark.peers.torch_profile import conv_milliseconds, median_times

    events = [  # three profiled steps; a forward reads (input, weight), a backward (grad, ...)
        _ProfilerEvent("aten::convolution", [[8, 1, 48, 48], [32, 1, 3, 3], [], [], []], 6000.0),
        _ProfilerEvent("aten::convolution_backward",
                       [[8, 32, 48, 48], [8, 1, 48, 48], [32, 1, 3, 3], [], []], 9000.0),
        _ProfilerEvent("aten::convolution", [[8, 32, 24, 24], [64, 32, 3, 3]], 3000.0),
        _ProfilerEvent("aten::native_batch_norm", [[8, 32, 48, 48], [32], [32]], 50000.0),
    ]
    assert conv_milliseconds(events, steps=3) == {
        (1, 48, 48, 32, 3, 3): {"forward": 2.0, "backward": 3.0},
        (32, 24, 24, 64, 3, 3): {"forward": 1.0, "backward": 0.0}}
    shape = (1, 48, 48, 32, 3, 3)
    steps = [{shape: {"forward": ms, "backward": 10 * ms}} for ms in (3.0, 90.0, 1.0)]
    assert median_times(steps) == {shape: {"forward": 3.0, "backward": 30.0}}


def test_the_peer_comparison_pairs_each_conv_layer_with_its_shapes_time():
    from utils.benchmark import breakdown
    from utils.models.networks import get_network

    assert breakdown.conv_layer_shapes(get_network("S", im_dim=[40, 40])) == [
        ("conv 32@3x3 BN pool 2x2 relu drop 0.1", (1, 40, 40, 32, 3, 3)),
        ("conv 64@3x3 BN pool 2x2 relu drop 0.2", (32, 20, 20, 64, 3, 3)),
        ("conv 128@3x3 BN pool 2x2 relu drop 0.3", (64, 10, 10, 128, 3, 3)),
        ("conv 256@3x3 BN pool 2x2 relu drop 0.4", (128, 5, 5, 256, 3, 3))]
    first, twin = (1, 8, 8, 4, 3, 3), (4, 8, 8, 4, 3, 3)
    # two layers of one name and shape: each keeps its own pieces, the peer's time is shared
    rows = [("conv 4", "conv forward", 1.0), ("conv 4", "conv weight gradient", 2.0),
            ("conv 4", "conv layer (forward + backward)", 5.0),
            ("conv 4 b", "conv forward", 3.0), ("conv 4 b", "conv input gradient", 4.0),
            ("conv 4 b", "conv weight gradient", 5.0),
            ("conv 4 b", "conv layer (forward + backward)", 14.0),
            ("conv 4 b", "conv forward", 6.0), ("conv 4 b", "conv input gradient", 7.0),
            ("conv 4 b", "conv weight gradient", 8.0),
            ("conv 4 b", "conv layer (forward + backward)", 25.0),
            ("hidden 8", "dense layer (forward + backward)", 0.5),
            ("network", "whole training step", 50.0)]
    peer = {"convs": {first: {"forward": 0.5, "backward": 1.5},
                      twin: {"forward": 4.0, "backward": 8.0}},
            "step_ms": 40.0, "name": "PyTorch (NCHW)", "version": "2", "threads": 2,
            "profiled_steps": 3}
    shapes = [("conv 4", first), ("conv 4 b", twin), ("conv 4 b", twin)]
    assert breakdown.peer_comparison(rows, shapes, peer) == [
        ("conv 4", 1.0, 2.0, 0.5, 1.5), ("conv 4 b", 3.0, 9.0, 2.0, 4.0),
        ("conv 4 b", 6.0, 15.0, 2.0, 4.0), ("all conv layers", 10.0, 26.0, 4.5, 9.5)]
    classes = breakdown.op_classes(rows)
    assert classes["convolutions"] == 36.0
    assert classes["conv-layer tails (BN, pooling, activation, dropout)"] == 2.0 + 2.0 + 4.0
    printed = breakdown.format_peer_comparison(rows, shapes, peer)
    assert "| conv 4 | 1.0 | 2.0 | 0.5 | 1.5 | 0.67x |" in printed
    assert printed.splitlines()[-1] == (
        "| whole training step (best round; PyTorch (NCHW)'s unprofiled) | 50.0 | | 40.0 | "
        "| 0.80x |")


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (the bench extra)")
def test_the_peers_profile_times_every_conv_layer_of_the_network():
    from utils.benchmark import breakdown
    from utils.benchmark.peers.torch_profile import profile_steps
    from utils.models.networks import get_network

    network = get_network("S", im_dim=[16, 16])
    peer = profile_steps(network, 4, channels_last=True, rounds=1, steps=1)
    assert set(peer["convs"]) == {shape for _, shape in breakdown.conv_layer_shapes(network)}
    assert all(times["forward"] > 0 and times["backward"] > 0
               for times in peer["convs"].values())
    assert peer["step_ms"] > 0 and peer["name"] == "PyTorch channels_last"


def test_breakdown_refuses_a_peer_it_cannot_compare(capsys, monkeypatch):
    from utils.benchmark import breakdown

    with pytest.raises(SystemExit):
        breakdown.main(["S", "--peer", "torch", "--dtype", "bfloat16"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m utils.benchmark.breakdown: error: --peer compares float32 steps: leave "
        "--dtype out")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else find_spec(name, *args))
    with pytest.raises(SystemExit):
        breakdown.main(["S", "--peer", "torch_cl"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m utils.benchmark.breakdown: error: --peer needs PyTorch, which is not "
        "installed: pip install -e '.[bench]'")


def test_distill_times_the_step_without_a_teacher_and_with_each_view_choice(tmp_path, capsys):
    from test_distillation import untrained_model

    from utils.benchmark import distill

    teacher = str(untrained_model(tmp_path / "teacher.msgpack"))  # mirror variant: 2 views
    result = distill.measure("tiny_net:tiny", teacher, 4, rounds=1, n_steps=1)
    assert list(result) == ["none", "plain", "model"]
    assert [row["forwards"] for row in result.values()] == [0, 1, 2]
    assert all(row["best_ms"] > 0 and row["compile_s"] > 0 for row in result.values())
    table = distill.report(result, "tiny", teacher, 4).splitlines()
    assert [line.split(" | ")[0] for line in table[3:]] == [
        "| none", "| distill_views=plain", "| distill_views=model"]
    assert distill.main(["--teacher", str(tmp_path / "nowhere"), "--network", "tiny_net:tiny",
                         "--batch-size", "4"]) == 2
    assert capsys.readouterr().err == f"error: teacher {tmp_path / 'nowhere'}: no such file\n"


def test_a_run_stopped_midway_keeps_what_it_measured_in_its_json(tmp_path, monkeypatch):
    """Each measured network is in the JSON as soon as it is measured (a device's time limit
    can stop the run), marked partial; the finished run's report replaces it."""
    measured = []

    def one_network(name, batch_size, dtype, *args, **kwargs):
        if measured:
            raise KeyboardInterrupt  # the time limit, after the first measurement
        measured.append(name)
        return {"network": name, "batch_size": batch_size, "dtype": dtype}, [1.0]

    monkeypatch.setattr(cli, "measure_network", one_network)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--networks", "mlp", "--batch-sizes", "8", "--dtypes", "float32",
                  "bfloat16", "--json", str(out), "--no-pipeline"])
    report = json.loads(out.read_text())
    assert report == {"command": "python -m utils.benchmark --networks mlp --batch-sizes 8 "
                                 f"--dtypes float32 bfloat16 --json {out} --no-pipeline",
                      "partial": True,
                      "results": [{"network": "mlp", "batch_size": 8, "dtype": "float32"}]}
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary left


def test_paired_starts_each_variant_in_a_process_under_its_setting(capsys, monkeypatch):
    # XLA reads XLA_FLAGS once, when JAX starts its backend: a variant built in the running
    # process would run with the process's kernels whatever its setting said.
    from utils.benchmark import paired

    monkeypatch.setenv("FER_PAIRED_PROBE", "before")
    classic = "--xla_cpu_experimental_ynn_fusion_type="
    ynn = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    assert paired.main(["mlp", "--env", f"XLA_FLAGS={classic},FER_PAIRED_PROBE=a",
                        f"XLA_FLAGS={ynn}", "--dtypes", "float32", "bfloat16", "--batch-size",
                        "8", "--im-dim", "16", "16", "--rounds", "2", "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    first = f"XLA_FLAGS={classic},FER_PAIRED_PROBE=a,dtype=float32"
    second = f"XLA_FLAGS={ynn},dtype=bfloat16"
    assert "| training |" in printed and "| inference |" in printed
    assert f"speed-up of {second} over {first}" in printed
    assert f"{first}'s process: XLA_FLAGS {classic}, compute dtype float32\n" in printed
    assert printed.rstrip().endswith(f"{second}'s process: XLA_FLAGS {ynn}, compute dtype "
                                     f"bfloat16")
    assert os.environ["FER_PAIRED_PROBE"] == "before"  # each setting restored after its start
    assert paired.paired_ratios([3, 1, 2], [1, 1, 1]) == {"median": 2, "q1": 1.0, "q3": 3.0}
    assert paired.variant_names([{"A": "1"}, {"A": "2"}], ["float32"] * 2) == ["A=1", "A=2"]
    with pytest.raises(SystemExit):
        paired.main(["mlp", "--env", "FER_WINOGRAD=1", "FER_WINOGRAD=1"])
    assert "the two variants are the same: give two settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired.main(["mlp", "--env", "FER_WINOGRAD", "FER_WINOGRAD=1"])
    assert "--env setting 'FER_WINOGRAD' is not NAME=VALUE" in capsys.readouterr().err
