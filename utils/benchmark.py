"""How fast each network trains and infers on this machine, against flax.linen and PyTorch.

    python -m utils.benchmark --networks A B C D mlp --batch-sizes 128 --im-dim 48 48 \\
        --json benchmark.json
    python -m utils.benchmark --quick            # fewer, shorter rounds (a smoke test)
    python -m utils.benchmark --devices 1 2 4    # also: the batch split across devices

For every network and batch size it reports the true parameter count, FLOPs per image
(``utils.flops``: forward, and forward + backward), the compile time, training images/s (the
product's own step, ``utils.training.Steps.train``: forward, backward, SGD update, batch norm,
dropout), inference images/s (``Steps.eval``), each as a share of the float32 matrix-multiply
peak measured in the same run, and memory: the compiled step's working set (XLA's buffer
assignment: arguments + results + temporaries - donated) and each process's peak resident
memory (on GPU: the device's peak bytes in use). The same network written with flax.linen
and, when installed, PyTorch (``utils.peers``; twice: NCHW, its default, and channels_last,
its advice for conv nets on CPU) runs on the same batch of the same data with SGD, and our
ratio to each is printed. The input pipeline is measured too: one network
trained from the HDF5 file (streamed by ``loaders.batches.BatchLoader``) against the same
batches held in device memory (``shared=True``), and the loader alone.

Method: each implementation runs in a worker process of its own (its own memory figures, no
threads disturbing another's), set up and compiled one at a time; then they take turns,
``--rounds`` times: each times ``--steps`` training steps, then 3x as many inference
batches, and the matmul peak is timed in the same rounds. Figures are the best round, the one
least disturbed by anything else running on the machine (medians are in the JSON). JAX is
started in the workers only, so nothing is held on a GPU by the coordinator. The workers get
the product's process settings (``utils.host_tuning``) unless ``--host-tuning off``.

JSON (``--json``): {"command", "device", "host_tuning", "settings", "matmul_peak_gflops",
"results": [{"network", "batch_size", "im_dim", "params", "thesis_conv_params",
"flops_per_image": {"forward", "train"}, "implementations": {"ours" | "flax" | "torch" |
"torch_cl": {"params", "compile_s", "train_img_s", "train_img_s_median", "eval_img_s",
"eval_img_s_median", "train_pct_of_peak", "eval_pct_of_peak", "memory": {...}} or
{"error"}}, "ratios": {"train_vs_<peer>", "eval_vs_<peer>" for each peer measured}}],
"input_pipeline": {"network", "batch_size", "dataset", "split", "batches_per_epoch",
"resident_img_s", "streamed_img_s", "loader_img_s", "streaming_cost_pct",
"loader_share_of_step_pct"} or null, "device_scaling": {"network", "batch_size",
"im_dim", "rows": [{"devices", "train_img_s", "train_img_s_median", "eval_img_s",
"eval_img_s_median", "train_scaling", "eval_scaling", "platform"} or {"devices", "error"}]}
or null}.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import traceback

PEERS = ("flax", "torch", "torch_cl")  # torch_cl: PyTorch with channels_last activations
MATMUL_SIZE = {"cpu": 2048, "gpu": 8192}
EVAL_BATCHES_PER_STEP = 3  # a round times this many inference batches per training step
SEED = 0


# ============================================================================================
# Workers (child processes; JAX and PyTorch are imported here only)
# ============================================================================================
def _batch_arrays(batch_size: int, im_dim):
    """The benchmark's data: the same images and labels for every implementation."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.random((batch_size, *im_dim, 1), dtype=np.float32)
    y = rng.integers(0, 7, batch_size).astype(np.int32)
    return x, y


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _device_report() -> dict:
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        model, memory_kib = platform.processor() or "unknown CPU", None
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                             if line.startswith("model name"))
            with open("/proc/meminfo") as meminfo:
                memory_kib = int(next(line.split()[1] for line in meminfo
                                      if line.startswith("MemTotal")))
        except (OSError, StopIteration):
            pass
        return {"platform": "cpu", "name": model, "cores": os.cpu_count(),
                "usable_cores": len(os.sched_getaffinity(0)),
                "memory_gib": round(memory_kib / 2 ** 20, 1) if memory_kib else None}
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return {"platform": "gpu", "name": device.device_kind, "count": len(jax.devices()),
            "memory_gib": round(limit / 2 ** 30, 1) if limit else None}


def _step_memory(compiled) -> int | None:
    """Bytes XLA assigned to one call: arguments + results + temporaries - donated."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


class _JaxWorker:
    """What ours and the flax peer share: timing of donated train steps and eval batches."""

    def _finish_setup(self, train_args, eval_args):
        import jax

        started = time.perf_counter()
        compiled = self.train_fn.lower(*train_args).compile()
        self.compile_s = time.perf_counter() - started
        started = time.perf_counter()
        compiled_eval = self.eval_fn.lower(*eval_args).compile()
        self.eval_compile_s = time.perf_counter() - started
        self.memory = {"train_step_bytes": _step_memory(compiled),
                       "eval_step_bytes": _step_memory(compiled_eval)}
        self.train(1)
        self.eval(1)
        self.device = jax.devices()[0]

    def memory_report(self, _=None) -> dict:
        report = dict(self.memory, process_peak_rss_bytes=_peak_rss_bytes())
        if self.device.platform != "cpu":
            report["device_peak_bytes"] = (self.device.memory_stats() or {}).get(
                "peak_bytes_in_use")
        return report


class OursWorker(_JaxWorker):
    def __init__(self, config):
        import jax
        import jax.numpy as jnp

        from utils import host_tuning
        from utils.flops import network_flops
        from utils.networks import get_network
        from utils.optim import make_optimizer, make_schedule
        from utils.training import Steps

        self.jax, self.jnp = jax, jnp
        network = get_network(config["network"], im_dim=list(config["im_dim"]))
        self.steps = Steps(network, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1))
        self.state = self.steps.init_state(SEED, SEED + 1)
        x, y = _batch_arrays(config["batch_size"], config["im_dim"])
        if config.get("devices"):  # the launcher's data parallelism over this many devices
            from utils.parallel import data_parallel

            parallel = data_parallel(config["devices"], config["batch_size"])
            self.state = parallel.replicate(self.state)
            self.x, self.y = (jax.device_put(x, parallel.batch),
                              jax.device_put(y, parallel.batch))
        else:
            self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.train_fn, self.eval_fn = self.steps.train, self.steps.eval
        self._finish_setup((self.state, self.x, self.y),
                           (self.state.params, self.state.bn_state, self.x))
        flops = network_flops(network)
        platform_name = "cpu" if self.device.platform == "cpu" else "gpu"
        size = config.get("matmul_size") or MATMUL_SIZE[platform_name]
        self.matrix = jax.random.normal(jax.random.key(SEED), (size, size), jnp.float32)
        self.matmul_fn = jax.jit(lambda a: a @ a)
        self.matmul_fn(self.matrix).block_until_ready()
        self.info = {"params": network.param_count(),
                     "thesis_conv_params": network.thesis_conv_params,
                     "flops_per_image": {"forward": flops.forward, "train": flops.train},
                     "compile_s": self.compile_s, "eval_compile_s": self.eval_compile_s,
                     "device": _device_report(), "matmul_size": size,
                     "host_tuning": host_tuning.applied()}

    def train(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.train_fn(self.state, self.x, self.y)
        self.jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - started

    def eval(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            logits = self.eval_fn(self.state.params, self.state.bn_state, self.x)
        logits.block_until_ready()
        return time.perf_counter() - started

    def matmul(self, repeats: int) -> float:
        """Best seconds of one float32 size^3 product over ``repeats`` tries."""
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            self.matmul_fn(self.matrix).block_until_ready()
            best = min(best, time.perf_counter() - started)
        return best


class FlaxWorker(_JaxWorker):
    def __init__(self, config):
        import jax

        from utils.networks import get_network
        from utils.peers import peer_spec
        from utils.peers.flax_nets import FlaxSteps

        self.jax = jax
        spec = peer_spec(get_network(config["network"], im_dim=list(config["im_dim"])))
        self.steps = FlaxSteps(spec)
        x, y = _batch_arrays(config["batch_size"], config["im_dim"])
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.state = self.steps.init_state(SEED, x.shape)
        self.train_fn, self.eval_fn = self.steps.train, self.steps.eval
        self._finish_setup((self.state, self.x, self.y), (self.state, self.x))
        self.info = {"params": sum(leaf.size for leaf in jax.tree_util.tree_leaves(
            self.state.params)), "compile_s": self.compile_s,
            "eval_compile_s": self.eval_compile_s}

    def train(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.state, cost = self.train_fn(self.state, self.x, self.y)
        self.jax.block_until_ready((self.state, cost))
        return time.perf_counter() - started

    def eval(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            logits = self.eval_fn(self.state, self.x)
        logits.block_until_ready()
        return time.perf_counter() - started


class TorchWorker:
    def __init__(self, config):
        import torch

        from utils.networks import get_network
        from utils.peers import peer_spec
        from utils.peers.torch_nets import TorchSteps

        device = "cuda" if config["platform"] == "gpu" and torch.cuda.is_available() else "cpu"
        spec = peer_spec(get_network(config["network"], im_dim=list(config["im_dim"])))
        self.steps = TorchSteps(spec, device=device, seed=SEED,
                                channels_last=config["channels_last"])
        x, y = _batch_arrays(config["batch_size"], config["im_dim"])
        self.x = self.steps.input(x)
        self.y = torch.from_numpy(y).long().to(device)
        started = time.perf_counter()
        self.train(1)  # eager: the first step (kernel selection, allocations) as its "compile"
        first_step_s = time.perf_counter() - started
        self.eval(1)
        self.info = {"params": self.steps.param_count(), "compile_s": first_step_s,
                     "threads": torch.get_num_threads(), "version": torch.__version__,
                     "device": device}

    def train(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.steps.train(self.x, self.y)
        self.steps.synchronize()
        return time.perf_counter() - started

    def eval(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.steps.eval(self.x)
        self.steps.synchronize()
        return time.perf_counter() - started

    def memory_report(self, _=None) -> dict:
        import torch

        report = {"process_peak_rss_bytes": _peak_rss_bytes()}
        if self.steps.device.type == "cuda":
            report["device_peak_bytes"] = torch.cuda.max_memory_allocated(self.steps.device)
        return report


class PipelineWorker:
    """Our training step fed by BatchLoader: streamed from HDF5, or held in device memory."""

    def __init__(self, config):
        import jax

        from loaders.batches import BatchLoader
        from utils.networks import get_network
        from utils.optim import make_optimizer, make_schedule
        from utils.training import Steps

        self.jax = jax
        self.loaders = {mode: BatchLoader(config["dataset"], config["split"],
                                          config["batch_size"], seed=SEED,
                                          shared=mode == "resident")
                        for mode in ("resident", "streamed")}
        im_dim = list(self.loaders["resident"].image_shape)  # the dataset's, not --im-dim
        network = get_network(config["network"], im_dim=im_dim)
        self.steps = Steps(network, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1))
        self.state = self.steps.init_state(SEED, SEED + 1)
        self.n_batches = min(config["batches_per_epoch"] or self.loaders["resident"].n_batches,
                             self.loaders["resident"].n_batches)
        self.epoch = 0
        self.train_epoch("resident")  # compiles the step (and the loader's gather)
        self.info = {"batches_per_epoch": self.n_batches, "im_dim": im_dim,
                     "images_per_epoch": self.n_batches * config["batch_size"]}

    def _batches(self, mode: str):
        self.epoch += 1
        for number, batch in enumerate(self.loaders[mode].batches(self.epoch)):
            if number == self.n_batches:
                return
            yield batch

    def train_epoch(self, mode: str) -> float:
        started = time.perf_counter()
        for batch in self._batches(mode):
            self.state, metrics = self.steps.train(self.state, batch.x, batch.y)
        self.jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - started

    def read_epoch(self, mode: str) -> float:
        """The loader alone: every batch of an epoch delivered to the device, no training."""
        started = time.perf_counter()
        for batch in self._batches(mode):
            batch.x.block_until_ready()
        return time.perf_counter() - started


WORKERS = {"ours": OursWorker, "flax": FlaxWorker, "torch": TorchWorker,
           "torch_cl": TorchWorker, "pipeline": PipelineWorker}


def _serve(connection, kind: str, config: dict) -> None:
    """Worker process: build ``kind``, then answer (method, argument) calls until 'stop'."""
    try:
        from utils import host_tuning

        host_tuning.apply()  # the product's settings (none when the coordinator said off)
        if config.get("force_host_devices"):  # before JAX starts: CPU devices to spread over
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_force_host_platform_device_count="
                                       f"{config['force_host_devices']}").strip()
        worker = WORKERS[kind](config)
        connection.send(("ok", worker.info))
        while True:
            method, argument = connection.recv()
            if method == "stop":
                return
            connection.send(("ok", getattr(worker, method)(argument)))
    except BaseException as error:  # reported to the coordinator, which goes on without us
        connection.send(("error", f"{type(error).__name__}: {error}\n"
                                  f"{traceback.format_exc(limit=4)}"))


class WorkerProcess:
    def __init__(self, kind: str, config: dict):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, kind, config), daemon=True)
        self.process.start()
        child.close()
        self.info = self._answer()

    def _answer(self):
        try:
            status, value = self.connection.recv()
        except EOFError:
            raise RuntimeError(f"worker died (exit code {self.process.exitcode})") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def call(self, method: str, argument=None):
        self.connection.send((method, argument))
        return self._answer()

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


# ============================================================================================
# Coordinator
# ============================================================================================
def _available_peers(requested) -> dict[str, str | None]:
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


def measure_network(name: str, batch_size: int, im_dim, peers, rounds: int, steps: int,
                    matmul_size: int | None, log) -> tuple[dict, list[float]]:
    """One network at one batch size: all implementations, interleaved rounds."""
    config = {"network": name, "batch_size": batch_size, "im_dim": list(im_dim),
              "matmul_size": matmul_size}
    workers, result = {}, {"network": name, "batch_size": batch_size, "im_dim": list(im_dim),
                           "implementations": {}}
    peak_seconds: list[float] = []
    try:
        log(f"  {name} @ {batch_size}: ours: compiling")
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
            log(f"  {name} @ {batch_size}: {peer}: compiling")
            try:
                workers[peer] = WorkerProcess(peer,
                                              dict(config, channels_last=peer == "torch_cl"))
            except RuntimeError as error:
                result["implementations"][peer] = {"error": str(error).strip()}
                log(f"    {peer} failed: {str(error).splitlines()[0]}")
        times = {kind: {"train": [], "eval": []} for kind in workers}
        for number in range(rounds):
            log(f"  {name} @ {batch_size}: round {number + 1}/{rounds}")
            for kind, worker in list(workers.items()):
                try:
                    _time_round(worker, times[kind], steps)
                except RuntimeError as error:
                    if kind == "ours":
                        raise
                    result["implementations"][kind] = {"error": str(error).strip()}
                    workers.pop(kind).stop()
            peak_seconds.append(workers["ours"].call("matmul", 3))
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


def add_derived_figures(results: list[dict], peak_gflops: float) -> None:
    """Shares of the matmul peak and our ratios to the peers."""
    for result in results:
        flops = result.get("flops_per_image")
        impls = result["implementations"]
        for figures in impls.values():
            if "train_img_s" in figures and flops:
                figures["train_pct_of_peak"] = (100.0 * figures["train_img_s"] * flops["train"]
                                                / (peak_gflops * 1e9))
                figures["eval_pct_of_peak"] = (100.0 * figures["eval_img_s"]
                                               * flops["forward"] / (peak_gflops * 1e9))
        ratios = {}
        ours = impls.get("ours", {})
        for peer in PEERS:
            theirs = impls.get(peer, {})
            for figure in ("train", "eval"):
                key = f"{figure}_img_s"
                if key in ours and key in theirs:
                    ratios[f"{figure}_vs_{peer}"] = ours[key] / theirs[key]
        result["ratios"] = ratios


# ============================================================================================
# Report
# ============================================================================================
def _mib(value) -> str:
    return "-" if value is None else f"{value / 2 ** 20:,.0f}"


def format_report(report: dict) -> str:
    device = report["device"] or {}
    lines = [f"command: {report['command']}"]
    if device.get("platform") == "cpu":
        lines.append(f"device: {device['name']}, {device['cores']} cores "
                     f"({device['usable_cores']} usable), {device['memory_gib']} GiB")
    elif device:
        lines.append(f"device: {device['count']} x {device['name']}, "
                     f"{device['memory_gib']} GiB")
    lines.append(f"float32 matmul peak, measured in this run: "
                 f"{report['matmul_peak_gflops']:.0f} GFLOP/s")
    lines.append("host tuning: " + ("; ".join(report["host_tuning"]) or "none"))
    lines += ["", "| net | batch | params | GFLOP/img fwd / train | impl | compile s | "
                  "train img/s | % peak | infer img/s | % peak | step MiB | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in report["results"]:
        flops = result.get("flops_per_image")
        head = (f"| {result['network']} | {result['batch_size']} | "
                f"{result.get('params', 0):,} | "
                + (f"{flops['forward'] / 1e9:.3f} / {flops['train'] / 1e9:.3f}" if flops
                   else "-") + " |")
        for kind in ("ours", *PEERS):
            figures = result["implementations"].get(kind)
            if figures is None:
                continue
            if "error" in figures:
                lines.append(f"{head} {kind} | {figures['error'].splitlines()[0]} |"
                             + " |" * 6)
            else:
                memory = figures["memory"]
                step = memory.get("train_step_bytes")
                rss = memory.get("device_peak_bytes") or memory["process_peak_rss_bytes"]
                lines.append(
                    f"{head} {kind} | {figures['compile_s']:.1f} | "
                    f"{figures['train_img_s']:.1f} | {figures.get('train_pct_of_peak', 0):.0f} | "
                    f"{figures['eval_img_s']:.1f} | {figures.get('eval_pct_of_peak', 0):.0f} | "
                    f"{_mib(step)} | {_mib(rss)} |")
            head = "| | | | |"
    lines.append("")
    for result in report["results"]:
        ratios = result.get("ratios", {})
        if ratios:
            lines.append(f"{result['network']} @ {result['batch_size']}: ours / peer: "
                         + ", ".join(f"{key.replace('_vs_', ' vs ')} {value:.2f}x"
                                     for key, value in ratios.items()))
    pipeline = report.get("input_pipeline")
    if pipeline and "error" in pipeline:
        lines += ["", f"input pipeline: failed: {pipeline['error'].splitlines()[0]}"]
    elif pipeline:
        lines += ["", f"input pipeline ({pipeline['network']} @ {pipeline['batch_size']}, "
                      f"{pipeline['batches_per_epoch']} batches of {pipeline['dataset']}, "
                      f"split {pipeline['split']}): training {pipeline['resident_img_s']:.1f} "
                      f"img/s with the set in device memory, {pipeline['streamed_img_s']:.1f} "
                      f"streamed from HDF5 (cost {pipeline['streaming_cost_pct']:.1f} %); "
                      f"the loader alone delivers {pipeline['loader_img_s']:.0f} img/s "
                      f"({pipeline['loader_share_of_step_pct']:.1f} % of a step's time)"]
    scaling = report.get("device_scaling")
    if scaling:
        lines += ["", f"devices ({scaling['network']} @ {scaling['batch_size']}, the global "
                      f"batch split across them):",
                  "| devices | train img/s | x | infer img/s | x |", "|---|---|---|---|---|"]
        for row in scaling["rows"]:
            if "error" in row:
                lines.append(f"| {row['devices']} | {row['error'].splitlines()[0]} | | | |")
            else:
                lines.append(f"| {row['devices']} | {row['train_img_s']:.1f} | "
                             f"{row.get('train_scaling', 1):.2f} | {row['eval_img_s']:.1f} | "
                             f"{row.get('eval_scaling', 1):.2f} |")
        if any(row.get("platform") == "cpu" for row in scaling["rows"]):
            lines.append("(CPU: the devices are forced host devices sharing the same cores)")
    return "\n".join(lines)


# ============================================================================================
# Command line
# ============================================================================================
def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark", description=(
        "Training and inference speed of the networks on this machine, against the same "
        "networks in flax.linen and PyTorch."))
    parser.add_argument("--networks", nargs="+", default=["A"], metavar="NAME",
                        help="networks to measure (default: A)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128], metavar="B")
    parser.add_argument("--im-dim", nargs=2, type=int, default=[48, 48], metavar=("H", "W"))
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                        help="peer implementations: flax.linen, PyTorch (NCHW, its default), "
                             "PyTorch with channels_last activations (default: all three; "
                             "none: --peers alone)")
    parser.add_argument("--rounds", type=int, help="timing rounds (default 5; quick: 1)")
    parser.add_argument("--steps", type=int,
                        help="training steps per round (default 5; quick: 2); inference "
                             "batches are 3x as many")
    parser.add_argument("--quick", action="store_true",
                        help="one short round, a small matmul: a smoke test, not figures")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="skip the input-pipeline measurement")
    parser.add_argument("--pipeline-network", metavar="NAME",
                        help="network trained for the input-pipeline measurement "
                             "(default: the first of --networks)")
    parser.add_argument("--dataset", metavar="PATH",
                        help="HDF5 dataset for the input pipeline (default: the built-in "
                             "sample, mirror variant, built if missing)")
    parser.add_argument("--split", default="train", help="its split (default: train)")
    parser.add_argument("--pipeline-batches", type=int, metavar="N",
                        help="batches per measured epoch (default: the whole split)")
    parser.add_argument("--devices", nargs="+", type=int, metavar="N",
                        help="also measure our training and inference with the batch split "
                             "across each of these device counts (first network and batch "
                             "size; on a CPU, forced host devices: e.g. --devices 1 2 4)")
    parser.add_argument("--host-tuning", choices=("on", "off"), default="on",
                        help="the product's process settings (utils.host_tuning) in the "
                             "workers (default: on)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.steps is None:
        args.steps = 2 if args.quick else 5
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.devices and min(args.devices) < 1:
        parser.error("--devices counts must be at least 1")
    if any(b < 1 for b in args.batch_sizes) or any(d < 1 for d in args.im_dim):
        parser.error("batch sizes and image sizes must be positive")
    return args


def run(args, log=print) -> dict:
    from utils import host_tuning

    if args.host_tuning == "off":  # the workers inherit this environment
        os.environ.clear()
        os.environ.update(host_tuning.untuned_environment())
    else:
        host_tuning.apply()
    # Several processes share one GPU: each takes memory as it needs it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    peers = _available_peers(args.peers)
    matmul_size = 512 if args.quick else None
    results, peak_seconds, device, matmul, tuning = [], [], None, None, []
    for name in args.networks:
        for batch_size in args.batch_sizes:
            result, seconds = measure_network(name, batch_size, args.im_dim, peers,
                                              args.rounds, args.steps, matmul_size, log)
            results.append(result)
            peak_seconds += seconds
            device = device or result.get("device")
            matmul = matmul or result.get("matmul_size")
            tuning = result.pop("host_tuning", tuning)
    peak_gflops = 2 * matmul ** 3 / min(peak_seconds) / 1e9
    add_derived_figures(results, peak_gflops)
    pipeline = None
    if not args.no_pipeline:
        dataset = args.dataset
        if dataset is None:
            from loaders.sample import ensure_sample_dataset

            dataset = str(ensure_sample_dataset("mirror"))
        try:
            pipeline = measure_pipeline(args.pipeline_network or args.networks[0],
                                        args.batch_sizes[0], dataset, args.split,
                                        args.pipeline_batches, max(args.rounds, 2), log)
        except RuntimeError as error:
            pipeline = {"error": str(error).strip()}
    scaling = None
    if args.devices:
        scaling = measure_device_scaling(args.networks[0], args.batch_sizes[0], args.im_dim,
                                         sorted(set(args.devices)), args.rounds, args.steps,
                                         log)
    return {"command": "python -m utils.benchmark " + shlex.join(args.argv),
            "device": device, "host_tuning": tuning,
            "settings": {"rounds": args.rounds, "steps": args.steps,
                         "eval_batches": EVAL_BATCHES_PER_STEP * args.steps,
                         "quick": args.quick,
                         "matmul_size": matmul, "host_tuning": args.host_tuning},
            "matmul_peak_gflops": peak_gflops, "results": results,
            "input_pipeline": pipeline, "device_scaling": scaling}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    report = run(args, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
