"""The benchmark tool end to end in quick mode (tiny shapes); no timing is asserted."""
import importlib.util
import os
import json

import pytest

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
