"""utils.gpu_check.carry: a file packed into parts, the parts arriving one call at a time in a
staging folder, the file rebuilt byte for byte; damaged or missing parts refused clearly."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from utils.gpu_check import carry


@pytest.fixture
def packed(tmp_path):
    source = tmp_path / "data.h5"
    rng = np.random.default_rng(0)
    # compressible and not: pixels of a few values, then noise
    source.write_bytes(rng.integers(0, 4, 300_000, np.uint8).tobytes()
                       + rng.integers(0, 256, 50_000, np.uint8).tobytes())
    parts = carry.pack(source, tmp_path / "carry", parts=3, preset=1)
    return source, tmp_path / "carry", parts


def test_parts_arrive_one_call_at_a_time_and_rebuild_the_file(packed, tmp_path, capsys):
    source, folder, parts = packed
    assert [p.parent.name for p in parts] == ["1", "2", "3"]
    sizes = [p.stat().st_size for p in parts]
    assert sizes[:2] == [sizes[0]] * 2 and 0 < sizes[2] <= sizes[0]  # nearly equal parts
    assert sum(sizes) < source.stat().st_size  # compressed
    stash, to = tmp_path / "stash", tmp_path / "datasets"
    for call, part in enumerate(parts, start=1):
        arrived = tmp_path / f"call{call}" / "carry"  # what one call brings: one part folder
        shutil.copytree(part.parent, arrived / part.parent.name)
        code = carry.main(["unpack", str(arrived), "--stash", str(stash), "--to", str(to)])
        printed = capsys.readouterr().out
        assert code == 0
        if call < len(parts):
            assert printed.startswith(f"data.h5: {call} of 3 parts kept in {stash}; carry the "
                                      f"rest (")
            assert not (to / "data.h5").exists()
    assert printed == f"{to / 'data.h5'}: rebuilt, SHA-256 checked\n"
    assert (to / "data.h5").read_bytes() == source.read_bytes()


def test_a_damaged_part_is_refused_and_nothing_is_written(packed, tmp_path, capsys):
    _, folder, parts = packed
    damaged = bytearray(parts[1].read_bytes())
    damaged[10] ^= 1
    parts[1].write_bytes(bytes(damaged))
    code = carry.main(["unpack", str(folder), "--stash", str(tmp_path / "s"), "--to",
                       str(tmp_path / "d")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {parts[1]}: its size or SHA-256 differs from the manifest's (a part of another "
        f"packing, or damaged in transit); pack the file again and carry its parts\n")
    assert not (tmp_path / "d").exists()


def test_a_rebuilt_file_that_differs_from_its_checksum_is_not_kept(packed, tmp_path):
    _, folder, parts = packed
    stash = tmp_path / "stash"
    manifest = carry.stash(folder, stash)
    manifest["sha256"] = "0" * 64  # the parts are intact; the whole is not what was packed
    with pytest.raises(carry.CarryError, match="rebuilt file's SHA-256 differs"):
        carry.unpack(stash, manifest, tmp_path / "datasets")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_no_manifest_says_what_to_carry(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = carry.main(["unpack", str(tmp_path / "empty"), "--stash", str(tmp_path / "s"),
                       "--to", str(tmp_path / "d")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: no manifest.json under {tmp_path / 'empty'}, {tmp_path / 's'}: carry a part's "
        f"folder written by `python -m utils.gpu_check.carry pack`\n")
