"""Everything a run writes and counts: annotated images or video, per-face charts, faces.csv,
the frequency table, inputs.csv and the summary."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.predict.drawing import annotate, encode_png, face_chart, frequency_chart
from utils.predict.faces import region_boxes
from utils.predict.inputs import Item, Problem
from utils.predict.output import OutputFolder

UNITS = {"image": "image", "folder": "image", "video": "frame", "camera": "frame"}


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


def plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count != 1 else ''}"


@dataclass
class Report:
    """Everything written and counted while the items go by; finish() writes the rest."""
    folder: OutputFolder
    kind: str  # image | folder | video | camera
    input_name: str
    # What classifies the faces: its class_names name the columns. Read when the first faces
    # are reported, so that a model still loading (LoadingModel) is waited for only then.
    model: Any
    face_charts: bool
    annotated: bool = True  # an annotated copy of each image (folders, photos)
    fps: float = 0.0
    every: int = 1
    rows: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    no_face: list = field(default_factory=list)  # (source, frame): not the images
    n_items: int = 0
    used_names: set = field(default_factory=set)
    video: cv2.VideoWriter | None = None

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    def add(self, items: list[Item | Problem]) -> None:
        """A run of consecutive items, each Item classified. The faces' rows are made from the
        run's arrays at once: a folder of crops is a row an image, and NumPy's calls on one
        image's arrays (its box alone 14-48 us) took the two cores' time from the network."""
        with_faces = []  # (item, its drawn outputs' names)
        for item in items:
            if isinstance(item, Problem):
                self.problems.append(item)
                continue
            self.n_items += 1
            names = self._names(item)
            if len(item.regions):
                with_faces.append((item, names))
            else:
                self.no_face.append((item.source, item.frame))
        if not with_faces:
            return
        regions = np.concatenate([item.regions for item, _ in with_faces])
        # Python numbers, not NumPy scalars: a face's row formats in a third of the time (the
        # same text: a float64 formats as a float).
        faces = zip(region_boxes(regions).tolist(), regions[:, 4].tolist(),
                    np.concatenate([item.scores for item, _ in with_faces]).tolist(),
                    np.concatenate([item.probabilities for item, _ in with_faces]).tolist())
        class_names = self.class_names
        for item, names in with_faces:
            frame = "" if item.frame is None else item.frame
            time = "" if item.time is None else f"{item.time:.3f}"
            for index in range(1, len(item.regions) + 1):
                box, angle, score, probabilities = next(faces)
                label = probabilities.index(max(probabilities))  # the first maximum: np.argmax
                self.rows.append([item.source, frame, time, index, *box, f"{angle:.1f}",
                                  "" if math.isnan(score) else f"{score:.3f}",
                                  *[f"{p:.6f}" for p in probabilities],
                                  class_names[label], f"{probabilities[label]:.6f}"])
                if self.face_charts:
                    stem, where = names
                    title = (f"{where}, face {index}: {class_names[label]} "
                             f"({100 * probabilities[label]:.1f} %)")
                    self.folder.submit(f"charts/{stem}_face{index}.png", partial(
                        _chart_png, item.faces[index - 1], probabilities, class_names,
                        title))

    def _names(self, item: Item) -> tuple[str, str] | None:
        """(file stem, where) of an item's drawn outputs, None when nothing is drawn; submits
        its annotated image or video frame."""
        if self.kind == "video":
            # Encoded in order by a thread of its own, beside the main one.
            self.folder.in_order(self._write_frame, item)
            return f"frame{item.frame:06d}", f"frame {item.frame}"
        if self.kind == "camera":
            return f"frame{item.frame:06d}", f"frame {item.frame}"
        if not (self.annotated or self.face_charts):
            return None
        stem = self._unique_stem(Path(item.source).stem)
        if self.annotated:
            self.folder.submit(f"annotated/{stem}.png", partial(
                _annotated_png, item, self.class_names))
        return stem, item.source

    def _unique_stem(self, stem: str) -> str:
        # Two inputs with one stem (a.jpg, a.png, sub/a.jpg) must not overwrite each other.
        unique, n = stem, 1
        while unique in self.used_names:
            n += 1
            unique = f"{stem}_{n}"
        self.used_names.add(unique)
        return unique

    def _write_frame(self, item: Item) -> None:
        frame = annotate(item.image, item.regions, item.probabilities, self.class_names)
        if self.video is None:
            height, width = frame.shape[:2]
            self.video = cv2.VideoWriter(str(self.folder.path / "annotated.mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"),
                                         (self.fps or 25.0) / self.every, (width, height))
            self.folder.written["annotated.mp4"] = 1
        self.video.write(frame)

    def close_video(self) -> None:
        """Release the annotated video's writer (after its frames were written or cancelled)."""
        if self.video is not None:
            self.video.release()
            self.video = None

    def finish(self, model_line: str, seconds: float, notes: list[str]) -> list[str]:
        """Write the tables, charts and summary; return the summary's lines (``notes``, such
        as an interruption or a truncated video, go at their end)."""
        self.folder.finish_writes()
        self.close_video()
        header = ["source", "frame", "time_s", "face", "x", "y", "w", "h", "angle", "score",
                  *[f"p_{name}" for name in self.class_names], "label", "probability"]
        self.folder.write("faces.csv", csv_bytes(header, self.rows))
        lines = [model_line, self._input_line()]
        if self.kind == "image":
            lines += [f"  face {row[3]} at x={row[4]} y={row[5]} w={row[6]} h={row[7]}: "
                      f"{row[-2]} ({100 * float(row[-1]):.1f} %)" for row in self.rows]
        else:
            lines += self._frequencies()
        if self.kind == "folder":
            self.folder.write("inputs.csv", csv_bytes(["source", "status", "faces", "detail"],
                                                      self._input_rows()))
        lines += self._problem_lines()
        unit = UNITS[self.kind]
        lines.append(f"analysed in {seconds:.1f} s: {self.n_items / max(seconds, 1e-9):.1f} "
                     f"{unit}s/s, {len(self.rows) / max(seconds, 1e-9):.1f} faces/s")
        lines += notes
        self.folder.write("summary.txt", ("\n".join(lines) + "\n").encode())
        self.folder.finish_writes()
        outputs = ", ".join(f"{name} ({n})" if name.endswith("/") else name
                            for name, n in sorted(self.folder.written.items()))
        lines.append(f"outputs in {self.folder.out}: {outputs}")
        return lines

    def _input_line(self) -> str:
        unit = UNITS[self.kind]
        return (f"input {self.input_name} ({self.kind}): {plural(self.n_items, unit)} analysed"
                + (f" (one frame in {self.every})" if unit == "frame" and self.every > 1 else "")
                + (f", {len(self.problems)} file(s) skipped" if self.kind == "folder" else "")
                + f", {plural(len(self.rows), 'face')} found")

    def _frequencies(self) -> list[str]:
        labels = [self.class_names.index(row[-2]) for row in self.rows]
        counts = np.bincount(np.array(labels, np.int64), minlength=len(self.class_names))
        total = int(counts.sum())
        rows = [[name, int(c), f"{100 * c / total:.2f}" if total else "0.00"]
                for name, c in zip(self.class_names, counts)]
        self.folder.write("frequencies.csv", csv_bytes(
            ["emotion", "absolute", "relative_percent"], rows + [["TOTAL", total, ""]]))
        self.folder.submit("frequencies.png", partial(
            frequency_chart, counts, self.class_names, f"{self.input_name}: predicted emotion "
            f"of {plural(total, 'face')} in {plural(self.n_items, UNITS[self.kind])}"))
        return ["frequency of each predicted emotion:",
                *frequency_table(counts, self.class_names)]

    def _problem_lines(self) -> list[str]:
        lines = []
        if self.problems:
            lines.append(f"skipped ({len(self.problems)}):")
            lines += [f"  {problem.source}: {problem.reason}" for problem in self.problems]
        if self.no_face and UNITS[self.kind] == "frame":
            frames = [frame for _, frame in self.no_face]
            shown = ", ".join(map(str, frames[:20])) + (", ..." if len(frames) > 20 else "")
            lines.append(f"no face found in {len(frames)} frame(s): {shown}")
        elif self.no_face:
            lines.append(f"no face found in {len(self.no_face)} image(s): "
                         + ", ".join(source for source, _ in self.no_face))
        return lines

    def _input_rows(self) -> list[list]:
        faces_per_source: dict[str, int] = {}
        for row in self.rows:
            faces_per_source[row[0]] = faces_per_source.get(row[0], 0) + 1
        rows = [[problem.source, "skipped", 0, problem.reason] for problem in self.problems]
        rows += [[source, "no face", 0, ""] for source, _ in self.no_face]
        rows += [[source, "faces", n, ""] for source, n in faces_per_source.items()]
        return sorted(rows)


def _annotated_png(item: Item, class_names: list[str]) -> bytes:
    return encode_png(annotate(item.image, item.regions, item.probabilities, class_names))


def _chart_png(face, probabilities, class_names, title) -> bytes:
    return encode_png(face_chart(face, probabilities, class_names, title))
