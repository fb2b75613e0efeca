"""Emotions of the faces in a photo, a folder of photos or a video, with a trained model.

    python -m utils.predict photo.jpg                    # the shipped default model
    python -m utils.predict photos/ --model trained_models/A_mirror --out results/
    python -m utils.predict news.mp4 --every 5

Faces are found with OpenCV's Haar cascade (``utils.faces``), cut out, made 48x48 grayscale and
classified by the model's own network after the same centre crop its dataset's test split holds.
By default each face's pre-softmax outputs are averaged over the model's test-time views (its
dataset variant's versions of an image, or image + mirror for a model trained on raw data): the
argmax is the launcher's augmented test, the probabilities are the softmax of that average.

Outputs, in --out (default predictions/<input name>/): annotated/ (boxes, label, probability),
charts/ (one bar chart of the seven probabilities per face), faces.csv (one row per face),
for folders and videos frequencies.csv and frequencies.png (how often each emotion won, as the
sister project's per-person tables), and summary.txt (what is printed). Every file is written
under a temporary name and renamed into place.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loaders.augment import get_variant
from loaders.batches import scale_pixels
from loaders.sources import IMAGE_SIZE, DatasetError
from utils.faces import DetectorSettings, FaceDetector, FaceDetectorError, crop_faces
from utils.losses import softmax
from utils.model_io import ModelFileError, atomic_write, load_model
from utils.views import mean_view_logits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = PROJECT_ROOT / "trained_models" / "default" / "model.msgpack"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".m4v")
# Views per compiled call: every call has this shape, so the network compiles once.
BATCH_VIEWS = 64
# Faces gathered from consecutive images or frames before the network runs on them, and the
# most images or frames held meanwhile.
FACES_PER_RUN = 32
ITEMS_PER_RUN = 16


class PredictError(ValueError):
    """An input that cannot be used at all (missing, unreadable, a video that will not open)."""


# ---------------------------------------------------------------------------------- the model
class EmotionModel:
    """A saved model ready for faces: its network compiled once for BATCH_VIEWS images."""

    def __init__(self, path):
        self.path = Path(path)
        loaded = load_model(self.path)
        header = loaded.header
        try:
            self.class_names = list(header["class_names"])
            im_dim = list(header["config"]["im_dim"])
            self.variant = get_variant(header["dataset_variant"])
        except (KeyError, TypeError, DatasetError) as err:
            raise ModelFileError(f"{self.path}: its header does not say how its images were "
                                 f"made ({type(err).__name__}: {err})") from None
        if im_dim != [self.variant.image_size] * 2:
            raise ModelFileError(f"{self.path}: trained on {im_dim[0]}x{im_dim[1]} images, but "
                                 f"its dataset variant {self.variant.name!r} makes "
                                 f"{self.variant.image_size}x{self.variant.image_size} ones")
        # A raw-trained model has no test-time views of its own; the mirror is always valid.
        self.test_views = (self.variant if self.variant.n_variants > 1
                           else get_variant("mirror"))
        self.network_name = loaded.network.name
        self._params, self._bn_state = loaded.params, loaded.bn_state
        network = loaded.network
        self._apply = jax.jit(lambda params, bn_state, x:
                              network.apply(params, bn_state, x, train=False)[0])

    def describe(self, augment: bool) -> str:
        size = self.variant.image_size
        views = (f"outputs averaged over {self.test_views.n_variants} test-time views "
                 f"({'; '.join(self.test_views.variant_names)})" if augment
                 else "plain view only")
        return (f"model {self.path} (network {self.network_name}, trained on the "
                f"{self.variant.name} variant, {size}x{size}); {views}")

    def network_outputs(self, x) -> jax.Array:
        """The network's pre-softmax outputs for float images [B, S, S, 1] in [0, 1]."""
        return self._apply(self._params, self._bn_state, x)

    def logits(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        """float64 [N, classes] for uint8 48x48 faces [N, 48, 48]: the plain view's outputs,
        or with ``augment`` their mean over the test-time views."""
        views = (self.test_views.augment(faces) if augment
                 else self.variant.test_view(faces)[:, None])
        n_faces, n_views, height, width = views.shape
        flat = views.reshape(n_faces * n_views, height, width)
        padded = -(-len(flat) // BATCH_VIEWS) * BATCH_VIEWS
        flat = np.concatenate([flat, np.zeros((padded - len(flat), height, width), np.uint8)])
        outputs = [np.asarray(self.network_outputs(scale_pixels(flat[start:start + BATCH_VIEWS])))
                   for start in range(0, padded, BATCH_VIEWS)]
        n_classes = len(self.class_names)
        outputs = np.concatenate(outputs) if outputs else np.zeros((0, n_classes), np.float32)
        return mean_view_logits(outputs[:n_faces * n_views], n_views)

    def probabilities(self, faces: np.ndarray, augment: bool) -> np.ndarray:
        return softmax(self.logits(faces, augment))


# ---------------------------------------------------------------------------------- inputs
@dataclass
class Item:
    """One image or video frame, its faces and (once classified) their probabilities."""
    source: str  # file name (relative to the input folder) or the video's name
    frame: int | None  # video frame number, from 0
    time: float | None  # seconds into the video
    image: np.ndarray  # BGR, as read
    boxes: np.ndarray  # int [N, 4]: x, y, w, h
    faces: np.ndarray  # uint8 [N, 48, 48]
    probabilities: np.ndarray | None = None


@dataclass
class Problem:
    source: str
    reason: str


def read_image(path: Path) -> np.ndarray | None:
    """BGR uint8, or None if OpenCV cannot decode the file (imdecode: any file name works)."""
    data = np.fromfile(path, np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def input_kind(path: Path) -> str:
    if not path.exists():
        raise PredictError(f"{path}: no such file or folder")
    if path.is_dir():
        return "folder"
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def folder_files(folder: Path) -> list[Path]:
    """Every non-hidden file under the folder, in sorted order."""
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(folder).parts))
    if not files:
        raise PredictError(f"{folder}: the folder holds no files")
    return files


def open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise PredictError(f"{path}: OpenCV cannot open this video")
    return capture


class Analyser:
    """Faces found (or, with detect=False, each whole image taken as one face) and cropped."""

    def __init__(self, detector: FaceDetector | None):
        self.detector = detector

    def item(self, source, image, frame=None, time=None) -> Item:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.detector is None:
            boxes = np.array([[0, 0, gray.shape[1], gray.shape[0]]])
        else:
            boxes = self.detector.detect(gray)
        return Item(source, frame, time, image, boxes, crop_faces(gray, boxes, IMAGE_SIZE))

    def images(self, paths: Iterable[Path], root: Path | None) -> Iterator[Item | Problem]:
        for path in paths:
            name = str(path.relative_to(root)) if root else path.name
            try:
                image = read_image(path)
            except OSError as err:
                yield Problem(name, f"cannot be read ({err.strerror or err})")
                continue
            if image is None:
                yield Problem(name, "not an image OpenCV can read")
                continue
            yield self.item(name, image)

    def frames(self, capture: cv2.VideoCapture, name: str, every: int) -> Iterator[Item]:
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        frame = 0
        while True:
            ok, image = capture.read()
            if not ok:
                return
            if frame % every == 0:
                yield self.item(name, image, frame, frame / fps if fps else None)
            frame += 1


def classified(items: Iterable[Item | Problem], model: EmotionModel,
               augment: bool) -> Iterator[Item | Problem]:
    """The items in order, each with its faces' probabilities; the network runs on the faces
    of several consecutive items at once."""
    pending: list[Item | Problem] = []

    def flush():
        analysed = [item for item in pending if isinstance(item, Item)]
        if analysed:
            probabilities = model.probabilities(
                np.concatenate([item.faces for item in analysed]), augment)
            ends = np.cumsum([len(item.faces) for item in analysed])[:-1]
            for item, rows in zip(analysed, np.split(probabilities, ends)):
                item.probabilities = rows
        yield from pending
        pending.clear()

    n_faces = 0
    for item in items:
        pending.append(item)
        n_faces += len(item.faces) if isinstance(item, Item) else 0
        # Frames are held until classified: bound them too, not only the faces.
        if n_faces >= FACES_PER_RUN or len(pending) >= ITEMS_PER_RUN:
            yield from flush()
            n_faces = 0
    yield from flush()


# ---------------------------------------------------------------------------------- outputs
CLASS_COLOURS_BGR = [(40, 40, 220), (40, 140, 40), (160, 60, 160), (0, 200, 255),
                     (200, 120, 40), (0, 140, 255), (160, 160, 160)]


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def figure_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def annotate(item: Item, class_names: list[str]) -> np.ndarray:
    """A copy of the image with each face's box, label and probability drawn on it."""
    image = item.image.copy()
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 250))
    for (x, y, w, h), probabilities in zip(item.boxes, item.probabilities):
        label = int(np.argmax(probabilities))
        colour = CLASS_COLOURS_BGR[label % len(CLASS_COLOURS_BGR)]
        cv2.rectangle(image, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), colour,
                      thickness)
        text = f"{class_names[label]} {100 * probabilities[label]:.0f}%"
        scale = max(0.35, w / 220)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                     thickness)
        # Above the box, or inside its top edge when the box touches the image's top.
        top = y - text_h - baseline - 2 * thickness if y >= text_h + baseline + 2 * thickness \
            else y
        cv2.rectangle(image, (int(x), int(top)),
                      (int(x + text_w + 2 * thickness), int(top + text_h + baseline + thickness)),
                      colour, cv2.FILLED)
        cv2.putText(image, text, (int(x + thickness), int(top + text_h + thickness)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return image


def face_chart(face: np.ndarray, probabilities: np.ndarray, class_names: list[str],
               title: str) -> bytes:
    """The face as the network saw it (48x48) beside a bar chart of its probabilities."""
    figure = Figure(figsize=(7.5, 3.0))
    grid = figure.add_gridspec(1, 2, width_ratios=[1, 3.2])
    face_axes = figure.add_subplot(grid[0])
    face_axes.imshow(face, cmap="gray", vmin=0, vmax=255)
    face_axes.set_axis_off()
    axes = figure.add_subplot(grid[1])
    winner = int(np.argmax(probabilities))
    colours = ["tab:orange" if i == winner else "tab:blue" for i in range(len(class_names))]
    bars = axes.bar(class_names, 100 * probabilities, color=colours)
    axes.bar_label(bars, labels=[f"{100 * p:.1f}" for p in probabilities], fontsize=8)
    axes.set_ylim(0, 110)
    axes.set_ylabel("probability (%)")
    axes.tick_params(axis="x", labelsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def frequency_chart(counts: np.ndarray, class_names: list[str], title: str) -> bytes:
    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    relative = 100 * counts / max(int(counts.sum()), 1)
    bars = axes.bar(class_names, relative, color="tab:blue")
    axes.bar_label(bars, labels=[f"{int(c)}\n{r:.1f} %" for c, r in zip(counts, relative)],
                   fontsize=8)
    axes.set_ylabel("relative frequency (%)")
    axes.set_ylim(0, max(10.0, 1.25 * relative.max()))
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def frequency_table(counts: np.ndarray, class_names: list[str]) -> list[str]:
    """The sister project's table: absolute and relative frequency per class, and the total."""
    total = int(counts.sum())
    lines = [f"  {'emotion':10} {'freq abs.':>10} {'freq rel.':>10}"]
    for name, count in zip(class_names, counts):
        relative = 100 * count / total if total else 0.0
        lines.append(f"  {name:10} {int(count):10d} {relative:9.2f} %")
    lines.append(f"  {'TOTAL':10} {total:10d}")
    return lines


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


@dataclass
class Report:
    """Everything written and counted while the items go by; finish() writes the rest."""
    out: Path
    kind: str  # image | folder | video
    input_name: str
    class_names: list[str]
    face_charts: bool
    fps: float = 0.0
    every: int = 1
    rows: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    no_face: list = field(default_factory=list)
    n_items: int = 0
    written: dict = field(default_factory=dict)  # output folder or file -> how many
    used_names: set = field(default_factory=set)
    video: cv2.VideoWriter | None = None
    video_path: Path | None = None

    def add(self, item: Item | Problem) -> None:
        if isinstance(item, Problem):
            self.problems.append(item)
            return
        self.n_items += 1
        if len(item.boxes) == 0:
            self.no_face.append(item)
        annotated = annotate(item, self.class_names)
        if self.kind == "video":
            self._write_frame(annotated)
            stem, where = f"frame{item.frame:06d}", f"frame {item.frame}"
        else:
            stem, where = self._unique_stem(Path(item.source).stem), item.source
            self._write(Path("annotated") / f"{stem}.png", encode_png(annotated))
        for index, (box, face, probabilities) in enumerate(
                zip(item.boxes, item.faces, item.probabilities), start=1):
            label = int(np.argmax(probabilities))
            self.rows.append([item.source, "" if item.frame is None else item.frame,
                              "" if item.time is None else f"{item.time:.3f}", index,
                              *map(int, box), *[f"{p:.6f}" for p in probabilities],
                              self.class_names[label], f"{probabilities[label]:.6f}"])
            if self.face_charts:
                self._write(Path("charts") / f"{stem}_face{index}.png",
                            face_chart(face, probabilities, self.class_names,
                                       f"{where}, face {index}: {self.class_names[label]} "
                                       f"({100 * probabilities[label]:.1f} %)"))

    def _unique_stem(self, stem: str) -> str:
        # Two inputs with one stem (a.jpg, a.png, sub/a.jpg) must not overwrite each other.
        unique, n = stem, 1
        while unique in self.used_names:
            n += 1
            unique = f"{stem}_{n}"
        self.used_names.add(unique)
        return unique

    def _write(self, relative: Path, data: bytes) -> None:
        atomic_write(self.out / relative, data)
        key = relative.parts[0] + ("/" if len(relative.parts) > 1 else "")
        self.written[key] = self.written.get(key, 0) + 1

    def _write_frame(self, frame: np.ndarray) -> None:
        if self.video is None:
            self.video_path = self.out / f".annotated.tmp{os.getpid()}.mp4"
            self.out.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            self.video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"),
                                         (self.fps or 25.0) / self.every, (width, height))
        self.video.write(frame)

    def discard_video(self) -> None:
        """Close and delete the half-written annotated video of a run that failed."""
        if self.video is not None:
            self.video.release()
            self.video_path.unlink(missing_ok=True)
            self.video = None

    def finish(self, model_line: str) -> list[str]:
        """Write the tables, charts and summary; return the summary's lines."""
        if self.video is not None:
            self.video.release()
            os.replace(self.video_path, self.out / "annotated.mp4")
            self.written["annotated.mp4"] = 1
        header = ["source", "frame", "time_s", "face", "x", "y", "w", "h",
                  *[f"p_{name}" for name in self.class_names], "label", "probability"]
        self._write(Path("faces.csv"), csv_bytes(header, self.rows))
        labels = [self.class_names.index(row[-2]) for row in self.rows]
        counts = np.bincount(np.array(labels, np.int64), minlength=len(self.class_names))
        unit = {"image": "image", "folder": "image", "video": "frame"}[self.kind]
        lines = [model_line, f"input {self.input_name} ({self.kind}): "
                 f"{self.n_items} {unit}{'s' if self.n_items != 1 else ''} analysed"
                 + (f" (one frame in {self.every})" if self.kind == "video" and self.every > 1
                    else "")
                 + (f", {len(self.problems)} file(s) skipped" if self.kind == "folder" else "")
                 + f", {len(self.rows)} face{'s' if len(self.rows) != 1 else ''} found"]
        if self.kind == "image":
            lines += [f"  face {row[3]} at x={row[4]} y={row[5]} w={row[6]} h={row[7]}: "
                      f"{row[-2]} ({100 * float(row[-1]):.1f} %)" for row in self.rows]
        else:
            total = int(counts.sum())
            rows = [[name, int(c), f"{100 * c / total:.2f}" if total else "0.00"]
                    for name, c in zip(self.class_names, counts)]
            self._write(Path("frequencies.csv"), csv_bytes(
                ["emotion", "absolute", "relative_percent"], rows + [["TOTAL", total, ""]]))
            self._write(Path("frequencies.png"), frequency_chart(
                counts, self.class_names, f"{self.input_name}: predicted emotion of {total} "
                f"face{'s' if total != 1 else ''} in {self.n_items} {unit}s"))
            lines += ["frequency of each predicted emotion:",
                      *frequency_table(counts, self.class_names)]
        if self.kind == "folder":
            self._write(Path("inputs.csv"), csv_bytes(
                ["source", "status", "faces", "detail"], self._input_rows()))
        if self.problems:
            lines.append(f"skipped ({len(self.problems)}):")
            lines += [f"  {problem.source}: {problem.reason}" for problem in self.problems]
        if self.no_face:
            if self.kind == "video":
                frames = [item.frame for item in self.no_face]
                shown = ", ".join(map(str, frames[:20])) + (", ..." if len(frames) > 20 else "")
                lines.append(f"no face found in {len(frames)} frame(s): {shown}")
            else:
                lines.append(f"no face found in {len(self.no_face)} image(s): "
                             + ", ".join(item.source for item in self.no_face))
        self._write(Path("summary.txt"), ("\n".join(lines) + "\n").encode())
        outputs = ", ".join(f"{name} ({n})" if name.endswith("/") else name
                            for name, n in sorted(self.written.items()))
        lines.append(f"outputs in {self.out}: {outputs}")
        return lines

    def _input_rows(self) -> list[list]:
        faces_per_source: dict[str, int] = {}
        for row in self.rows:
            faces_per_source[row[0]] = faces_per_source.get(row[0], 0) + 1
        rows = [[problem.source, "skipped", 0, problem.reason] for problem in self.problems]
        rows += [[item.source, "no face", 0, ""] for item in self.no_face]
        rows += [[source, "faces", n, ""] for source, n in faces_per_source.items()]
        return sorted(rows)


# ---------------------------------------------------------------------------------- the command
def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = DetectorSettings()
    parser = argparse.ArgumentParser(
        prog="python -m utils.predict",
        description="Find the faces in a photo, a folder of photos or a video, classify each "
                    "one's expression with a trained model, and write annotated images, "
                    "probability bar charts, a CSV of every face and, for folders and videos, "
                    "the frequency of each emotion.")
    parser.add_argument("input", type=Path, help="an image, a folder of images, or a video "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="a model.msgpack saved by run_experiment.py, or its folder "
                             "(default: the shipped trained_models/default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: predictions/<input name>/)")
    parser.add_argument("--no-detect", action="store_true",
                        help="the inputs are face crops already: take each whole image as "
                             "one face")
    parser.add_argument("--no-augment", action="store_true",
                        help="classify the plain view only, not the average over the model's "
                             "test-time views (image + mirror, or its variant's versions)")
    parser.add_argument("--scale-factor", type=float, default=defaults.scale_factor,
                        help="Haar cascade: size step between detection scales "
                             f"(default {defaults.scale_factor})")
    parser.add_argument("--min-neighbors", type=int, default=defaults.min_neighbors,
                        help="Haar cascade: overlapping detections a face needs; more: fewer "
                             f"false faces (default {defaults.min_neighbors})")
    parser.add_argument("--min-size", type=int, default=defaults.min_size,
                        help=f"smallest face side in pixels (default {defaults.min_size})")
    parser.add_argument("--every", type=int, default=1,
                        help="video: analyse every N-th frame (default 1: all)")
    parser.add_argument("--face-charts", action=argparse.BooleanOptionalAction, default=None,
                        help="one probability bar chart per face (default: yes for images and "
                             "folders, no for videos)")
    return parser.parse_args(argv)


def predict(input_path: Path, model: EmotionModel, out: Path | None = None, *,
            detector: FaceDetector | None, augment: bool = True, every: int = 1,
            face_charts: bool | None = None) -> list[str]:
    """Analyse an image, a folder or a video, write the outputs into ``out`` (default
    predictions/<input name>/) and return the summary's lines. ``detector=None`` takes each
    image or frame as one face. Raises PredictError for an input that cannot be used at all;
    a folder's unreadable files are skipped and listed instead."""
    if every < 1:
        raise PredictError(f"--every must be at least 1, got {every}")
    input_path = Path(input_path)
    kind = input_kind(input_path)
    files = folder_files(input_path) if kind == "folder" else [input_path]
    input_name = input_path.name if kind == "folder" else input_path.stem
    report = Report(Path(out) if out is not None else Path("predictions") / input_name, kind,
                    input_path.name, model.class_names, every=every,
                    face_charts=face_charts if face_charts is not None else kind != "video")
    analyser = Analyser(detector)
    capture = None
    if kind == "video":
        capture = open_video(input_path)
        report.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        items = analyser.frames(capture, input_path.name, every)
    else:
        items = analyser.images(files, input_path if kind == "folder" else None)
        if kind == "image":
            items = list(items)
            if isinstance(items[0], Problem):
                raise PredictError(f"{input_path}: {items[0].reason}")
    try:
        for item in classified(items, model, augment):
            report.add(item)
    except BaseException:
        report.discard_video()
        raise
    finally:
        if capture is not None:
            capture.release()
    if kind == "video" and report.n_items == 0:
        raise PredictError(f"{input_path}: no frame could be read from this video")
    return report.finish(model.describe(augment))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        settings = DetectorSettings(args.scale_factor, args.min_neighbors, args.min_size)
        input_kind(args.input)  # a missing input is reported before the model is loaded
        detector = None if args.no_detect else FaceDetector(settings)
        model = EmotionModel(args.model)
        lines = predict(args.input, model, args.out, detector=detector,
                        augment=not args.no_augment, every=args.every,
                        face_charts=args.face_charts)
    except (PredictError, ModelFileError, FaceDetectorError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
