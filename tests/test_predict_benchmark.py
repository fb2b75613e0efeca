"""The app's benchmark times a first run (compiling) and a second (loading the compiled code)
of the same command, each input with a fresh compilation cache of its own."""
from __future__ import annotations

import subprocess
from pathlib import Path

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
