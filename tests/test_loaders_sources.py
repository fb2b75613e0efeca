"""Reading FER2013 sources: the Kaggle CSV (plain, gzip) and the folder layout, and bad input."""
import dataclasses
import bz2
import gzip
import tarfile

import cv2
import numpy as np
import pytest

from loaders.sources import CLASS_NAMES, DatasetError, read_csv, read_folder, read_source
from loaders_testdata import SAMPLE_CSV, sample_lines, write_csv, write_image_folder


@pytest.fixture(scope="module")
def sample():
    return read_source(SAMPLE_CSV)


@pytest.fixture(scope="module")
def lines():
    return sample_lines()


def test_sample_has_every_class_in_training_and_public_test(sample):
    assert sample.images.shape == (700, 48, 48) and sample.images.dtype == np.uint8
    assert sample.labels.dtype == np.int32 and sample.kind == "csv.gz"
    for usage, per_class in (("Training", 80), ("PublicTest", 20)):
        counts = np.bincount(sample.labels[sample.usage == usage], minlength=7)
        assert counts.tolist() == [per_class] * 7
    assert set(sample.usage) == {"Training", "PublicTest"}
    assert sample.skipped == ()


def test_pixels_are_the_row_values_in_row_major_order(sample, lines):
    _, rows = lines
    emotion, pixels, usage = rows[5].split(",")
    assert sample.images[5].ravel().tolist() == [int(value) for value in pixels.split()]
    assert sample.labels[5] == int(emotion) and sample.usage[5] == usage


def test_quoted_fields_crlf_bom_and_gzip_read_the_same(tmp_path, lines, sample):
    header, rows = lines
    quoted = [f'{e},"{p}",{u}' for e, p, u in (row.split(",") for row in rows[:6])]
    plain = read_csv(write_csv(tmp_path / "plain.csv", header, rows[:6]))
    variants = [
        write_csv(tmp_path / "quoted.csv", header, quoted),
        write_csv(tmp_path / "crlf.csv", "\ufeff" + header, rows[:6], line_end="\r\n"),
        write_csv(tmp_path / "packed.gz.whatever", header, rows[:6], compress=True),
    ]
    for path in variants:
        data = read_csv(path)
        np.testing.assert_array_equal(data.images, plain.images)
        np.testing.assert_array_equal(data.labels, plain.labels)
        np.testing.assert_array_equal(data.usage, plain.usage)
    np.testing.assert_array_equal(plain.images, sample.images[:6])
    assert plain.kind == "csv" and read_csv(variants[2]).kind == "csv.gz"


def test_columns_in_another_order_and_private_test_rows(tmp_path, lines):
    header, rows = lines
    reordered = [f"{u},{e},{p}" for e, p, u in (row.split(",") for row in rows[:3])]
    reordered[1] = reordered[1].replace("Training", "PrivateTest", 1)
    data = read_csv(write_csv(tmp_path / "f.csv", "Usage,emotion,pixels", reordered))
    assert data.usage.tolist() == ["Training", "PrivateTest", "Training"]


def _one_row_changed(tmp_path, lines, change, name="bad.csv"):
    header, rows = lines
    rows = rows[:4]
    rows[1] = change(rows[1])  # line 3 of the file
    return write_csv(tmp_path / name, header, rows)


def _drop_last_pixel(row):
    emotion, pixels, usage = row.split(",")
    return f"{emotion},{pixels.rsplit(' ', 1)[0]},{usage}"


def _set_pixel(value):
    def change(row):
        emotion, pixels, usage = row.split(",")
        return f"{emotion},{value} {pixels.split(' ', 1)[1]},{usage}"
    return change


@pytest.mark.parametrize("change, message", [
    (_drop_last_pixel, "expected 2304 pixel values, found 2303"),
    (_set_pixel("12a"),
     "the pixels contain 'a'; expected 2304 integers 0..255 separated by spaces"),
    (_set_pixel("-4"), "the pixels contain '-'; expected 2304 integers 0..255 separated by spaces"),
    (_set_pixel("256"), "pixel value 256 is out of range 0..255"),
    (lambda row: "7" + row[1:], "emotion '7' is not a class number 0..6"),
    (lambda row: "x" + row[1:], "emotion 'x' is not a class number 0..6"),
    (lambda row: row.rsplit(",", 1)[0] + ",Validation",
     "unknown Usage 'Validation' (expected Training, PublicTest or PrivateTest)"),
    (lambda row: row.rsplit(",", 1)[0], "expected 3 comma-separated fields, found 2"),
    (lambda row: row.replace(" ", "  ", 3), None),  # runs of spaces are fine
])
def test_a_bad_row_is_named_by_file_and_line(tmp_path, lines, change, message):
    path = _one_row_changed(tmp_path, lines, change)
    if message is None:
        assert len(read_csv(path).images) == 4
        return
    with pytest.raises(DatasetError) as error:
        read_csv(path)
    assert str(error.value) == (f"{path}, line 3: {message} "
                                f"(--skip-bad-rows / skip_bad_rows=True leaves them out)")


def test_runs_of_spaces_that_hide_a_missing_value_are_caught(tmp_path, lines):
    # 2303 values but 2303 separators: the quick space count says 2304, the exact count not.
    path = _one_row_changed(tmp_path, lines,
                            lambda row: _drop_last_pixel(row).replace(" ", "  ", 1))
    with pytest.raises(DatasetError, match=r"line 3: expected 2304 pixel values, found 2303"):
        read_csv(path)


def test_all_bad_rows_are_counted_and_can_be_skipped(tmp_path, lines, sample):
    header, rows = lines
    rows = rows[:10]
    rows[2], rows[5], rows[9] = "9" + rows[2][1:], _drop_last_pixel(rows[5]), rows[9][:4000]
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DatasetError) as error:
        read_csv(path)
    assert str(error.value) == (f"{path}, line 4: emotion '9' is not a class number 0..6; "
                                f"3 bad rows or images in all "
                                f"(--skip-bad-rows / skip_bad_rows=True leaves them out)")
    data = read_csv(path, skip_bad_rows=True)
    assert len(data.skipped) == 3 and data.skipped[1].startswith(f"{path}, line 7: ")
    np.testing.assert_array_equal(data.images, sample.images[[0, 1, 3, 4, 6, 7, 8]])


@pytest.mark.parametrize("content, message", [
    (b"", "empty file (expected the header emotion,pixels,Usage and one row per image)"),
    (b"emotion,pixels,Usage\n", "no image rows after the header"),
    (b"emotion,pixels\n3,1 2 3\n", "line 1: the header lacks the column(s) Usage "
                                   "(expected emotion,pixels,Usage, found emotion,pixels)"),
    (b"3,1 2 3,Training\n", "line 1: no header line (expected emotion,pixels,Usage)"),
    (b"\n3,1 2 3,Training\n", "line 1: empty line where the header emotion,pixels,Usage should be"),
])
def test_structural_problems(tmp_path, content, message):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as error:
        read_csv(path, skip_bad_rows=True)
    assert str(error.value) == f"{path}{', ' if message.startswith('line') else ': '}{message}"


def test_a_file_without_line_breaks_is_refused_early(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"emotion,pixels,Usage\n" + bytes(range(11, 256)) * 20_000)
    with pytest.raises(DatasetError) as error:
        read_csv(path, skip_bad_rows=True)
    assert str(error.value) == (f"{path}, line 2: a line longer than 1,048,576 bytes; "
                                f"this is not a FER2013 CSV")


def test_truncated_csv_names_its_last_line(tmp_path, lines):
    header, rows = lines
    path = tmp_path / "cut.csv"
    path.write_text(header + "\n" + "\n".join(rows[:3])[:-3000])
    with pytest.raises(DatasetError, match=r"cut.csv, line 4: expected 3 comma-separated "
                                           r"fields, found 2"):
        read_csv(path)


def test_truncated_and_corrupt_gzip(tmp_path):
    packed = SAMPLE_CSV.read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(packed[:len(packed) // 2])
    with pytest.raises(DatasetError) as error:
        read_csv(cut, skip_bad_rows=True)
    assert str(error.value) == \
        f"{cut}: truncated gzip file (it ends before its compressed data does)"
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(packed[:20] + bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"corrupt.csv.gz: corrupt gzip data \("):
        read_csv(corrupt)


def test_kaggle_tar_archive_is_recognised(tmp_path):
    archive = tmp_path / "fer2013.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(SAMPLE_CSV, arcname="fer2013/fer2013.csv")
    with pytest.raises(DatasetError) as error:
        read_source(archive)
    assert str(error.value) == (f"{archive}: a tar archive, not a CSV; extract fer2013.csv "
                                f"from it (tar xzf) and pass that")


def test_concatenated_gzip_members_are_one_file(tmp_path, lines):
    header, rows = lines
    path = tmp_path / "two.csv.gz"
    path.write_bytes(gzip.compress(f"{header}\n{rows[0]}\n".encode())
                     + gzip.compress(f"{rows[1]}\n".encode()))
    assert len(read_csv(path).images) == 2


def test_bzip2_csv_reads_like_the_plain_one_and_its_damage_is_named(tmp_path, lines, sample):
    header, rows = lines
    text = "\n".join([header, *rows]) + "\n"
    packed = tmp_path / "sample.csv.bz2"
    packed.write_bytes(bz2.compress(text.encode()[:len(text) // 2])
                       + bz2.compress(text.encode()[len(text) // 2:]))  # two streams
    data = read_csv(packed)
    assert data.kind == "csv.bz2"
    np.testing.assert_array_equal(data.images, sample.images)
    np.testing.assert_array_equal(data.labels, sample.labels)
    cut = tmp_path / "cut.csv.bz2"
    cut.write_bytes(packed.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="truncated bzip2 file"):
        read_csv(cut)
    corrupt = tmp_path / "corrupt.csv.bz2"
    corrupt.write_bytes(packed.read_bytes()[:10] + bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"corrupt.csv.bz2: corrupt bzip2 data \("):
        read_csv(corrupt)


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError) as error:
        read_source(tmp_path / "nope.csv")
    assert str(error.value) == f"{tmp_path / 'nope.csv'}: no such file or folder"


# ---------------------------------------------------------------- folders

@pytest.fixture(scope="module")
def small(sample):
    """A few images of every class and usage (keeps the folder tests quick)."""
    keep = np.concatenate([np.flatnonzero((sample.labels == label) & (sample.usage == usage))[:2]
                           for label in range(7) for usage in ("Training", "PublicTest")])
    keep = np.sort(keep)
    return dataclasses.replace(sample, images=sample.images[keep], labels=sample.labels[keep],
                               usage=sample.usage[keep])


def test_folder_source_reads_like_the_csv(tmp_path, small):
    data = read_source(write_image_folder(tmp_path / "fer", small))
    assert data.kind == "folder" and data.name == "fer"
    np.testing.assert_array_equal(data.images, small.images)
    np.testing.assert_array_equal(data.labels, small.labels)
    np.testing.assert_array_equal(data.usage, small.usage)


def test_class_folders_map_to_the_csv_numbers_not_alphabetical_order(tmp_path, small):
    image = small.images[0]
    for name in ("Neutral", "surprise", "angry", "disgust"):
        (tmp_path / "train" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "train" / name / "Training_1.png"), image)
    (tmp_path / "test" / "fear").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test" / "fear" / "PrivateTest_9.png"), image)
    cv2.imwrite(str(tmp_path / "test" / "fear" / "PublicTest_10.png"), image)
    (tmp_path / "train" / "angry" / ".DS_Store").write_bytes(b"ignored")
    data = read_folder(tmp_path)
    assert [CLASS_NAMES[label] for label in data.labels] == \
        ["angry", "disgust", "surprise", "neutral", "fear", "fear"]
    assert data.labels.tolist() == [0, 1, 5, 6, 2, 2]
    assert data.usage.tolist() == ["Training"] * 4 + ["PublicTest", "PrivateTest"]


def test_folder_order_is_numeric_not_by_name(tmp_path, small):
    folder = tmp_path / "train" / "happy"
    folder.mkdir(parents=True)
    for number, image in zip((10, 9, 100), small.images):
        cv2.imwrite(str(folder / f"Training_{number}.png"), image)
    np.testing.assert_array_equal(read_folder(tmp_path).images, small.images[[1, 0, 2]])


def _folder_with(tmp_path, small, relative, content):
    write_image_folder(tmp_path, small)
    bad = tmp_path / relative
    bad.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        assert cv2.imwrite(str(bad), content)
    return bad


@pytest.mark.parametrize("relative, content, message", [
    ("train/happy/Training_99999.png", b"not a png", "unreadable image (OpenCV cannot decode it)"),
    ("train/happy/Training_99999.png", np.zeros((48, 40), np.uint8),
     "image is 40x48, expected 48x48"),
    ("train/happy/notes.txt", b"x", "not an image file (expected one of .png .jpg .jpeg .bmp "
                                    ".pgm .tif .tiff .webp)"),
    ("test/happy/Test_1.png", np.zeros((48, 48), np.uint8),
     "a test image's name must start with PublicTest_ or PrivateTest_"),
])
def test_bad_images_are_named_by_path_and_can_be_skipped(tmp_path, small, relative, content,
                                                         message):
    bad = _folder_with(tmp_path, small, relative, content)
    with pytest.raises(DatasetError) as error:
        read_folder(tmp_path)
    assert str(error.value) == \
        f"{bad}: {message} (--skip-bad-rows / skip_bad_rows=True leaves them out)"
    data = read_folder(tmp_path, skip_bad_rows=True)
    assert data.skipped == (f"{bad}: {message}",)
    np.testing.assert_array_equal(data.images, small.images)


def test_unknown_class_or_split_folder(tmp_path, small):
    write_image_folder(tmp_path, small)
    (tmp_path / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError) as error:
        read_folder(tmp_path, skip_bad_rows=True)
    assert str(error.value) == (f"{tmp_path / 'train' / 'contempt'}: unknown class folder "
                                f"(expected one of {', '.join(CLASS_NAMES)})")
    (tmp_path / "train" / "contempt").rmdir()
    (tmp_path / "validation").mkdir()
    with pytest.raises(DatasetError,
                       match=r"validation: unknown folder \(expected train/ and test/"):
        read_folder(tmp_path)
    (tmp_path / "validation").rmdir()
    (tmp_path / "train").rename(tmp_path / "training")
    with pytest.raises(DatasetError, match=r"training: unknown folder"):
        read_folder(tmp_path)


def test_folder_without_train(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError) as error:
        read_folder(tmp_path)
    assert str(error.value) == (f"{tmp_path}: no train/ folder "
                                f"(expected train/<class>/ and test/<class>/)")
