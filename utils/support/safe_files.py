"""Files written so that nothing already saved is lost: atomic replacement, exclusive locks.

``atomic_write`` writes beside the target under ``.<name>.tmp<PID>``, flushes and fsyncs it,
then renames it over the target (optionally keeping the target's previous version under
another name first), so a reader sees the old file or the new one, never a partial one. A
writer killed mid-write leaves only its temporary file, which ``remove_stale_temporaries``
clears once its process is gone.

``exclusive_lock`` holds an advisory ``fcntl.flock`` lock on a small lock file holding the
holder's process id, host and start time. The kernel drops the lock when its process dies,
however it dies, so a lock file left behind by a killed process is recognised as stale (it
can be locked) and taken over. POSIX only, like the rest of the launcher's run management.

Plain Python (no JAX), so small tools and concurrent writers import it in milliseconds.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# What a full or over-quota disk raises: the run cannot write, but what it wrote before is
# intact and it can go on once there is room.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash after it cannot bring the old name back).

    Best effort: some filesystems refuse fsync on a folder, and the rename itself is done."""
    try:
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    except OSError:
        pass


def write_durably(path: Path, data: bytes) -> None:
    """Write, flush and fsync a new file (where a full disk says so)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes, *, keep_previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary name: never a partial file.

    keep_previous: rename the existing ``path`` to it just before the new file takes its
    place, so the previous version survives a bad write. A failure raises OSError naming
    ``path`` and leaves ``path`` (and ``keep_previous``) as they were.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write_durably(tmp, data)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Remove the ``.<name>.tmp<PID>`` files of writers that died mid-write (their process is
    gone); ``names``: only those targets. Returns what was removed."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _TEMPORARY.match(entry.name)
        if (match and (names is None or match["name"] in names)
                and not process_is_alive(int(match["pid"]))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` says which (pid, host, since)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


def describe_holder(text: str) -> str:
    """'process 1234 on host h since 2026-01-02 10:11:12' from a lock file's contents."""
    fields = text.split(maxsplit=2)
    if len(fields) < 2 or not fields[0].isdigit():
        return "another process (it has not written its id yet)"
    since = f" since {fields[2]}" if len(fields) == 3 else ""
    return f"process {fields[0]} on host {fields[1]}{since}"


def _open_locked(path: Path, wait: bool) -> int:
    """A descriptor of ``path`` holding its lock; the file is the one now at ``path``."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(handle)
            raise LockHeld(path, describe_holder(_read_text(path))) from None
        try:
            if os.fstat(handle).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        # Its previous holder removed the file while we waited: lock the one at the path now.
        os.close(handle)


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""


@contextmanager
def exclusive_lock(path: Path, *, wait: bool = True) -> Iterator[str]:
    """Hold an exclusive lock on the file ``path`` (created, and removed on release).

    Yields the description of a stale holder (a process that died holding it: its file was
    left behind) or "" . wait=False: raise LockHeld at once when a live process holds it.
    """
    path = Path(path)
    handle = _open_locked(path, wait)
    try:
        left_behind = os.read(handle, 4096).decode(errors="replace").strip()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()} {socket.gethostname()} {stamp}\n".encode(), 0)
        yield describe_holder(left_behind) if left_behind else ""
    finally:
        # Removed while still locked, so a waiter can tell (inode check) and start again.
        Path(path).unlink(missing_ok=True)
        os.close(handle)
