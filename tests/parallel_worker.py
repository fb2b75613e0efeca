"""Run in a subprocess with 4 forced CPU devices: the same training on 1, 2 and 4 devices, and
with a distillation teacher on 1 and 4.

Prints one JSON object: per device count (and for "distilled 4"), the largest
difference from the 1-device run in costs (and distillation's KL), parameters, BN population
statistics and evaluation logits; and the message for a batch that does not split.
"""
import json

import jax
import numpy as np
import tiny_net  # noqa: F401  (registers "tiny")

from loaders.batches import Batch
from utils.models.networks import get_network
from utils.training.optim import make_optimizer, make_schedule
from utils.support.parallel import data_parallel
from utils.training.distillation import Distillation, Teacher
from utils.training.objective import Objective
from utils.training.online_augmentation import parse
from utils.training.steps import Steps
from utils.training.views import OnlineViews

BATCH = 48


def distillation(parallel):
    """A teacher of another width with ten views (five windows of the padded image and of its
    mirror), its trees replicated as the launcher places them."""
    teacher = get_network("tiny", im_dim=[16, 16], n_hidden=[6], p_dropConv=[0.0], p_drop=0.0)
    trees = (teacher.init(jax.random.key(7)),)
    return dict(objective=Objective(parse("rotate:10,crop:2,flip"), mixup=0.4),
                distillation=Distillation((Teacher(teacher, OnlineViews(pad=2), True),), 2.0,
                                          0.6),
                teacher_trees=parallel.replicate(trees))


def train(devices: int, distil: bool = False):
    parallel = data_parallel(devices, BATCH)
    net = get_network("tiny", im_dim=[16, 16], n_hidden=[8], p_dropConv=[0.2], p_drop=0.3)
    steps = Steps(net, make_optimizer("momentum", 0.05), make_schedule("constant", 0.05),
                  **(distillation(parallel) if distil else {}))
    state = parallel.replicate(steps.init_state(0, 1, epoch_length=5))
    rng = np.random.default_rng(0)
    costs = []
    batches = []
    for _ in range(5):
        x = rng.random((BATCH, 16, 16, 1), dtype=np.float32)
        y = rng.integers(0, 7, BATCH, dtype=np.int32)
        batches.append((x, y))
        state, metrics = steps.train(state, jax.device_put(x, parallel.batch),
                                     jax.device_put(y, parallel.batch))
        costs.append(float(metrics["cost"]))
    stats = steps.population_statistics(
        state.params, state.bn_state,
        [Batch(jax.device_put(x, parallel.batch), jax.device_put(y, parallel.batch), BATCH)
         for x, y in batches])
    logits = parallel.gather(steps.eval(state.params, stats,
                                        jax.device_put(batches[0][0], parallel.batch)))
    if distil:
        costs.append(float(metrics["distill_kl"]))
    return {"costs": np.array(costs), "params": jax.tree_util.tree_leaves(state.params),
            "stats": jax.tree_util.tree_leaves(stats), "logits": logits,
            "sharded": len(state.params[0]["w"].sharding.device_set)}


def largest_difference(a, b):
    if isinstance(a, list):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


if __name__ == "__main__":
    assert jax.device_count() == 4, jax.devices()
    report = {"n_devices": jax.device_count()}
    for distil, prefix, counts in ((False, "", (2, 4)), (True, "distilled ", (4,))):
        reference = train(1, distil)
        for devices in counts:
            run = train(devices, distil)
            report[prefix + str(devices)] = {key: largest_difference(run[key], reference[key])
                                             for key in ("costs", "params", "stats", "logits")}
            report[prefix + str(devices)]["replicated_on"] = run["sharded"]
    try:
        data_parallel(3, 50)
    except ValueError as err:
        report["refusal"] = str(err)
    print(json.dumps(report))
