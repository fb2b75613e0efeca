"""The experiment registry: one CSV row per finished run, appended under an exclusive lock.

Runs that finish together each get their row: ``append_registry_row`` holds the lock file
``.<registry name>.lock`` beside the CSV (``utils.support.safe_files.exclusive_lock``) while it
writes, appends exactly one line (flushed and fsynced) and never rewrites earlier rows, except when
the row brings a column the file lacks (a newer launcher): then the whole file is rewritten with
the column added at the end, atomically and under the same lock.

Plain Python (no JAX): a writer imports it in milliseconds.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from utils.support.safe_files import atomic_write, exclusive_lock, remove_stale_temporaries


def csv_text(columns: list[str], rows: list[dict], *, header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def lock_path(registry: Path) -> Path:
    return registry.with_name(f".{registry.name}.lock")


def _columns(path: Path) -> list[str] | None:
    """The header of an existing registry; None when there is none (no file, or empty)."""
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle), None)
    except FileNotFoundError:
        return None


def _append_line(path: Path, text: str) -> None:
    with open(path, "ab+") as handle:
        # A row cut short by a crash stays on its own line rather than swallowing this one.
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                text = "\n" + text
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())


def _rewrite_with(path: Path, row: dict) -> None:
    """The whole registry again with the row's new columns added at the end, then the row."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    columns += [name for name in row if name not in columns]
    atomic_write(path, csv_text(columns, rows + [row]).encode())


def read_registry(path: Path) -> list[dict]:
    """The rows as {column: text}; a row cut short by a crash lacks its last columns (None)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def append_registry_row(path: Path, row: dict) -> None:
    """Add one row; earlier rows are kept, new columns (a newer launcher) are added at the end.

    Safe with any number of concurrent writers (each row is written under the lock) and
    against a writer killed mid-write (the file is appended to or atomically replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path(path)):
        remove_stale_temporaries(path.parent, (path.name,))
        columns = _columns(path)
        if not columns:
            atomic_write(path, csv_text(list(row), [row]).encode())
        elif set(row) <= set(columns):
            _append_line(path, csv_text(columns, [row], header=False))
        else:
            _rewrite_with(path, row)
