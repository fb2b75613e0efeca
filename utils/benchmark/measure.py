"""The coordinator: workers set up one at a time, then timed in interleaved rounds; the
figures derived from the rounds (best and median images/s, shares of the matmul peak, our
ratios to the peers)."""
from __future__ import annotations

import importlib.util
import statistics

from utils.benchmark.process import WorkerProcess

PEERS = ("flax", "torch", "torch_cl")  # torch_cl: PyTorch with channels_last activations
AUGMENTED = "ours+augment"  # our step with online augmentation inside it
EVAL_BATCHES_PER_STEP = 3  # a round times this many inference batches per training step


def available_peers(requested) -> dict[str, str | None]:
    """peer -> None if it can run, else why not."""
    modules = {"flax": "flax", "torch": "torch", "torch_cl": "torch"}
    return {peer: None if importlib.util.find_spec(modules[peer]) else
            f"{modules[peer]} is not installed" for peer in requested}


def _throughput(seconds: list[float], images: int) -> tuple[float, float]:
    """(best, median) images per second over rounds."""
    return images / min(seconds), images / statistics.median(seconds)


def _time_round(worker, times: dict, steps: int) -> None:
    """One round of a worker: ``steps`` training steps, then 3x as many inference batches."""
    times["train"].append(worker.call("train", steps))
    times["eval"].append(worker.call("eval", EVAL_BATCHES_PER_STEP * steps))


def _round_figures(times: dict, steps: int, batch_size: int) -> dict:
    """Best and median training and inference images/s over the rounds of ``_time_round``."""
    train_best, train_median = _throughput(times["train"], steps * batch_size)
    eval_best, eval_median = _throughput(times["eval"],
                                         EVAL_BATCHES_PER_STEP * steps * batch_size)
    return {"train_img_s": train_best, "train_img_s_median": train_median,
            "eval_img_s": eval_best, "eval_img_s_median": eval_median}


def measure_network(name: str, batch_size: int, dtype: str, im_dim, peers, rounds: int,
                    steps: int, matmul_size: int | None, log,
                    augment: str | None = None) -> tuple[dict, list[float]]:
    """One network at one batch size in one compute dtype: all implementations, interleaved
    rounds; and the seconds of the matmul in that dtype, timed in the same rounds. With
    ``augment`` (an ``augment=`` spec), also our step with that online augmentation inside."""
    label = f"{name} @ {batch_size} {dtype}"
    config = {"network": name, "batch_size": batch_size, "dtype": dtype, "im_dim": list(im_dim),
              "matmul_size": matmul_size}
    result = {"network": name, "batch_size": batch_size, "dtype": dtype, "im_dim": list(im_dim),
              "augment": augment, "implementations": {}}
    workers: dict = {}
    try:
        _start_workers(label, config, peers, workers, result, log)
        if augment:
            log(f"  {label}: ours with augment={augment}: compiling")
            workers[AUGMENTED] = WorkerProcess("ours", dict(config, augment=augment))
        times, peak_seconds = _timed_rounds(label, workers, result, rounds, steps, log)
        for kind, worker in workers.items():
            result["implementations"][kind] = {
                "params": worker.info["params"], "compile_s": worker.info["compile_s"],
                "eval_compile_s": worker.info.get("eval_compile_s"),
                **_round_figures(times[kind], steps, batch_size),
                "memory": worker.call("memory_report"),
                **{key: worker.info[key] for key in ("threads", "version", "device")
                   if kind.startswith("torch") and key in worker.info}}
    finally:
        for worker in workers.values():
            worker.stop()
    return result, peak_seconds


def _start_workers(label: str, config: dict, peers, workers: dict, result: dict, log) -> None:
    """Ours first (it reports the device, FLOPs and parameters), then each available peer; a
    peer that fails is reported in ``result``, not fatal."""
    log(f"  {label}: ours: compiling")
    workers["ours"] = WorkerProcess("ours", config)
    info = workers["ours"].info
    config["platform"] = info["device"]["platform"]
    result.update(params=info["params"], thesis_conv_params=info["thesis_conv_params"],
                  flops_per_image=info["flops_per_image"], device=info["device"],
                  matmul_size=info["matmul_size"], host_tuning=info["host_tuning"])
    for peer, unavailable in peers.items():
        if unavailable:
            result["implementations"][peer] = {"error": unavailable}
            continue
        log(f"  {label}: {peer}: compiling")
        try:
            workers[peer] = WorkerProcess(peer, dict(config, channels_last=peer == "torch_cl"))
        except RuntimeError as error:
            result["implementations"][peer] = {"error": str(error).strip()}
            log(f"    {peer} failed: {str(error).splitlines()[0]}")


def _timed_rounds(label: str, workers: dict, result: dict, rounds: int, steps: int,
                  log) -> tuple[dict, list[float]]:
    times = {kind: {"train": [], "eval": []} for kind in workers}
    peak_seconds = []
    for number in range(rounds):
        log(f"  {label}: round {number + 1}/{rounds}")
        for kind, worker in list(workers.items()):
            try:
                _time_round(worker, times[kind], steps)
            except RuntimeError as error:
                if kind == "ours":
                    raise
                result["implementations"][kind] = {"error": str(error).strip()}
                workers.pop(kind).stop()
                times.pop(kind)
        peak_seconds.append(workers["ours"].call("matmul", 3))
    return times, peak_seconds


def measure_pipeline(name: str, batch_size: int, dataset: str, split: str,
                     batches_per_epoch: int | None, rounds: int, log) -> dict:
    """Training epochs fed from HDF5 (streamed) and from device memory, and the loader alone,
    at the dataset's image size."""
    config = {"network": name, "batch_size": batch_size, "dataset": dataset, "split": split,
              "batches_per_epoch": batches_per_epoch}
    log(f"  input pipeline: {name} @ {batch_size} on {dataset} ({split})")
    worker = WorkerProcess("pipeline", config)
    try:
        seconds = {"resident": [], "streamed": [], "loader": []}
        for number in range(rounds):
            log(f"  input pipeline: round {number + 1}/{rounds}")
            seconds["resident"].append(worker.call("train_epoch", "resident"))
            seconds["streamed"].append(worker.call("train_epoch", "streamed"))
            seconds["loader"].append(worker.call("read_epoch", "streamed"))
    finally:
        worker.stop()
    images = worker.info["images_per_epoch"]
    resident, streamed, loader = (images / min(seconds[mode])
                                  for mode in ("resident", "streamed", "loader"))
    return {"network": name, "batch_size": batch_size, "im_dim": worker.info["im_dim"],
            "dataset": dataset, "split": split,
            "batches_per_epoch": worker.info["batches_per_epoch"], "rounds": rounds,
            "resident_img_s": resident, "streamed_img_s": streamed, "loader_img_s": loader,
            "streaming_cost_pct": 100.0 * (1.0 - streamed / resident),
            "loader_share_of_step_pct": 100.0 * resident / loader}


def measure_device_scaling(name: str, batch_size: int, im_dim, counts, rounds: int,
                           steps: int, log) -> dict:
    """Our training and inference on 1, 2, ... devices (the launcher's data parallelism), in
    interleaved rounds. On a CPU, counts beyond one are forced host devices sharing the same
    cores: the figures then show the cost of the sharding, not a speed-up."""
    config = {"network": name, "batch_size": batch_size, "im_dim": list(im_dim)}
    workers, rows = {}, {}
    try:
        for count in counts:
            log(f"  devices: {name} @ {batch_size} on {count} device(s): compiling")
            try:
                workers[count] = WorkerProcess("ours", dict(config, devices=count,
                                                            force_host_devices=max(counts)))
            except RuntimeError as error:
                rows[count] = {"devices": count, "error": str(error).strip()}
        times = {count: {"train": [], "eval": []} for count in workers}
        for number in range(rounds):
            log(f"  devices: round {number + 1}/{rounds}")
            for count, worker in workers.items():
                _time_round(worker, times[count], steps)
        for count, worker in workers.items():
            rows[count] = {"devices": count, **_round_figures(times[count], steps, batch_size),
                           "platform": worker.info["device"]["platform"]}
    finally:
        for worker in workers.values():
            worker.stop()
    table = [rows[count] for count in sorted(counts)]
    base = table[0] if "error" not in table[0] else None  # the smallest count
    for row in table:
        if base and "error" not in row:
            row["train_scaling"] = row["train_img_s"] / base["train_img_s"]
            row["eval_scaling"] = row["eval_img_s"] / base["eval_img_s"]
    return {"network": name, "batch_size": batch_size, "im_dim": list(im_dim), "rows": table}


def add_derived_figures(results: list[dict], peak_gflops: dict) -> None:
    """Shares of the matmul peak (of each result's dtype) and our ratios to the peers."""
    for result in results:
        flops = result.get("flops_per_image")
        impls = result["implementations"]
        peak = peak_gflops[result["dtype"]]
        for figures in impls.values():
            if "train_img_s" in figures and flops:
                figures["train_pct_of_peak"] = (100.0 * figures["train_img_s"] * flops["train"]
                                                / (peak * 1e9))
                figures["eval_pct_of_peak"] = (100.0 * figures["eval_img_s"]
                                               * flops["forward"] / (peak * 1e9))
        ours = impls.get("ours", {})
        # Of the best rounds (the table's figures) and of the medians (what a bar is read on)
        for name, suffix in (("ratios", ""), ("ratios_median", "_median")):
            ratios = {}
            for peer in PEERS:
                theirs = impls.get(peer, {})
                for figure in ("train", "eval"):
                    key = f"{figure}_img_s{suffix}"
                    if key in ours and key in theirs:
                        ratios[f"{figure}_vs_{peer}"] = ours[key] / theirs[key]
            result[name] = ratios
        augmented = impls.get(AUGMENTED, {})
        if "train_img_s" in augmented and "train_img_s" in ours:
            # The step's extra time with augmentation, as a share of the step without it.
            result["augment_cost_pct"] = 100.0 * (ours["train_img_s"] / augmented["train_img_s"]
                                                  - 1.0)
            result["augment_cost_pct_median"] = 100.0 * (
                ours["train_img_s_median"] / augmented["train_img_s_median"] - 1.0)
