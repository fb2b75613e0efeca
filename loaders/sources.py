"""Read FER2013 sources into arrays: a Kaggle CSV (plain or gzip) or a folder of class folders.

Both readers return the same `SourceData`: uint8 pixels [N, 48, 48], int32 labels [N] in the CSV
numbering (0=angry ... 6=neutral) and each image's Usage (Training, PublicTest or PrivateTest).
Every problem with the input is a `DatasetError` whose message names the file and the line (CSV)
or the path (folder). Bad rows or images are collected over the whole source, so the message can
say how many there are; with `skip_bad_rows=True` they are left out and counted instead.
"""
from __future__ import annotations

import bz2
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE_NAMES = ("Training", "PublicTest", "PrivateTest")
TEST_USAGES = ("PublicTest", "PrivateTest")
IMAGE_SIZE = 48
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
CSV_COLUMNS = ("emotion", "pixels", "Usage")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_USAGE_CODES = {name.encode(): code for code, name in enumerate(USAGE_NAMES)}
_PIXEL_CHARACTERS = b"0123456789 "
_READ_BLOCK_BYTES = 1 << 20
# A row of 2304 pixels takes at most about 9 KB; a far longer line means this is no FER2013 CSV.
_MAX_LINE_BYTES = 1 << 20
# Compressed CSVs are recognised by their first bytes, whatever their name:
# magic -> (kind, a new decompressor, the error a corrupt stream raises, the format's name)
_COMPRESSIONS = {
    b"\x1f\x8b": ("csv.gz", lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip"),
    b"BZh": ("csv.bz2", bz2.BZ2Decompressor, OSError, "bzip2"),
}
_UTF8_BOM = b"\xef\xbb\xbf"


class DatasetError(ValueError):
    """Bad dataset input or output; the message names the file and the row or path."""


@dataclass(frozen=True)
class SourceData:
    images: np.ndarray  # uint8 [N, 48, 48]
    labels: np.ndarray  # int32 [N], 0..6 in CLASS_NAMES order
    usage: np.ndarray  # str [N], one of USAGE_NAMES
    name: str  # the source's file or folder name
    kind: str  # "csv", "csv.gz", "csv.bz2" or "folder"
    sha256: str  # of a CSV's bytes; of a folder, of each image's relative path and bytes in order
    skipped: tuple[str, ...]  # one message per bad row or image left out


@dataclass(frozen=True)
class Labelling:
    """The labels a build gives the source's rows: FER2013's own (`of`) or another label set
    for the same images (loaders.ferplus)."""
    class_names: tuple[str, ...]
    labels: np.ndarray  # int32 [N], one per source row
    keep: np.ndarray  # bool [N]: the rows the label set keeps
    columns: dict[str, np.ndarray]  # more per-row arrays to store with each image
    attributes: dict  # more root attributes of the file

    @classmethod
    def of(cls, data: SourceData) -> "Labelling":
        return cls(CLASS_NAMES, data.labels, np.ones(len(data.labels), bool), {}, {})


def read_source(source: str | os.PathLike, *, skip_bad_rows: bool = False,
                progress: bool = False) -> SourceData:
    """Read a Kaggle CSV, a gzip-compressed CSV (detected by content) or a folder source."""
    path = Path(source)
    if path.is_dir():
        return read_folder(path, skip_bad_rows=skip_bad_rows, progress=progress)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    return read_csv(path, skip_bad_rows=skip_bad_rows, progress=progress)


def _bad_input_error(problems: list[str]) -> DatasetError:
    more = (f"; {len(problems)} bad rows or images in all" if len(problems) > 1 else "")
    return DatasetError(f"{problems[0]}{more} "
                        f"(--skip-bad-rows / skip_bad_rows=True leaves them out)")


# ---------------------------------------------------------------- CSV

def read_csv(path: str | os.PathLike, *, skip_bad_rows: bool = False,
             progress: bool = False) -> SourceData:
    """Read a Kaggle `fer2013.csv` (`emotion,pixels,Usage`, any column order, extra columns
    ignored, pixel field quoted or not), plain, gzip- or bzip2-compressed.

    Parsing is vectorised per block of lines: each row's fields are checked in a light Python
    pass (the class number, the Usage, the pixel characters and count), then all the good rows'
    pixel strings of the block are converted by one `np.fromstring` call.
    """
    path = Path(path)
    problems: list[str] = []
    # Large bytearrays grow in place (realloc), so the pixels never exist twice, as they would
    # when concatenating per-block arrays at the end.
    pixels = bytearray()
    label_list, usage_list = [], []
    header = None
    try:
        with open(path, "rb") as raw_file:
            start = raw_file.read(3)
            compression = next((c for magic, c in _COMPRESSIONS.items()
                                if start.startswith(magic)), None)
            kind = compression[0] if compression else "csv"
            raw_file.seek(0)
            size = os.fstat(raw_file.fileno()).st_size
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}",
                      disable=not progress, leave=False) as bar:
                for first_line, lines in _line_blocks(path, raw_file, compression, bar):
                    if header is None:
                        header = _parse_header(path, lines[0])
                        lines, first_line = lines[1:], first_line + 1
                    block, labels, usages = _parse_rows(path, lines, first_line, header,
                                                        problems)
                    pixels += block.tobytes()
                    label_list.extend(labels)
                    usage_list.extend(usages)
            sha256 = file_sha256(path)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None
    if header is None:
        raise DatasetError(f"{path}: empty file (expected the header "
                           f"{','.join(CSV_COLUMNS)} and one row per image)")
    if problems and not skip_bad_rows:
        raise _bad_input_error(problems)
    images = np.frombuffer(pixels, np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if len(images) == 0:
        raise DatasetError(f"{path}: no image rows after the header"
                           + (f" ({len(problems)} bad rows skipped)" if problems else ""))
    return SourceData(images, np.array(label_list, np.int32),
                      np.array(USAGE_NAMES)[np.array(usage_list, np.int64)],
                      path.name, kind, sha256, tuple(problems))


def _line_blocks(path: Path, raw_file, compression, bar) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, complete lines) per block read; line numbers count from 1."""
    line_number = 1
    tail = b""
    for data in _decompressed_blocks(path, raw_file, compression, bar):
        lines = (tail + data).split(b"\n")
        tail = lines.pop()
        if len(tail) > _MAX_LINE_BYTES:
            raise DatasetError(f"{path}, line {line_number + len(lines)}: a line longer than "
                               f"{_MAX_LINE_BYTES:,} bytes; this is not a FER2013 CSV")
        if line_number == 1 and lines and lines[0].startswith(_UTF8_BOM):
            lines[0] = lines[0][len(_UTF8_BOM):]
        if lines:
            yield line_number, lines
            line_number += len(lines)
    if tail.strip():
        yield line_number, [tail.removeprefix(_UTF8_BOM) if line_number == 1 else tail]


def _decompressed_blocks(path: Path, raw_file, compression, bar) -> Iterator[bytes]:
    _, new_decompressor, corrupt, name = compression or (None, None, None, None)
    decompressor = new_decompressor() if compression else None
    while chunk := raw_file.read(_READ_BLOCK_BYTES):
        bar.update(len(chunk))
        if decompressor is None:
            yield chunk
            continue
        try:
            data = decompressor.decompress(chunk)
            # A compressed file may hold several members (streams) one after the other.
            while decompressor.eof and decompressor.unused_data:
                rest = decompressor.unused_data
                decompressor = new_decompressor()
                data += decompressor.decompress(rest)
        except corrupt as error:
            raise DatasetError(f"{path}: corrupt {name} data ({error})") from None
        yield data
    if decompressor is not None and not decompressor.eof:
        raise DatasetError(f"{path}: truncated {name} file (it ends before its compressed data "
                           f"does)")


class _Header(NamedTuple):
    emotion_at: int
    pixels_at: int
    usage_at: int
    n_fields: int


def _parse_header(path: Path, line: bytes) -> _Header:
    expected = ",".join(CSV_COLUMNS)
    # Kaggle distributes the CSV inside fer2013.tar.gz; a tar header has "ustar" at byte 257.
    if line[257:262] == b"ustar":
        raise DatasetError(f"{path}: a tar archive, not a CSV; extract fer2013.csv from it "
                           f"(tar xzf) and pass that")
    if not line.strip():
        raise DatasetError(f"{path}, line 1: empty line where the header {expected} should be")
    names = [field.strip().strip(b'"').decode("utf-8", "replace")
             for field in line.rstrip(b"\r").split(b",")]
    if names[0].strip().isdigit():
        raise DatasetError(f"{path}, line 1: no header line (expected {expected})")
    positions = {name.lower(): index for index, name in enumerate(names)}
    missing = [column for column in CSV_COLUMNS if column.lower() not in positions]
    if missing:
        found = ",".join(names)
        found = found if len(found) <= 80 else found[:77] + "..."
        raise DatasetError(f"{path}, line 1: the header lacks the column(s) {', '.join(missing)} "
                           f"(expected {expected}, found {found})")
    return _Header(*(positions[column.lower()] for column in CSV_COLUMNS), len(names))


def _parse_rows(path: Path, lines: list[bytes], first_line: int, header: _Header,
                problems: list[str]) -> tuple[np.ndarray, list[int], list[int]]:
    """uint8 [n_good, 2304] pixels, labels and usage codes of the good rows among `lines`."""
    good_lines, pixel_fields, labels, usages = [], [], [], []
    for line_number, line in enumerate(lines, first_line):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        checked = _parse_row(f"{path}, line {line_number}", line, header)
        if isinstance(checked, str):
            problems.append(checked)
            continue
        good_lines.append(line_number)
        for column, value in zip((pixel_fields, labels, usages), checked):
            column.append(value)
    values = np.fromstring(b" ".join(pixel_fields), dtype=np.int32, sep=" ")
    if values.size != N_PIXELS * len(pixel_fields):
        # Runs of several spaces made the quick count too high somewhere: count exactly.
        counts = [len(pixels.split()) for pixels in pixel_fields]
        keep = [count == N_PIXELS for count in counts]
        problems += [f"{path}, line {line_number}: expected {N_PIXELS} pixel values, found "
                     f"{count}" for line_number, count, ok in zip(good_lines, counts, keep)
                     if not ok]
        good_lines, pixel_fields, labels, usages = (
            [item for item, ok in zip(items, keep) if ok]
            for items in (good_lines, pixel_fields, labels, usages))
        values = np.fromstring(b" ".join(pixel_fields), dtype=np.int32, sep=" ")
    values = values.reshape(len(pixel_fields), N_PIXELS)
    keep = values.max(axis=1, initial=0) <= 255
    problems += [f"{path}, line {good_lines[row]}: pixel value {values[row].max()} is out of "
                 f"range 0..255" for row in np.flatnonzero(~keep)]
    return (values[keep].astype(np.uint8), [label for label, ok in zip(labels, keep) if ok],
            [usage for usage, ok in zip(usages, keep) if ok])


def _parse_row(where: str, line: bytes, header: _Header):
    """(pixel field, label, usage code) of one data line, or the sentence saying what is wrong."""
    emotion_at, pixels_at, usage_at, n_fields = header
    fields = line.split(b",")
    if len(fields) != n_fields:
        return f"{where}: expected {n_fields} comma-separated fields, found {len(fields)}"
    emotion = fields[emotion_at].strip().strip(b'"')
    if not (emotion.isdigit() and int(emotion) < len(CLASS_NAMES)):
        return f"{where}: emotion {_show(emotion)} is not a class number 0..6"
    usage = fields[usage_at].strip().strip(b'"')
    if usage not in _USAGE_CODES:
        return (f"{where}: unknown Usage {_show(usage)} (expected Training, PublicTest or "
                f"PrivateTest)")
    pixels = fields[pixels_at].strip().strip(b'"').strip()
    stray = pixels.translate(None, _PIXEL_CHARACTERS)
    if stray:
        return (f"{where}: the pixels contain {_show(stray[:1])}; expected {N_PIXELS} integers "
                f"0..255 separated by spaces")
    # Single spaces are the norm; count them, and count words only when that disagrees.
    n_values = pixels.count(b" ") + 1 if pixels else 0
    if n_values != N_PIXELS:
        n_values = len(pixels.split())
    if n_values != N_PIXELS:
        return f"{where}: expected {N_PIXELS} pixel values, found {n_values}"
    return pixels, int(emotion), _USAGE_CODES[usage]


def _show(raw: bytes) -> str:
    return repr(raw.decode("utf-8", "replace"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_READ_BLOCK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- folder

_NUMBER = re.compile(r"\d+")


def read_folder(path: str | os.PathLike, *, skip_bad_rows: bool = False,
                progress: bool = False) -> SourceData:
    """Read the folder layout of FER2013's public image distribution.

    `train/<class>/*` images are Training; `test/<class>/*` images are PublicTest or PrivateTest
    according to their name's prefix (`PublicTest_123.jpg`). Class folders are the names of
    CLASS_NAMES in any letter case and map to the CSV numbering, not to alphabetical order.
    Images are ordered like the CSV: Training, then PublicTest, then PrivateTest, each by the
    number in the file name (then by name, then by class). Hidden files are ignored; every
    other file must be a 48x48 image that OpenCV can decode (read as grayscale).
    """
    root = Path(path)
    problems: list[str] = []
    entries = []  # (usage code, number in the name, name, label, file path)
    split_folders = {"train": "train", "test": "test"}
    present = {child.name: child for child in _visible_children(root) if child.is_dir()}
    unknown = sorted(set(present) - set(split_folders))
    if unknown:
        raise DatasetError(f"{root / unknown[0]}: unknown folder (expected train/ and test/ "
                           f"holding one folder per class)")
    if "train" not in present:
        raise DatasetError(f"{root}: no train/ folder (expected train/<class>/ and test/<class>/)")
    for split in ("train", "test"):
        if split not in present:
            continue
        for class_folder in _visible_children(present[split]):
            if not class_folder.is_dir():
                continue
            label = _class_number(class_folder)
            for file in _visible_children(class_folder):
                usage = _file_usage(split, file, problems)
                if usage is not None:
                    number = _NUMBER.search(file.stem)
                    entries.append((usage, int(number.group()) if number else -1, file.name,
                                    label, file))
    entries.sort(key=lambda entry: entry[:4])
    images = np.empty((len(entries), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    keep = np.zeros(len(entries), bool)
    digest = hashlib.sha256()
    for index, (*_, file) in enumerate(tqdm(entries, desc=f"reading {root.name}",
                                                    disable=not progress, leave=False)):
        image = _read_image(file, digest, root, problems)
        if image is not None:
            images[index] = image
            keep[index] = True
    if problems and not skip_bad_rows:
        raise _bad_input_error(problems)
    if not keep.any():
        raise DatasetError(f"{root}: no images under train/<class>/")
    labels = np.array([entry[3] for entry in entries], np.int32)
    usage = np.array(USAGE_NAMES)[np.array([entry[0] for entry in entries], np.int64)]
    return SourceData(images[keep], labels[keep], usage[keep], root.name, "folder",
                      digest.hexdigest(), tuple(problems))


def _visible_children(folder: Path) -> list[Path]:
    try:
        return sorted(child for child in folder.iterdir() if not child.name.startswith("."))
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list ({error.strerror or error})") from None


def _class_number(class_folder: Path) -> int:
    name = class_folder.name.lower()
    if name not in CLASS_NAMES:
        raise DatasetError(f"{class_folder}: unknown class folder (expected one of "
                           f"{', '.join(CLASS_NAMES)})")
    return CLASS_NAMES.index(name)


def _file_usage(split: str, file: Path, problems: list[str]) -> int | None:
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        problems.append(f"{file}: not an image file (expected one of {' '.join(IMAGE_EXTENSIONS)})")
        return None
    if split == "train":
        return USAGE_NAMES.index("Training")
    for usage in TEST_USAGES:
        if file.name.startswith(usage + "_"):
            return USAGE_NAMES.index(usage)
    problems.append(f"{file}: a test image's name must start with PublicTest_ or PrivateTest_")
    return None


def _read_image(file: Path, digest, root: Path, problems: list[str]) -> np.ndarray | None:
    """The image as uint8 [48, 48]; also adds its relative path and bytes to the checksum."""
    try:
        data = file.read_bytes()
    except OSError as error:
        problems.append(f"{file}: cannot read ({error.strerror or error})")
        return None
    digest.update(file.relative_to(root).as_posix().encode() + b"\0")
    digest.update(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if image is None:
        problems.append(f"{file}: unreadable image (OpenCV cannot decode it)")
        return None
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        problems.append(f"{file}: image is {image.shape[1]}x{image.shape[0]}, "
                        f"expected {IMAGE_SIZE}x{IMAGE_SIZE}")
        return None
    return image
