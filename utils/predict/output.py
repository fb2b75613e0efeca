"""The output folder of a run: written as a fresh hidden folder beside it, renamed into place
only when complete, so an earlier run's outputs are never mixed with new ones nor lost to a run
that fails.

    folder = OutputFolder(Path("predictions/photos"), overwrite=False)  # refuses an earlier run
    folder.write("faces.csv", data)          # into predictions/.photos.partial<pid>/
    folder.commit()                          # renamed to predictions/photos
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from utils.predict.errors import PredictError

# What a run writes: a folder holding anything else is not an earlier run's, and --overwrite
# will not delete it.
OUTPUT_NAMES = frozenset({"annotated", "annotated.mp4", "charts", "faces.csv", "frequencies.csv",
                          "frequencies.png", "inputs.csv", "summary.txt"})
_MOST_PENDING_WRITES = 64  # encoded files held in memory while the writer threads catch up


def check_output_folder(out: Path, overwrite: bool) -> None:
    """A PredictError (what is wrong, that nothing was changed, what to do) unless ``out`` can
    receive this run's outputs."""
    if out.exists() and not out.is_dir():
        raise PredictError(f"{out}: --out must be a folder, but this is a file; nothing was "
                           f"written; give a folder path (it is created if missing)")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    foreign = [name for name in entries if name not in OUTPUT_NAMES]
    if foreign:
        raise PredictError(f"{out}: this folder holds files that are not a prediction run's "
                           f"outputs ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"
                           f"); nothing was changed; give --out a new or empty folder")
    if not overwrite:
        raise PredictError(f"{out}: holds the outputs of an earlier run; nothing was changed; "
                           f"give --overwrite to replace them, or another --out")


class OutputFolder:
    """Files written by a pool of threads (and, in order, by one more thread: the annotated
    video) into a fresh folder, renamed into place by commit()."""

    def __init__(self, out: Path, overwrite: bool = False, workers: int = 2):
        check_output_folder(out, overwrite)
        self.out = out
        target = Path(os.path.abspath(out))  # `--out .` has a parent and a name too
        self.path = target.parent / f".{target.name}.partial{os.getpid()}"
        try:
            shutil.rmtree(self.path, ignore_errors=True)  # a killed run of this process id
            self.path.mkdir(parents=True)
        except OSError as err:
            raise PredictError(f"{out}: cannot create the output folder there ({err.strerror}); "
                               f"nothing was written; give --out a folder you can write "
                               f"to") from None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="predict-writer")
        self._in_order_thread = ThreadPoolExecutor(1, thread_name_prefix="predict-in-order")
        self._pending: list[Future] = []
        self.written: dict[str, int] = {}  # top-level output -> files in it

    def write(self, relative: str, data: bytes) -> None:
        self.submit(relative, lambda: data)

    def submit(self, relative: str, make) -> None:
        """Write ``make()``'s bytes (encoding runs in a writer thread too) to ``relative``."""
        key = relative.split("/")[0] + ("/" if "/" in relative else "")
        self.written[key] = self.written.get(key, 0) + 1
        self._queue(self._pool, _write_file, self.path / relative, make)

    def in_order(self, function, *args) -> None:
        """Run function(*args) in a thread of its own, after the ones submitted before."""
        self._queue(self._in_order_thread, function, *args)

    def _queue(self, pool: ThreadPoolExecutor, function, *args) -> None:
        self._pending.append(pool.submit(function, *args))
        if len(self._pending) > _MOST_PENDING_WRITES:
            self._pending.pop(0).result()

    def finish_writes(self) -> None:
        """Wait for every write; the first that failed raises here."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def commit(self) -> None:
        """Replace ``out`` by the complete new folder (an earlier run's is deleted after)."""
        self.finish_writes()
        self._shutdown(cancel=False)
        target = Path(os.path.abspath(self.out))
        earlier = None
        if target.is_dir() and any(target.iterdir()):
            earlier = target.parent / f".{target.name}.earlier{os.getpid()}"
            os.replace(target, earlier)
        elif target.is_dir():
            target.rmdir()
        os.replace(self.path, target)
        if earlier is not None:
            shutil.rmtree(earlier, ignore_errors=True)

    def discard(self) -> None:
        """Delete the unfinished folder: ``out`` stays as it was."""
        self._shutdown(cancel=True)
        shutil.rmtree(self.path, ignore_errors=True)

    def _shutdown(self, cancel: bool) -> None:
        self._pool.shutdown(cancel_futures=cancel)
        self._in_order_thread.shutdown(cancel_futures=cancel)


def _write_file(target: Path, make) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(make())
