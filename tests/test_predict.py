"""utils.predict on real faces: collages of upscaled FER2013 sample faces, folders, a video, and
every kind of bad input. The shipped default model classifies; one compiled copy is shared."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from loaders.augment import get_variant
from loaders.batches import scale_pixels
from loaders.sources import CLASS_NAMES
from predict_support import (BACKGROUND, CLEAR_MARGIN, COLLAGE_FACES, MAX_PROBABILITY_DIFFERENCE,
                             MEAN_PROBABILITY_DIFFERENCE, MIN_IOU, collage, iou, model_fixture,
                             probabilities_of, read_rows, resaved_model, run, sample_fixture,
                             variant_model, write_png, write_video)
from utils.models import model_io
from utils.predict import DEFAULT_MODEL, EmotionModel
from utils.predict import drawing
from utils.predict.faces import HaarDetector, crop_faces


# ---- detection and classification of real faces ----------------------------------------------
def test_the_detector_finds_each_collage_face_once_where_it_is(sample):
    faces = sample.images[list(COLLAGE_FACES)]
    image, truth = collage(faces)
    found = HaarDetector().detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).boxes
    assert len(found) == len(truth)
    # Reading order: the i-th detection is the i-th face of the grid.
    assert all(iou(box, face) >= MIN_IOU for box, face in zip(found, truth))


def test_collage_command_finds_classifies_and_draws_every_face(sample, model, tmp_path, capsys):
    faces = sample.images[list(COLLAGE_FACES)]
    image, truth = collage(faces)
    write_png(tmp_path / "collage.png", image)
    out = tmp_path / "out"
    # The collage's faces were chosen for the cascade (its box covers each 48x48 image); the
    # default detector's collage test is in test_predict_faces.
    code, printed, _ = run(capsys, tmp_path / "collage.png", "--model", DEFAULT_MODEL,
                           "--out", out, "--detector", "haar")
    assert code == 0
    rows = read_rows(out / "faces.csv")
    assert len(rows) == len(truth)
    boxes = np.array([[int(row[k]) for k in "xywh"] for row in rows])
    for face_index, face_box in enumerate(truth):
        matches = [i for i, box in enumerate(boxes) if iou(box, face_box) >= MIN_IOU]
        assert matches == [face_index]

    crop_p = probabilities_of(rows)
    original_p = model.probabilities(faces, augment=True)
    difference = np.abs(crop_p - original_p).max(axis=1)
    assert difference.max() <= MAX_PROBABILITY_DIFFERENCE
    assert difference.mean() <= MEAN_PROBABILITY_DIFFERENCE
    top_two = np.sort(original_p, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] >= CLEAR_MARGIN
    assert clear.sum() >= 4  # the check below must not be vacuous
    np.testing.assert_array_equal(crop_p.argmax(1)[clear], original_p.argmax(1)[clear])
    assert [row["label"] for row in rows] == [CLASS_NAMES[i] for i in crop_p.argmax(1)]
    np.testing.assert_allclose([float(row["probability"]) for row in rows], crop_p.max(1))

    annotated = cv2.imread(str(out / "annotated" / "collage.png"))
    assert annotated.shape == image.shape and not np.array_equal(annotated, image)
    for index in range(1, len(truth) + 1):
        chart = cv2.imread(str(out / "charts" / f"collage_face{index}.png"))
        assert chart is not None and chart.shape[0] > 100
    for row in rows:
        assert f"face {row['face']} at x={row['x']} y={row['y']}" in printed
        assert row["label"] in printed
    assert (out / "summary.txt").read_text().splitlines()[1] in printed


def test_plain_and_augmented_outputs_follow_the_models_test_views(sample, model):
    faces = sample.images[list(COLLAGE_FACES)]
    plain = np.asarray(model.network_outputs(scale_pixels(faces)))  # the centre window
    np.testing.assert_allclose(model.logits(faces, augment=False), plain, atol=1e-5)
    views = numpy_test_views(model, faces)
    assert len(views) == model.online.n_views * (2 if model.variant.name == "mirror" else 1)
    expected = np.mean([np.asarray(model.network_outputs(scale_pixels(view)))
                        for view in views], axis=0)
    np.testing.assert_allclose(model.logits(faces, augment=True), expected, atol=1e-5)


def numpy_test_views(model, faces):
    """The model's test views cut by NumPy: its variant's versions (the image, and its mirror
    for the mirror variant), each in the centre window and, for a model trained on crop_to
    windows, the four corner ones, each followed by its mirror when it trained with flips."""
    online = model.online
    assert online.pad == 0, "this reference covers crop_to windows, not padded crops"
    size = online.size or faces.shape[1]
    margin = faces.shape[1] - size
    offsets = [(margin // 2, margin // 2)] + (
        [(0, 0), (0, margin), (margin, 0), (margin, margin)] if online.size else [])
    versions = [faces] + ([faces[:, :, ::-1]] if model.variant.name == "mirror" else [])
    views = []
    for version in versions:
        for top, left in offsets:
            window = version[:, top:top + size, left:left + size]
            views += [window] + ([window[:, :, ::-1]] if online.flip else [])
    return views


def test_no_detect_takes_each_image_as_one_face(sample, model, tmp_path, capsys):
    # 70 crops: read 32 a job (pipeline.CROPS_PER_JOB), a broken file among them, and a
    # subfolder; classified in runs of 16 (the small batch) and reported a run at a time.
    faces = sample.images[:70]
    names = [f"crop{index:02d}.png" if index < 40 else f"sub/crop{index:02d}.png"
             for index in range(70)]
    for name, face in zip(names, faces):
        write_png(tmp_path / "crops" / name, face)
    (tmp_path / "crops" / "crop33b.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code, printed, _ = run(capsys, tmp_path / "crops", "--out", out, "--no-detect",
                           "--no-augment")
    assert code == 0
    assert "70 images analysed, 1 file(s) skipped, 70 faces found" in printed
    rows = read_rows(out / "faces.csv")
    assert [(row["source"], row["face"], row["x"], row["y"], row["w"], row["h"])
            for row in rows] == [(name, "1", "0", "0", "48", "48") for name in names]
    # A 48x48 crop is the network's input unchanged: the same probabilities to 6 decimals.
    expected = model.probabilities(faces, augment=False)
    np.testing.assert_allclose(probabilities_of(rows), expected, atol=1e-6)
    assert [row["label"] for row in rows] == [CLASS_NAMES[i] for i in expected.argmax(1)]
    skipped = [row for row in read_rows(out / "inputs.csv") if row["status"] != "faces"]
    assert skipped == [{"source": "crop33b.png", "status": "skipped", "faces": "0",
                        "detail": "not an image OpenCV can read"}]


# ---- folders and videos ----------------------------------------------------------------------
def test_folder_run_counts_faces_and_lists_skipped_files(sample, tmp_path, capsys):
    folder = tmp_path / "photos"
    picks = sample.images[list(COLLAGE_FACES)]
    write_png(folder / "two.png", collage(picks[:2])[0])
    write_png(folder / "sub" / "two.png", collage(picks[2:5])[0])  # same stem, 3 faces
    assert cv2.imwrite(str(folder / "one.jpg"), collage(picks[5:6])[0],
                       [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_png(folder / "blank.png", np.full((300, 400, 3), BACKGROUND, np.uint8))
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.png").write_bytes((folder / "two.png").read_bytes()[:60])
    write_png(folder / ".hidden.png", collage(picks[:1])[0])
    out = tmp_path / "out"

    # Per-face charts are opt-in for folders (test_predict_speed checks the default).
    code, printed, _ = run(capsys, folder, "--out", out, "--face-charts")

    assert code == 0
    rows = read_rows(out / "faces.csv")
    per_source = {source: sum(row["source"] == source for row in rows)
                  for source in {row["source"] for row in rows}}
    assert per_source == {"two.png": 2, "sub/two.png": 3, "one.jpg": 1}
    counts = np.bincount([CLASS_NAMES.index(row["label"]) for row in rows], minlength=7)
    table = read_rows(out / "frequencies.csv")
    assert [row["emotion"] for row in table] == [*CLASS_NAMES, "TOTAL"]
    assert [int(row["absolute"]) for row in table] == [*counts, 6]
    np.testing.assert_allclose([float(row["relative_percent"]) for row in table[:7]],
                               100 * counts / 6, atol=0.005)
    assert {row["source"]: row["status"] for row in read_rows(out / "inputs.csv")} == {
        "blank.png": "no face", "broken.png": "skipped", "notes.txt": "skipped",
        "one.jpg": "faces", "sub/two.png": "faces", "two.png": "faces"}
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [
        "blank.png", "one.png", "two.png", "two_2.png"]
    assert len(list((out / "charts").iterdir())) == 6
    assert (out / "frequencies.png").stat().st_size > 0
    assert "4 images analysed, 2 file(s) skipped, 6 faces found" in printed
    assert "broken.png: not an image OpenCV can read" in printed
    assert "notes.txt: not an image OpenCV can read" in printed
    assert "no face found in 1 image(s): blank.png" in printed
    assert f"  TOTAL {6:15d}" in printed
    assert ".hidden" not in printed + (out / "inputs.csv").read_text()


def test_video_run_counts_the_faces_of_each_frame(sample, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    # 20 frames (test_predict_models checks a stream classified in several runs).
    write_video(video, sample.images[list(COLLAGE_FACES[:4])], n_frames=20, blank_every=4)
    out = tmp_path / "out"

    code, printed, _ = run(capsys, video, "--out", out)

    assert code == 0
    rows = read_rows(out / "faces.csv")
    blank = [3, 7, 11, 15, 19]
    with_face = [f for f in range(20) if f not in blank]
    assert [int(row["frame"]) for row in rows] == with_face
    assert [float(row["time_s"]) for row in rows] == [f / 10 for f in with_face]
    # The same picture every 4th frame gets the same label.
    labels = {int(row["frame"]): row["label"] for row in rows}
    for first in (0, 1, 2):
        assert len({labels[f] for f in range(first, 20, 4)}) == 1
    table = read_rows(out / "frequencies.csv")
    counts = np.bincount([CLASS_NAMES.index(label) for label in labels.values()], minlength=7)
    assert [int(row["absolute"]) for row in table] == [*counts, 15]
    assert "20 frames analysed, 15 faces found" in printed
    assert "no face found in 5 frame(s): 3, 7, 11, 15, 19" in printed
    assert not (out / "charts").exists()  # per-face charts are off for videos by default
    annotated = cv2.VideoCapture(str(out / "annotated.mp4"))
    n_frames = 0
    while annotated.read()[0]:
        n_frames += 1
    annotated.release()
    assert n_frames == 20

    code, printed, _ = run(capsys, video, "--out", tmp_path / "every3", "--every", "3")
    assert code == 0
    assert [int(row["frame"]) for row in read_rows(tmp_path / "every3" / "faces.csv")] == [
        0, 6, 9, 12, 18]
    assert "7 frames analysed (one frame in 3), 5 faces found" in printed


# ---- bad input -------------------------------------------------------------------------------
def test_image_without_a_face_is_reported(tmp_path, capsys, monkeypatch):
    write_png(tmp_path / "wall.png", np.full((240, 320, 3), 90, np.uint8))
    monkeypatch.chdir(tmp_path)
    code, printed, _ = run(capsys, "wall.png")
    assert code == 0
    assert "1 image analysed, 0 faces found" in printed
    assert "no face found in 1 image(s): wall.png" in printed
    out = tmp_path / "predictions" / "wall"  # the default output folder
    assert read_rows(out / "faces.csv") == []
    assert (out / "annotated" / "wall.png").is_file()


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "no such file or folder"),
    ("notes.png", b"just text\n", "not an image OpenCV can read"),
    ("empty.png", b"", "not an image OpenCV can read"),
    ("clip.mp4", b"not a video at all\n" * 10, "OpenCV cannot open this video"),
    ("empty_folder", "folder", "the folder holds no files"),
])
def test_unusable_inputs_are_errors_naming_the_file(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    code, printed, error = run(capsys, path, "--out", tmp_path / "out")
    assert code == 2 and printed == ""
    assert error == f"error: {path}: {message}\n"
    assert not (tmp_path / "out").exists()


def test_bad_detector_settings_and_frame_step_are_refused(tmp_path, capsys, sample):
    write_png(tmp_path / "face.png", collage(sample.images[:1])[0])
    code, _, error = run(capsys, tmp_path / "face.png", "--scale-factor", "1.0")
    assert code == 2 and error.startswith("error: scale factor must be > 1")
    code, _, error = run(capsys, tmp_path / "face.png", "--every", "0")
    assert code == 2 and error == "error: --every must be at least 1, got 0\n"


def test_unusable_models_are_clear_errors(tmp_path, capsys, sample):
    image = tmp_path / "face.png"
    write_png(image, collage(sample.images[:1])[0])

    def refused(model_path) -> str:
        code, printed, error = run(capsys, image, "--model", model_path, "--out",
                                   tmp_path / "out")
        assert code == 2 and printed == "" and not (tmp_path / "out").exists()
        return error

    def as_network_a(header):  # A's name and its four conv layers' dropout
        header["config"].update(network="A", p_dropConv=[0.0] * 4)
        header["network_options"].update(p_dropConv=[0.0] * 4)

    other_network = resaved_model(tmp_path, as_network_a)
    assert refused(other_network) == (
        f"error: {other_network}: params['0']['beta'] has shape (32,) but the network expects "
        f"(64,): a different architecture or configuration\n")

    wider = resaved_model(tmp_path, lambda h: h["network_options"].update(n_hidden=[100]))
    assert "a different architecture or configuration" in refused(wider)

    future = resaved_model(tmp_path, format_version=99)
    assert refused(future) == (f"error: {future}: fer-jax model format version 99 but this "
                               f"code reads versions 1 and 2; retrain or use the matching "
                               f"code version\n")

    not_a_model = tmp_path / "weights.h5"
    not_a_model.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert refused(not_a_model).startswith(f"error: {not_a_model}: not a fer-jax model file")
    assert refused(tmp_path / "nowhere") == f"error: {tmp_path / 'nowhere'}: no such file\n"


@pytest.mark.parametrize("variant, im_dim, n_views", [
    ("raw", 48, 1), ("crop5", 44, 10), ("variant14", 42, 14)])
def test_models_of_other_variants_see_their_datasets_views(sample, tmp_path, variant, im_dim,
                                                           n_views):
    model = EmotionModel(variant_model(tmp_path, variant, im_dim))
    faces = sample.images[list(COLLAGE_FACES[:3])]
    # The views match the training: a raw model trained without online flips sees the face
    # only (utils.training.views; the launcher's and utils.evaluate's views are the same).
    views = get_variant(variant).augment(faces)
    assert views.shape == (3, n_views, im_dim, im_dim)
    per_view = np.stack([np.asarray(model.network_outputs(scale_pixels(views[:, v])))
                         for v in range(n_views)], axis=1)
    np.testing.assert_allclose(model.logits(faces, augment=True), per_view.mean(axis=1),
                               atol=1e-5)
    np.testing.assert_allclose(model.logits(faces, augment=False), per_view[:, 0], atol=1e-5)


def test_a_model_whose_size_contradicts_its_variant_is_refused(tmp_path):
    path = variant_model(tmp_path, "crop5", 44)
    header, payload = model_io.load(path, model_io.MODEL_FORMAT)
    model_io.save(path, model_io.MODEL_FORMAT, {**header, "dataset_variant": "mirror"},
                  {"params": payload["params"], "bn_state": payload["bn_state"]})
    with pytest.raises(model_io.ModelFileError, match="trained on 44x44 images, but its "
                       "dataset variant 'mirror' makes 48x48 ones"):
        EmotionModel(path)


def test_crops_are_the_boxes_resized_to_48(sample):
    face = sample.images[0]
    image = np.zeros((300, 300), np.uint8)
    image[10:10 + 96, 20:20 + 96] = cv2.resize(face, (96, 96), interpolation=cv2.INTER_NEAREST)
    crop = crop_faces(image, np.array([[20, 10, 96, 96]]))
    assert crop.shape == (1, 48, 48)
    # INTER_AREA halving averages each 2x2 block: pixel-replicated faces come back exactly.
    np.testing.assert_array_equal(crop[0], face)


def test_the_frequency_chart_draws_each_class_as_tall_as_its_share():
    counts = np.array([120, 90, 300, 2900, 800, 650, 1500])
    chart = cv2.imdecode(np.frombuffer(drawing.frequency_chart(
        counts, list(CLASS_NAMES), "title"), np.uint8), cv2.IMREAD_COLOR)
    assert chart.shape == (*drawing.FREQUENCY_CHART_SIZE, 3)
    bar = np.all(chart == drawing.BAR_BGR, axis=2)
    columns = np.flatnonzero(bar.any(axis=0))
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)  # one run per bar
    heights = np.array([bar[:, run[len(run) // 2]].sum() for run in runs])
    assert len(runs) == 7
    # pixels per count: the same for every bar, within the rounding of one pixel
    np.testing.assert_allclose(heights, counts * heights[3] / counts[3], atol=1.0)
