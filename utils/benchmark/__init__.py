"""How fast each network trains and infers on this machine, against flax.linen and PyTorch.

    python -m utils.benchmark --networks A B C D mlp --batch-sizes 128 --im-dim 48 48 \\
        --json benchmark.json
    python -m utils.benchmark --quick            # fewer, shorter rounds (a smoke test)
    python -m utils.benchmark --devices 1 2 4    # also: the batch split across devices

For every network and batch size it reports the true parameter count, FLOPs per image
(``utils.benchmark.flops``: forward, and forward + backward), the compile time, training images/s (the
product's own step, ``utils.training.steps.Steps.train``: forward, backward, SGD update, batch norm,
dropout), inference images/s (``Steps.eval``), each as a share of the float32 matrix-multiply
peak measured in the same run, and memory: the compiled step's working set (XLA's buffer
assignment: arguments + results + temporaries - donated) and each process's peak resident
memory (on GPU: the device's peak bytes in use). The same network written with flax.linen
and, when installed, PyTorch (``utils.benchmark.peers``; twice: NCHW, its default, and channels_last,
its advice for conv nets on CPU) runs on the same batch of the same data with SGD, and our
ratio to each is printed. The input pipeline is measured too: one network
trained from the HDF5 file (streamed by ``loaders.batches.BatchLoader``) against the same
batches held in device memory (``shared=True``), and the loader alone.

Method: each implementation runs in a worker process of its own (its own memory figures, no
threads disturbing another's), set up and compiled one at a time; then they take turns,
``--rounds`` times: each times ``--steps`` training steps, then 3x as many inference
batches, and the matmul peak is timed in the same rounds. Figures are the best round, the one
least disturbed by anything else running on the machine (medians in the JSON; our ratios to
the peers printed of both: a bar is read on the medians). JAX is started in the workers
only, so nothing is held on a GPU by the coordinator. The workers get the product's process
settings (``utils.support.host_tuning``) unless ``--host-tuning off``.

JSON (``--json``): {"command", "device", "host_tuning", "settings", "matmul_peak_gflops",
"results": [{"network", "batch_size", "im_dim", "params", "thesis_conv_params",
"flops_per_image": {"forward", "train"}, "implementations": {"ours" | "flax" | "torch" |
"torch_cl": {"params", "compile_s", "train_img_s", "train_img_s_median", "eval_img_s",
"eval_img_s_median", "train_pct_of_peak", "eval_pct_of_peak", "memory": {...}} or
{"error"}}, "ratios": {"train_vs_<peer>", "eval_vs_<peer>" for each peer measured, of the
best rounds}, "ratios_median": {the same keys, of the medians}}],
"input_pipeline": {"network", "batch_size", "dataset", "split", "batches_per_epoch",
"resident_img_s", "streamed_img_s", "loader_img_s", "streaming_cost_pct",
"loader_share_of_step_pct"} or null, "device_scaling": {"network", "batch_size",
"im_dim", "rows": [{"devices", "train_img_s", "train_img_s_median", "eval_img_s",
"eval_img_s_median", "train_scaling", "eval_scaling", "platform"} or {"devices", "error"}]}
or null}.

The package, by responsibility: ``cli`` (options, the run, the JSON; ``__main__`` calls it),
``measure`` (the coordinator: interleaved rounds over worker processes, derived figures),
``process`` (a worker process and its call protocol), ``workers`` (what runs inside one: our
step, the flax and PyTorch peers, the input pipeline), ``report`` (the printed tables),
``flops`` (FLOPs counted from a network's jaxpr), ``peers`` (the peer networks).
"""
