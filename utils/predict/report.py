"""Everything a run writes and counts: annotated images, charts, faces.csv, the frequency table,
inputs.csv and the summary."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.model_io import atomic_write
from utils.predict.drawing import annotate, encode_png, face_chart, frequency_chart
from utils.predict.inputs import Item, Problem


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
