"""The live camera mode end to end, with a generated video standing in for the camera and the
window replaced by a display that counts what it is shown."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from loaders.sample import SAMPLE_CSV
from loaders.sources import CLASS_NAMES, read_csv
from predict_support import COLLAGE_FACES, read_rows, run, write_video
from utils.predict import camera
from utils.predict.camera import LabelSmoother

N_FRAMES, BLANK_EVERY = 20, 4  # frames 3, 7, 11, 15, 19 show no face
FRAMES_WITH_A_FACE = [f for f in range(N_FRAMES) if f % BLANK_EVERY != BLANK_EVERY - 1]


class CountingDisplay:
    """Stands in for the window: keeps what it is shown; 'closed' after ``close_after``."""

    def __init__(self, close_after: int | None = None):
        self.frames: list[np.ndarray] = []
        self.close_after = close_after
        self.closed = False

    def show(self, image: np.ndarray) -> bool:
        self.frames.append(image)
        return self.close_after is None or len(self.frames) < self.close_after

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("camera") / "clip.avi"
    faces = read_csv(SAMPLE_CSV).images[list(COLLAGE_FACES[:4])]
    write_video(path, faces, n_frames=N_FRAMES, blank_every=BLANK_EVERY)
    return path


@pytest.fixture
def display(monkeypatch):
    displays = []

    def make():
        displays.append(CountingDisplay(close_after=getattr(make, "close_after", None)))
        return displays[-1]

    monkeypatch.setattr(camera, "WindowDisplay", make)
    return make, displays


def test_every_frame_is_shown_annotated_and_the_outputs_written_on_close(clip, tmp_path,
                                                                         capsys, display):
    _, displays = display
    out = tmp_path / "out"
    code, printed, error = run(capsys, "--camera", clip, "--out", out)
    assert code == 0, error
    shown = displays[0]
    assert len(shown.frames) == N_FRAMES and shown.closed
    assert all(frame.shape == (240, 320, 3) for frame in shown.frames)
    # A frame with a face has its box and labels drawn; a blank frame is shown as it is.
    capture = cv2.VideoCapture(str(clip))
    raw = [capture.read()[1] for _ in range(4)]
    capture.release()
    assert (shown.frames[0] != raw[0]).any(axis=2).sum() > 1000
    np.testing.assert_array_equal(shown.frames[3], raw[3])
    rows = read_rows(out / "faces.csv")
    assert [int(row["frame"]) for row in rows] == FRAMES_WITH_A_FACE
    assert [float(row["time_s"]) for row in rows] == [f / 10 for f in FRAMES_WITH_A_FACE]
    counts = np.bincount([CLASS_NAMES.index(row["label"]) for row in rows], minlength=7)
    assert [int(row["absolute"]) for row in read_rows(out / "frequencies.csv")] == [*counts, 15]
    assert "input clip.avi (camera): 20 frames analysed, 15 faces found" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "faces.csv", "frequencies.csv", "frequencies.png", "summary.txt"]


def test_closing_the_window_stops_the_stream_and_keeps_what_was_seen(clip, tmp_path, capsys,
                                                                     display):
    make, displays = display
    make.close_after = 6
    code, printed, _ = run(capsys, "--camera", clip, "--out", tmp_path / "out")
    assert code == 0 and len(displays[0].frames) == 6
    assert [int(row["frame"]) for row in read_rows(tmp_path / "out" / "faces.csv")] == [
        0, 1, 2, 4, 5]
    assert "6 frames analysed, 5 faces found" in printed


def test_without_a_screen_the_camera_mode_is_a_one_sentence_error(clip, tmp_path, capsys,
                                                                  monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    code, printed, error = run(capsys, "--camera", clip, "--out", tmp_path / "out")
    assert code == 2 and printed == "" and not (tmp_path / "out").exists()
    assert error == ("error: --camera shows the stream in a window, but this session has no "
                     "screen (DISPLAY is not set); nothing was read; run it in a desktop "
                     "session, or analyse a recording with `python -m utils.predict VIDEO`\n")


def test_a_camera_that_cannot_be_opened_is_a_one_sentence_error(tmp_path, capsys, display):
    code, _, error = run(capsys, "--camera", "9", "--out", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()
    assert error.endswith("error: camera 9: OpenCV cannot open this camera; check that it is "
                          "connected and not in use by another program, or give a video file\n")
    code, _, error = run(capsys, "--camera", tmp_path / "none.mp4")
    assert code == 2 and error == (f"error: {tmp_path / 'none.mp4'}: no such video file "
                                   f"(--camera takes a device number or a video file)\n")


def test_the_smoothed_label_follows_each_face_over_its_last_frames():
    smoother = LabelSmoother(frames=3)
    happy, sad = np.eye(7)[3], np.eye(7)[4]
    left, right = np.array([10, 10, 50, 50]), np.array([200, 10, 50, 50])
    flicker = [0.6 * happy + 0.4 * sad, 0.45 * happy + 0.55 * sad, 0.6 * happy + 0.4 * sad]
    for frame, probabilities in enumerate(flicker):
        # The left face moves a little each frame; the right one is steadily sad.
        smoothed = smoother.update(np.array([left + [2 * frame, 0, 0, 0], right]),
                                   np.array([probabilities, sad]))
        assert smoothed.argmax(axis=1).tolist() == [3, 4]
    np.testing.assert_allclose(smoothed[0], np.mean(flicker, axis=0))
    # Only the last 3 frames count, and a face that left the picture starts afresh.
    smoothed = smoother.update(np.array([left + [6, 0, 0, 0]]), np.array([sad]))
    np.testing.assert_allclose(smoothed[0], np.mean([flicker[1], flicker[2], sad], axis=0))
    assert smoother.update(np.array([right]), np.array([happy])).argmax(axis=1).tolist() == [3]
