"""What runs inside a benchmark worker process: our training step, the flax.linen and PyTorch
peers, and the input pipeline. JAX and PyTorch are imported here only, inside the workers."""
from __future__ import annotations

import os
import platform
import resource
import time

SEED = 0
MATMUL_SIZE = {"cpu": 2048, "gpu": 8192}


def batch_arrays(batch_size: int, im_dim):
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
    """What ours and the flax peer share: timing of donated train steps and eval batches.
    A subclass sets jax, train_fn (state, x, y) -> (state, output), eval_fn, state, x, y and
    says what eval_fn takes (``_eval_args``)."""

    def _eval_args(self) -> tuple:
        raise NotImplementedError

    def _finish_setup(self):
        import jax

        started = time.perf_counter()
        compiled = self.train_fn.lower(self.state, self.x, self.y).compile()
        self.compile_s = time.perf_counter() - started
        started = time.perf_counter()
        compiled_eval = self.eval_fn.lower(*self._eval_args()).compile()
        self.eval_compile_s = time.perf_counter() - started
        self.memory = {"train_step_bytes": _step_memory(compiled),
                       "eval_step_bytes": _step_memory(compiled_eval)}
        self.train(1)
        self.eval(1)
        self.device = jax.devices()[0]

    def train(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.state, output = self.train_fn(self.state, self.x, self.y)
        self.jax.block_until_ready((self.state, output))
        return time.perf_counter() - started

    def eval(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            logits = self.eval_fn(*self._eval_args())
        logits.block_until_ready()
        return time.perf_counter() - started

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

        from utils.support import host_tuning

        from utils.training import online_augmentation
        from utils.benchmark.flops import network_flops
        from utils.models.networks import get_network
        from utils.training.objective import Objective
        from utils.training.optim import make_optimizer, make_schedule
        from utils.training.steps import Steps

        self.jax = jax
        network = get_network(config["network"], im_dim=list(config["im_dim"]))
        # With an augmentation spec: the launcher's online augmentation inside the same step.
        objective = Objective(augmentation=online_augmentation.parse(config.get("augment")))
        self.steps = Steps(network, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                           objective=objective, dtype=config.get("dtype", "float32"))
        self.state = self.steps.init_state(SEED, SEED + 1)
        x, y = batch_arrays(config["batch_size"], config["im_dim"])
        if config.get("devices"):  # the launcher's data parallelism over this many devices
            from utils.support.parallel import data_parallel

            parallel = data_parallel(config["devices"], config["batch_size"])
            self.state = parallel.replicate(self.state)
            self.x, self.y = (jax.device_put(x, parallel.batch),
                              jax.device_put(y, parallel.batch))
        else:
            self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.train_fn, self.eval_fn = self.steps.train, self.steps.eval
        self._finish_setup()
        flops = network_flops(network)
        platform_name = "cpu" if self.device.platform == "cpu" else "gpu"
        size = config.get("matmul_size") or MATMUL_SIZE[platform_name]
        # The peak the step is compared with: a matmul in the step's dtype, summed in float32.
        self.matrix = jax.random.normal(jax.random.key(SEED), (size, size), self.steps.dtype)
        self.matmul_fn = jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=jnp.float32))
        self.matmul_fn(self.matrix).block_until_ready()
        self.info = {"params": network.param_count(),
                     "thesis_conv_params": network.thesis_conv_params,
                     "flops_per_image": {"forward": flops.forward, "train": flops.train},
                     "compile_s": self.compile_s, "eval_compile_s": self.eval_compile_s,
                     "device": _device_report(), "matmul_size": size,
                     "host_tuning": host_tuning.applied(),
                     # what this process's XLA read when JAX started its backend (once)
                     "xla_flags": os.environ.get("XLA_FLAGS", ""),
                     "compute_dtype": jnp.dtype(self.steps.dtype).name}

    def _eval_args(self) -> tuple:
        return self.state.params, self.state.bn_state, self.x

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

        from utils.models.networks import get_network
        from utils.benchmark.peers import peer_spec
        from utils.benchmark.peers.flax_nets import FlaxSteps

        self.jax = jax
        spec = peer_spec(get_network(config["network"], im_dim=list(config["im_dim"])))
        self.steps = FlaxSteps(spec, dtype=config.get("dtype", "float32"))
        x, y = batch_arrays(config["batch_size"], config["im_dim"])
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.state = self.steps.init_state(SEED, x.shape)
        self.train_fn, self.eval_fn = self.steps.train, self.steps.eval
        self._finish_setup()
        self.info = {"params": sum(leaf.size for leaf in jax.tree_util.tree_leaves(
            self.state.params)), "compile_s": self.compile_s,
            "eval_compile_s": self.eval_compile_s}

    def _eval_args(self) -> tuple:
        return self.state, self.x


class TorchWorker:
    def __init__(self, config):
        import torch

        from utils.models.networks import get_network
        from utils.benchmark.peers import peer_spec
        from utils.benchmark.peers.torch_nets import TorchSteps

        device = "cuda" if config["platform"] == "gpu" and torch.cuda.is_available() else "cpu"
        spec = peer_spec(get_network(config["network"], im_dim=list(config["im_dim"])))
        self.steps = TorchSteps(spec, device=device, seed=SEED,
                                channels_last=config["channels_last"],
                                dtype=config.get("dtype", "float32"))
        x, y = batch_arrays(config["batch_size"], config["im_dim"])
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
        from utils.models.networks import get_network
        from utils.training.optim import make_optimizer, make_schedule
        from utils.training.steps import Steps

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
