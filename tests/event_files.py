"""Reading a run's TensorBoard event files back with tensorboard's own reader, for the tests."""
from __future__ import annotations

import collections
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def raw_points(folder: Path) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, value, wall time), ...]} of every scalar event in the folder's event
    files, in file order, duplicates and all (no purging, unlike TensorBoard's views)."""
    points = collections.defaultdict(list)
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:  # the loader gives scalars as tensors
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = tensor_util.make_ndarray(value.tensor).item()
                    points[value.tag].append((event.step, number, event.wall_time))
    return dict(points)


def accumulator(folder: Path) -> EventAccumulator:
    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0,
                                                          "tensors": 0})
    reader.Reload()
    return reader


def hparams_of(folder: Path) -> dict:
    """The run's hparams as TensorBoard's HParams tab reads them: {name: value}."""
    content = accumulator(folder).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    return {name: getattr(value, value.WhichOneof("kind"))
            for name, value in start.hparams.items()}


def assert_one_point_per_epoch(run_dir: Path, history: list[dict]) -> None:
    """Every per-epoch scalar has exactly one point per epoch of the history, at its epoch
    along its training (search; retrain or train with its annealing), with the history's
    value; the step costs have no step twice."""
    points = raw_points(run_dir)
    trainings, expected = {"search": "search", "retrain": "retrain", "train": "train",
                           "anneal": None}, collections.defaultdict(list)
    chain = None
    for row in history:
        chain = trainings[row["phase"]] or chain
        for figure in ("train_cost", "train_error", "val_cost", "val_error", "learning_rate"):
            if row.get(figure) not in (None, ""):
                expected[f"{chain}/{figure}"].append(float(row[figure]))
    for tag, values in expected.items():
        got = points.get(tag, [])
        assert [step for step, _, _ in got] == list(range(1, len(values) + 1)), tag
        for (_, value, _), want in zip(got, values):
            assert abs(value - want) <= 1e-6 * max(1.0, abs(want)), (tag, value, want)
    for tag in (t for t in points if t.endswith("/step_cost")):
        steps = [step for step, _, _ in points[tag]]
        assert steps == sorted(set(steps)), tag
