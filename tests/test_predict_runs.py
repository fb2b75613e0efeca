"""A run's life: the output folder (a file, an earlier run, --overwrite, files of another kind),
Ctrl-C (in process and as a real signal), a truncated video, and the folder defaults."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from predict_support import (COLLAGE_FACES, read_rows, run, sample_fixture, write_png,
                             write_video)
from utils.predict import cli, pipeline
from utils.predict import report as report_module
from utils.predict.errors import ctrl_c_requested, ctrl_c_stops_gracefully
from utils.predict.faces import DetectorSettings, cut_faces, make_detector
from utils.predict.inputs import FaceFinder, folder_names
from utils.predict.loading import LoadingModel

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def crops(sample, tmp_path):
    """A folder of six 48x48 sample faces."""
    folder = tmp_path / "crops"
    for index, face in enumerate(sample.images[:6]):
        write_png(folder / f"crop{index}.png", face)
    return folder


def test_out_naming_a_file_is_refused_and_the_file_kept(crops, tmp_path, capsys):
    target = tmp_path / "results.csv"
    target.write_text("mine\n")
    code, printed, error = run(capsys, crops, "--no-detect", "--out", target)
    assert code == 2 and printed == ""
    assert error == (f"error: {target}: --out must be a folder, but this is a file; nothing was "
                     f"written; give a folder path (it is created if missing)\n")
    assert target.read_text() == "mine\n"
    code, _, error = run(capsys, crops, "--no-detect", "--out", target / "inside")
    assert code == 2 and error == (
        f"error: {target / 'inside'}: cannot create the output folder there (Not a directory); "
        f"nothing was written; give --out a folder you can write to\n")


def test_a_rerun_into_an_earlier_runs_folder_is_refused_unless_overwrite(sample, crops,
                                                                        tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, crops, "--no-detect", "--annotated", "--out", out)[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (crops / "crop0.png").unlink()  # the second run sees 5 images

    code, printed, error = run(capsys, crops, "--no-detect", "--out", out)
    assert code == 2 and printed == ""
    assert error == (f"error: {out}: holds the outputs of an earlier run; nothing was changed; "
                     f"give --overwrite to replace them, or another --out\n")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    code, printed, _ = run(capsys, crops, "--no-detect", "--annotated", "--out", out,
                           "--overwrite")
    assert code == 0 and "5 images analysed" in printed
    # Only the new run's files: the earlier crop0's annotated image is gone.
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [
        f"crop{i}.png" for i in range(1, 6)]
    assert len(read_rows(out / "faces.csv")) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers


def test_overwrite_never_deletes_a_folder_that_is_not_a_runs_output(crops, tmp_path, capsys):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1\n")
    code, _, error = run(capsys, crops, "--no-detect", "--out", out, "--overwrite")
    assert code == 2 and error == (
        f"error: {out}: this folder holds files that are not a prediction run's outputs "
        f"(thesis.tex); nothing was changed; give --out a new or empty folder\n")
    assert (out / "thesis.tex").read_text() == "chapter 1\n"


def test_faces_are_found_while_the_model_loads(sample, tmp_path, capsys, monkeypatch):
    video = tmp_path / "clip.avi"
    write_video(video, sample.images[list(COLLAGE_FACES[:4])], n_frames=12, blank_every=4)
    frames_found, all_found, at_load_end = [], threading.Event(), []
    real_item, real_load = FaceFinder.item, cli.load_model

    def counted_item(self, *args):
        found = real_item(self, *args)
        frames_found.append(found.frame)
        if len(frames_found) == 12:
            all_found.set()
        return found

    def load_after_the_frames(args):
        all_found.wait(timeout=30)  # in vain if nothing is read until the model is loaded
        at_load_end.append(len(frames_found))
        return real_load(args)

    monkeypatch.setattr(FaceFinder, "item", counted_item)
    monkeypatch.setattr(cli, "load_model", load_after_the_frames)
    code, printed, _ = run(capsys, video, "--out", tmp_path / "out")
    assert code == 0 and at_load_end == [12]
    assert "12 frames analysed, 9 faces found" in printed
    assert [int(row["frame"]) for row in read_rows(tmp_path / "out" / "faces.csv")] == [
        0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_an_unusable_input_or_output_folder_is_refused_before_the_model_loads(
        crops, tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr(cli, "load_model", loads.append)
    out = tmp_path / "out"
    out.mkdir()
    (out / "faces.csv").write_text("an earlier run\n")
    code, printed, error = run(capsys, crops, "--no-detect", "--out", out)
    assert code == 2 and printed == "" and loads == []
    assert error.startswith(f"error: {out}: holds the outputs of an earlier run")
    missing = tmp_path / "missing.mp4"  # with --out given: no default name needs the input
    code, printed, error = run(capsys, missing, "--out", tmp_path / "other")
    assert code == 2 and printed == "" and loads == []
    assert error == f"error: {missing}: no such file or folder\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, printed, error = run(capsys, empty, "--no-detect", "--out", tmp_path / "other")
    assert code == 2 and printed == "" and loads == []
    assert error == f"error: {empty}: the folder holds no files\n"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    code, printed, error = run(capsys, broken, "--out", tmp_path / "other")
    assert code == 2 and printed == "" and loads == []
    assert error == f"error: {broken}: OpenCV cannot open this video\n"


def test_a_loading_model_waits_for_its_load_and_raises_its_error_where_used():
    release = threading.Event()

    class Loaded:
        class_names = ["a", "b"]

    loads = []
    model = LoadingModel(lambda: loads.append(1) or release.wait(10) and Loaded())
    time.sleep(0.1)
    assert loads == []  # nothing loads before the run begins it
    model.begin()
    model.begin()  # once
    waited = []
    reader = threading.Thread(target=lambda: waited.append(model.class_names))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive() and waited == []  # waiting for the load
    release.set()
    reader.join(10)
    assert waited == [["a", "b"]] and isinstance(model.loaded(), Loaded) and loads == [1]

    def fails():
        raise ValueError("model.msgpack: not a fer-jax model file")

    failing = LoadingModel(fails)  # the first use begins the load
    for _ in range(2):  # each use raises the load's own error
        with pytest.raises(ValueError, match="^model.msgpack: not a fer-jax model file$"):
            failing.start
    with pytest.raises(ValueError):
        failing.loaded()


def test_ctrl_c_writes_what_was_analysed_and_exits_130(crops, tmp_path, capsys, monkeypatch):
    added = []
    original_add = report_module.Report.add

    def add_then_ctrl_c(self, items):
        if len(added) == 1:
            raise KeyboardInterrupt  # as if Ctrl-C came while the second run was reported
        added.append(items)
        original_add(self, items)

    monkeypatch.setattr(report_module.Report, "add", add_then_ctrl_c)
    # runs of 3 of the 6 images
    monkeypatch.setattr(pipeline, "classified", partial(pipeline.classified, items_per_run=3))
    out = tmp_path / "out"
    code, printed, error = run(capsys, crops, "--no-detect", "--out", out)
    assert code == 130
    assert [row["source"] for row in read_rows(out / "faces.csv")] == [
        "crop0.png", "crop1.png", "crop2.png"]
    assert "3 images analysed" in printed
    assert [int(row["absolute"]) for row in read_rows(out / "frequencies.csv")][-1] == 3
    summary = (out / "summary.txt").read_text()
    assert ("interrupted (Ctrl-C) after 3 image(s): the outputs cover what was analysed until "
            "then") in summary
    assert error == (f"interrupted: the outputs of what was analysed until then are complete in "
                     f"{out}; run the command again (with --overwrite) to analyse everything\n")


def test_a_real_sigint_ends_in_one_sentence_and_exit_130(sample, tmp_path):
    folder = tmp_path / "many"
    for index in range(3000):  # long enough for the signal to land mid-run
        write_png(folder / f"{index:04d}.png", sample.images[index % len(sample.images)])
    out = tmp_path / "out"
    # SIGINT as a terminal's foreground command gets it (a shell's background job, such as a
    # test suite run with nohup, starts with it ignored, and so would the command).
    process = subprocess.Popen([sys.executable, "-m", "utils.predict", str(folder),
                                "--no-detect", "--annotated", "--out", str(out)], cwd=PROJECT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # The first annotated image written: the run is under way.
    while not (tmp_path / f".out.partial{process.pid}" / "annotated").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    printed, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "Traceback" not in error and error.strip().startswith("interrupted")
    assert "interrupted (Ctrl-C)" in (out / "summary.txt").read_text()
    assert 0 < len(read_rows(out / "faces.csv")) < 3000


def test_a_truncated_video_says_where_reading_stopped(sample, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    write_video(video, sample.images[list(COLLAGE_FACES[:4])], n_frames=20, blank_every=100)
    video.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.6)])
    capture = cv2.VideoCapture(str(video))
    readable = 0
    while capture.read()[0]:
        readable += 1
    capture.release()
    assert 0 < readable < 20

    code, printed, error = run(capsys, video, "--out", tmp_path / "out")
    assert code == 0
    sentence = (f"warning: clip.avi: reading stopped at frame {readable} of the 20 frames its "
                f"container announces (the file is truncated or damaged); the outputs cover "
                f"frames 0-{readable - 1}; repair or re-encode the video to analyse the rest")
    assert sentence in printed and sentence in error
    assert sentence in (tmp_path / "out" / "summary.txt").read_text()
    assert [int(row["frame"]) for row in read_rows(tmp_path / "out" / "faces.csv")] == list(
        range(readable))


def test_folders_get_no_per_face_charts_unless_asked(crops, tmp_path, capsys):
    code, printed, _ = run(capsys, crops, "--no-detect", "--out", tmp_path / "out")
    assert code == 0 and not (tmp_path / "out" / "charts").exists()
    throughput = [line for line in printed.splitlines() if line.startswith("analysed in ")]
    assert len(throughput) == 1 and throughput[0].endswith("faces/s")
    code, _, _ = run(capsys, crops, "--no-detect", "--out", tmp_path / "charts",
                     "--face-charts", "--workers", "1")
    charts = sorted((tmp_path / "charts" / "charts").iterdir())
    assert code == 0 and [p.name for p in charts] == [f"crop{i}_face1.png" for i in range(6)]
    chart = cv2.imread(str(charts[0]))
    assert chart.shape == (300, 750, 3) and len(np.unique(chart.reshape(-1, 3), axis=0)) > 10


def test_a_folder_of_crops_gets_annotated_copies_only_when_asked(crops, tmp_path, capsys):
    code, printed, _ = run(capsys, crops, "--no-detect", "--out", tmp_path / "plain")
    assert code == 0 and not (tmp_path / "plain" / "annotated").exists()
    assert "annotated/" not in printed and len(read_rows(tmp_path / "plain" / "faces.csv")) == 6
    code, printed, _ = run(capsys, crops, "--no-detect", "--annotated", "--out",
                           tmp_path / "annotated")
    copies = sorted((tmp_path / "annotated" / "annotated").iterdir())
    assert code == 0 and [p.name for p in copies] == [f"crop{i}.png" for i in range(6)]
    assert "annotated/ (6)" in printed
    assert read_rows(tmp_path / "plain" / "faces.csv") == read_rows(
        tmp_path / "annotated" / "faces.csv")


def test_the_first_ctrl_c_only_asks_to_stop_the_second_aborts():
    # Python's own handler, as in a terminal (a background job starts with SIGINT ignored).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ctrl_c_stops_gracefully():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs between bytecodes
            assert ctrl_c_requested()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert not ctrl_c_requested()
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_whole_image_is_cut_as_the_general_path_cuts_its_region():
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    region = np.array([[35.0, 25.0, 70.0, 50.0, 0.0]])  # centre, size, upright
    for finder, given in ((FaceFinder(None), image), (FaceFinder(None, grayscale=True), gray)):
        item = finder.item("x", given)
        np.testing.assert_array_equal(item.regions, region)
        np.testing.assert_array_equal(item.faces, cut_faces(gray, region))
        assert item.faces.shape == (1, 48, 48) and np.isnan(item.scores).all()
        # A crops-only item keeps its face alone (read far ahead, it stays small).
        np.testing.assert_array_equal(item.image, item.faces[0] if finder.grayscale else image)
    assert not FaceFinder(make_detector(DetectorSettings()), grayscale=True).grayscale


def test_a_folder_lists_its_visible_files_as_rglob_would(tmp_path):
    """Sorted as paths, hidden files and folders skipped, links to files kept, links to
    folders and broken links not followed: the same list as the rglob it replaced."""
    root = tmp_path / "in"
    for name in ("b.png", "a-c.png", "a/b.png", "a/.hidden.png", ".cache/x.png", "z/y/w.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.png").write_bytes(b"x")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "file_link.png").symlink_to(root / "b.png")
    (root / "broken.png").symlink_to(tmp_path / "missing.png")
    reference = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))
    names = folder_names(root)
    assert [root / name for name in names] == reference
    assert names == [str(p.relative_to(root)) for p in reference]
    assert [Path(name).as_posix() for name in names] == [
        "a/b.png", "a-c.png", "b.png", "file_link.png", "z/y/w.jpg"]
