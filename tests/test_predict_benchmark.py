"""The app's benchmark times a first run (compiling) and a second (loading the compiled code)
of the same command, each input with a fresh compilation cache of its own."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import cv2
import pytest

from utils.predict import benchmark


def test_crops_and_video_run_twice_with_their_own_cache_and_the_test_faces_once(
        tmp_path, monkeypatch):
    calls = []

    def timed(*arguments, compiled):
        calls.append((arguments, compiled))
        return 1.5, "analysed in 1.0 s"

    monkeypatch.setattr(benchmark, "timed_command", timed)
    monkeypatch.setattr(benchmark, "test_accuracy", lambda path: {"PublicTest": (3, 4)})
    inputs = {kind: benchmark.Input(tmp_path / kind, f"the {kind}", options)
              for kind, options in [("crops", ("--no-detect",)), ("video", ()),
                                    ("test", ("--no-detect",))]}
    lines = benchmark.timed_lines("fast", "plain", tmp_path, inputs)

    kinds = [Path(arguments[0]).name for arguments, _ in calls]
    assert kinds == ["crops", "crops", "video", "video", "test"]
    caches = [compiled for _, compiled in calls]
    assert caches[0] == caches[1] != caches[2] == caches[3] != caches[4]
    assert len(set(caches)) == 3 and all(not cache.exists() for cache in caches)
    outs = [arguments[arguments.index("--out") + 1] for arguments, _ in calls]
    assert len(set(outs)) == 5  # no run writes into another's folder
    assert outs[4] == str(tmp_path / "out_fast" / "test")  # where the accuracy is read
    assert [line.split(":")[0] for line in lines] == [
        "  the crops, first run (compiles)", "  the crops, again (compiled code cached)",
        "  the video, first run (compiles)", "  the video, again (compiled code cached)",
        "  the test, first run (compiles)", "    PublicTest"]


def test_the_command_gets_the_cache_folder_through_the_environment(tmp_path, monkeypatch):
    seen = {}

    def run(command, **options):
        seen.update(command=command, env=options["env"])
        return subprocess.CompletedProcess(command, 0, "analysed in 2.0 s: 5 faces/s\n", "")

    monkeypatch.setattr(benchmark.subprocess, "run", run)
    seconds, summary = benchmark.timed_command("crops", "--no-detect",
                                               compiled=tmp_path / "cache")
    assert seen["env"]["FER_JAX_CACHE"] == str(tmp_path / "cache")
    assert seen["command"][-3:] == ["utils.predict", "crops", "--no-detect"]
    assert summary == "analysed in 2.0 s: 5 faces/s" and seconds >= 0


def test_again_repeats_the_cached_runs_and_prints_their_median(tmp_path, monkeypatch):
    times = iter([9.0, 4.0, 6.0, 5.0, 8.0, 3.0, 2.0, 7.0])  # crops: first, 3 again; video too

    def timed(*arguments, compiled):
        return next(times), "analysed"

    monkeypatch.setattr(benchmark, "timed_command", timed)
    monkeypatch.setattr(benchmark, "load_average", lambda: "load")
    inputs = {kind: benchmark.Input(tmp_path / kind, f"the {kind}", ())
              for kind in ("crops", "video")}
    lines = benchmark.timed_lines("fast", "plain", tmp_path, inputs, again=3)
    assert lines == [
        "  the crops, first run (compiles): 9.0 s with start-up (analysed); load",
        *[f"  the crops, again (compiled code cached), run {i} of 3: {t:.1f} s with start-up "
          f"(analysed); load" for i, t in enumerate([4.0, 6.0, 5.0], start=1)],
        "  the crops, again: median 5.0 s, best 4.0 s of 3 runs",
        "  the video, first run (compiles): 8.0 s with start-up (analysed); load",
        *[f"  the video, again (compiled code cached), run {i} of 3: {t:.1f} s with start-up "
          f"(analysed); load" for i, t in enumerate([3.0, 2.0, 7.0], start=1)],
        "  the video, again: median 3.0 s, best 2.0 s of 3 runs"]


def test_again_below_one_is_refused_in_one_sentence(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--again", "0"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m utils.predict.benchmark: error: --again must be at least 1, got 0")


def test_the_detector_line_times_each_runtime_and_names_this_machines(tmp_path, monkeypatch):
    benchmark.write_video(tmp_path / "video.mp4", benchmark.read_csv(benchmark.SAMPLE_CSV).images,
                          seconds=0.4)
    monkeypatch.setenv("FER_YUNET_RUNTIME", "opencv")
    line = benchmark.detector_line(tmp_path / "video.mp4", frames=3)
    assert re.fullmatch(r"YuNet on a 640x480 frame, one thread: onnxruntime \d+\.\d ms, opencv "
                        r"\d+\.\d ms; this machine uses opencv \(FER_YUNET_RUNTIME chooses\)",
                        line), line
    assert cv2.getNumThreads() > 1 or os.cpu_count() == 1  # OpenCV's threads given back
