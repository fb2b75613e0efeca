"""A run over an image, a folder or a video: images decoded and faces found by a pool of threads,
the faces of consecutive items classified together in fixed-shape batches, outputs written by
writer threads while the next items are read.

Ctrl-C stops the run between two runs of images (at most ITEMS_PER_RUN of them; a camera's
frames one by one: ``errors.ctrl_c_stops_gracefully``); what was analysed is written (tables,
summary) and ``Interrupted`` carries its summary. Any other failure leaves the output folder as
it was.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from utils.predict.errors import (Interrupted, PredictError, ctrl_c_requested,
                                  ctrl_c_stops_gracefully)
from utils.predict.inputs import (FaceFinder, Item, Problem, VideoReader, folder_names,
                                  input_kind)
from utils.predict.loading import begin_loading
from utils.predict.output import OutputFolder, check_output_folder
from utils.predict.report import UNITS, Report

# Faces gathered from consecutive images or frames before the network runs on them (with the
# mirror view, one large batch), and the most images or frames held meanwhile.
FACES_PER_RUN = 512
ITEMS_PER_RUN = 256
IMAGE_BYTES_PER_RUN = 150_000_000  # five 10-megapixel colour photos
CROPS_PER_JOB = 32  # a folder of crops' files read by one job of the reading threads


def ordered_map(pool: ThreadPoolExecutor, function: Callable, jobs: Iterable,
                window: int) -> Iterator:
    """function(job) for each job, computed by the pool, yielded in the jobs' order; at most
    ``window`` jobs in flight. Closing the iterator cancels the jobs not started."""
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(function, job))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def classified(items: Iterable[Item | Problem], model, augment: bool,
               faces_per_run: int = FACES_PER_RUN, items_per_run: int = ITEMS_PER_RUN,
               image_bytes_per_run: int = IMAGE_BYTES_PER_RUN
               ) -> Iterator[list[Item | Problem]]:
    """The items in order, in runs (lists of consecutive items), each Item with its faces'
    probabilities. The network runs on the faces of a run's items at once, and while it runs
    the next items are read: a run is yielded once the next run has started."""
    pending: list[Item | Problem] = []
    running = None  # (items, the analysed ones, the model's pending outputs)

    def start_run():
        analysed = [item for item in pending if isinstance(item, Item) and len(item.faces)]
        started = (model.start(np.concatenate([item.faces for item in analysed]), augment)
                   if analysed else None)
        return list(pending), analysed, started

    def finish_run(run):
        run_items, analysed, started = run
        for item in run_items:
            if isinstance(item, Item) and not len(item.faces):
                item.probabilities = np.zeros((0, len(model.class_names)))
        if started is not None:
            probabilities, stop = started.probabilities(), 0
            for item in analysed:  # slices: np.split took 9 us an item
                start, stop = stop, stop + len(item.faces)
                item.probabilities = probabilities[start:stop]
        return run_items

    def start_next():
        """Start the pending items' run, then yield the run before it: the network always has
        the next run queued, the stream's last, partial one too."""
        nonlocal running
        previous, running = running, start_run()
        pending.clear()
        if previous is not None:
            yield finish_run(previous)

    n_faces = n_bytes = 0
    for item in items:
        pending.append(item)
        if isinstance(item, Item):
            n_faces, n_bytes = n_faces + len(item.faces), n_bytes + item.image.nbytes
        # Images are held until classified: bound them too, not only the faces.
        if (n_faces >= faces_per_run or len(pending) >= items_per_run
                or n_bytes >= image_bytes_per_run):
            n_faces = n_bytes = 0
            yield from start_next()
    if pending:
        yield from start_next()
    if running is not None:
        yield finish_run(running)


def analyse(items: Iterable[Item | Problem], model, augment: bool, report: Report,
            bar: tqdm, on_item: Callable | None = None, **run_sizes) -> tuple[bool, float]:
    """Classify and report every item, a run at a time; (interrupted by Ctrl-C, seconds
    taken). ``on_item`` sees each classified item and returns False to stop (the camera's
    window closed; its runs are single frames)."""
    start = time.perf_counter()
    interrupted = False
    stream = classified(items, model, augment, **run_sizes)
    try:
        for run_items in stream:
            report.add(run_items)
            bar.update(len(run_items))
            if ctrl_c_requested():
                interrupted = True
                break
            if on_item is not None and not all(map(on_item, run_items)):
                break
    except KeyboardInterrupt:  # raised where no graceful handler was installed
        interrupted = True
    finally:
        stream.close()
        bar.close()
    return interrupted, time.perf_counter() - start


def conclude(report: Report, model, augment: bool, interrupted: bool, seconds: float,
             notes: list[str]) -> list[str]:
    """Write the summary and tables, move the folder into place; raise Interrupted after
    writing them if Ctrl-C stopped the run."""
    if interrupted:
        unit = UNITS[report.kind]
        notes = [*notes, f"interrupted (Ctrl-C) after {report.n_items} {unit}(s): the outputs "
                         f"cover what was analysed until then"]
    lines = report.finish(model.describe(augment), seconds, notes)
    report.folder.commit()
    if interrupted:
        raise Interrupted(lines, report.folder.out)
    return lines


def output_path(input_path: Path, kind: str, out: Path | None) -> Path:
    """``out``, else predictions/<the input's name> (a file's without its extension); ``kind``
    is the input's (``inputs.input_kind``)."""
    if out is not None:
        return Path(out)
    return Path("predictions") / (input_path.name if kind == "folder" else input_path.stem)


def predict(input_path: Path, model, out: Path | None = None, *, finder: FaceFinder,
            augment: bool = True, every: int = 1, face_charts: bool | None = None,
            annotated: bool | None = None, overwrite: bool = False,
            workers: int | None = None) -> list[str]:
    """Analyse an image, a folder or a video, write the outputs into ``out`` (default
    predictions/<input name>/) and return the summary's lines. ``model`` is an EmotionModel
    or an Ensemble. Raises PredictError for an input or output that cannot be used at all
    (a folder's unreadable files are skipped and listed instead), Interrupted after writing
    the outputs of what was analysed when Ctrl-C stops the run. A LoadingModel's load begins
    once the input and the output folder are found usable (a refused run ends at once), and is
    waited for when the first run of faces is ready: the first images are read and their faces
    found meanwhile."""
    if every < 1:
        raise PredictError(f"--every must be at least 1, got {every}")
    input_path = Path(input_path)
    kind = input_kind(input_path)
    names = folder_names(input_path) if kind == "folder" else None
    out = output_path(input_path, kind, out)
    check_output_folder(out, overwrite)
    workers = workers or os.cpu_count() or 2
    charts = face_charts if face_charts is not None else kind == "image"
    if annotated is None:  # a folder of crops (no detection): the CSV says all a copy would
        annotated = not (kind == "folder" and finder.detector is None)
    # Crops that nothing draws on: decoded grey at once and kept as their 48x48 faces alone,
    # so a whole run of them is read ahead while the network classifies the run before.
    crops_only = not annotated and finder.detector is None
    if crops_only:
        finder = FaceFinder(None, finder.align, grayscale=True)
    with ctrl_c_stops_gracefully(), ThreadPoolExecutor(
            workers, thread_name_prefix="predict-reader") as pool:
        if kind == "video":
            return _video(input_path, model, out, finder, pool, workers, augment=augment,
                          every=every, face_charts=charts, overwrite=overwrite)
        if kind == "image":
            item = finder.image_file(input_path, input_path.name)
            if isinstance(item, Problem):
                raise PredictError(f"{input_path}: {item.reason}")
            begin_loading(model)
            items, total = [item], 1
        else:
            begin_loading(model)  # the folder is listed and not empty
            # Crops are read CROPS_PER_JOB files a job of the pool: a job's own bookkeeping
            # (the future, its queue, its result) cost as much as decoding a 48x48 file.
            per_job = CROPS_PER_JOB if crops_only else 1
            read_ahead = 4 * workers + (ITEMS_PER_RUN // per_job if crops_only else 0)
            folder = str(input_path)
            jobs = (names[start:start + per_job] for start in range(0, len(names), per_job))
            read = ordered_map(pool, lambda job: [finder.image_file(
                os.path.join(folder, name), name) for name in job], jobs, read_ahead)
            items, total = (item for job in read for item in job), len(names)
        report = Report(OutputFolder(out, overwrite, workers), kind, input_path.name,
                        model, charts, annotated)
        return run(report, items, model, augment, total=total, notes=lambda: [])


def _video(path: Path, model, out: Path, finder: FaceFinder, pool, workers: int, *,
           augment: bool, every: int, face_charts: bool, overwrite: bool) -> list[str]:
    reader = VideoReader(path)
    try:
        begin_loading(model)  # the video opened
        report = Report(OutputFolder(out, overwrite, workers), "video", path.name,
                        model, face_charts, fps=reader.fps, every=every)
        items = ordered_map(pool, lambda frame: finder.item(path.name, frame[2], *frame[:2]),
                            reader.frames(every), window=4 * workers)
        total = -(-reader.announced // every) if reader.announced else None

        def notes():
            if report.n_items == 0:
                raise PredictError(f"{path}: no frame could be read from this video")
            stopped = reader.stopped_early()
            return [f"warning: {stopped}"] if stopped else []

        return run(report, items, model, augment, total=total, notes=notes)
    finally:
        reader.release()


def run(report: Report, items, model, augment: bool, *, total: int | None,
        notes: Callable[[], list[str]], on_item: Callable | None = None,
        **run_sizes) -> list[str]:
    """Analyse, then conclude (``notes()`` gives the summary's closing remarks, or raises if
    the run has nothing to report); on any failure the unfinished output folder is deleted."""
    try:
        if ctrl_c_requested():
            raise KeyboardInterrupt  # before anything was analysed: nothing is written
        bar = tqdm(total=total, unit=UNITS[report.kind], desc=report.input_name,
                   disable=True if report.kind == "image" else None, leave=False)
        interrupted, seconds = analyse(items, model, augment, report, bar, on_item,
                                       **run_sizes)
        return conclude(report, model, augment, interrupted, seconds,
                        [] if interrupted and report.n_items == 0 else notes())
    except Interrupted:
        raise  # its outputs are in place
    except BaseException:
        report.folder.discard()  # waits for the frame being encoded, cancels the rest
        report.close_video()
        raise
