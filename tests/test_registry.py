"""The experiment registry under concurrent writers, and the locks and files it relies on.

The issue's probe: runs finishing together lost rows (each rewrote the whole CSV unlocked:
8 pairs of runs into a registry of 3,000 rows left 14 rows of 16; two writers of 100 rows
each kept 100). Here 8 processes append 50 rows each into a registry of 3,000 earlier rows.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launcher_support import PROJECT, TESTS

from utils.experiments.registry import append_registry_row, csv_text, lock_path
from utils.support.safe_files import (LockHeld, atomic_write, exclusive_lock,
                                      remove_stale_temporaries, temporary_name)

EARLIER_ROWS = 3000


def earlier_registry(path: Path) -> list[dict]:
    rows = [{"finished": "2026-01-01 00:00:00", "writer": "earlier", "row": i,
             "test_error": i / EARLIER_ROWS, "n_hidden": "[1024]", "note": ""}
            for i in range(EARLIER_ROWS)]
    path.write_text(csv_text(list(rows[0]), rows))
    return rows


def run_writers(registry: Path, n_writers: int, n_rows: int, tmp_path: Path,
                new_column_at: int = -1) -> None:
    start = tmp_path / "start"
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    writers = [subprocess.Popen([sys.executable, str(TESTS / "registry_writer.py"),
                                 str(registry), f"w{k}", str(n_rows), str(start),
                                 str(new_column_at)], cwd=PROJECT, env=env)
               for k in range(n_writers)]
    start.touch()  # all of them start appending at once
    assert [w.wait(timeout=120) for w in writers] == [0] * n_writers  # 3: imported JAX


def read_registry(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def test_concurrent_writers_keep_every_row_and_the_csv_well_formed(tmp_path):
    registry = tmp_path / "experiments.csv"
    earlier_registry(registry)
    before = registry.read_bytes()
    run_writers(registry, n_writers=8, n_rows=50, tmp_path=tmp_path)
    header, rows = read_registry(registry)
    assert len(rows) == EARLIER_ROWS + 8 * 50
    assert all(len(row) == len(header) for row in rows)  # well-formed: every row complete
    assert registry.read_bytes().startswith(before)  # appended to, never rewritten
    written = [(row[header.index("writer")], int(row[header.index("row")])) for row in rows]
    expected = [("earlier", i) for i in range(EARLIER_ROWS)] + [
        (f"w{k}", i) for k in range(8) for i in range(50)]
    assert sorted(written) == sorted(expected)  # every row once (the old code kept 49 of 400)
    notes = {row[header.index("note")] for row in rows[EARLIER_ROWS:]}
    assert notes == {'a "quoted", comma\nand a new line'}
    assert not lock_path(registry).exists()  # released and removed


def test_new_columns_from_concurrent_writers_rewrite_the_file_without_losing_rows(tmp_path):
    registry = tmp_path / "experiments.csv"
    earlier_registry(registry)
    run_writers(registry, n_writers=4, n_rows=30, tmp_path=tmp_path, new_column_at=20)
    header, rows = read_registry(registry)
    assert header[:6] == ["finished", "writer", "row", "test_error", "n_hidden", "note"]
    assert sorted(header[6:]) == [f"extra_w{k}" for k in range(4)]  # added at the end
    assert len(rows) == EARLIER_ROWS + 4 * 30 and all(len(r) == len(header) for r in rows)
    records = [dict(zip(header, row)) for row in rows]
    for k in range(4):
        mine = sorted((r for r in records if r["writer"] == f"w{k}"), key=lambda r: int(r["row"]))
        assert [r["row"] for r in mine] == [str(i) for i in range(30)]
        assert [r[f"extra_w{k}"] for r in mine] == [""] * 20 + [str(i) for i in range(20, 30)]
    assert not list(tmp_path.glob(".experiments.csv.tmp*"))


def test_a_row_cut_short_by_a_crash_does_not_swallow_the_next(tmp_path):
    registry = tmp_path / "experiments.csv"
    append_registry_row(registry, {"a": 1, "b": 2})
    with open(registry, "a") as handle:
        handle.write("3,")  # a writer died mid-row
    append_registry_row(registry, {"a": 5, "b": 6})
    assert registry.read_text() == "a,b\n1,2\n3,\n5,6\n"


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f".checkpoint.msgpack.tmp{dead_pid()}"
    live = temporary_name(tmp_path / "checkpoint.msgpack")  # this process: alive
    other = tmp_path / f".experiments.csv.tmp{dead_pid()}"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path, ("checkpoint.msgpack",)) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_a_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from utils.support.safe_files import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)"],
        cwd=PROJECT, env=dict(os.environ, PYTHONPATH=str(PROJECT)), stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockHeld, match=rf"locked by process {holder.pid} on host "):
            with exclusive_lock(lock, wait=False):
                pass
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, the kernel drops the lock
        holder.wait()
    assert lock.exists()
    with exclusive_lock(lock, wait=False) as stale:
        assert stale.startswith(f"process {holder.pid} on host ")
    assert not lock.exists()


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.msgpack"
    atomic_write(target, b"good")

    def full_disk(path, data):
        Path(path).write_bytes(data[:1])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("utils.support.safe_files.write_durably", full_disk)
    with pytest.raises(OSError, match=rf"No space left on device: '{target}'"):
        atomic_write(target, b"better", keep_previous=tmp_path / "previous")
    assert target.read_bytes() == b"good" and not (tmp_path / "previous").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.msgpack"]
