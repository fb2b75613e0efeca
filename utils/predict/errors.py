"""What stops a run: an input, output or setting that cannot be used, and Ctrl-C.

Within ``ctrl_c_stops_gracefully()`` (the command and every run enter it) the first Ctrl-C
only sets a flag that the run checks between runs of images: it stops there and writes what it
analysed. Python's default, a KeyboardInterrupt raised wherever the main thread happens to be,
can land in a library's callback (JAX's garbage-collection hook) and be lost with a traceback
printed, and the run goes on. A second Ctrl-C raises KeyboardInterrupt as usual.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_ctrl_c = threading.Event()
_depth = 0  # nesting of ctrl_c_stops_gracefully() in the main thread


class PredictError(ValueError):
    """An input, output folder or option that cannot be used; the message is one sentence
    naming it, saying what was expected and what to do."""


class Interrupted(Exception):
    """Ctrl-C during a run, after the outputs of what was analysed were written; ``lines`` is
    the summary of that part."""

    def __init__(self, lines: list[str], out):
        super().__init__("interrupted")
        self.lines, self.out = lines, out


def ctrl_c_requested() -> bool:
    return _ctrl_c.is_set()


def _on_ctrl_c(signum, frame) -> None:
    if _ctrl_c.is_set():
        raise KeyboardInterrupt  # the second Ctrl-C: stop at once
    _ctrl_c.set()


@contextmanager
def ctrl_c_stops_gracefully():
    """Ctrl-C sets ctrl_c_requested() instead of raising (see the module's docstring). Only
    in the main thread, and only over Python's own handler (a program that ignores SIGINT or
    handles it itself keeps its way)."""
    global _depth
    install = (threading.current_thread() is threading.main_thread() and _depth == 0
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if install:
        _ctrl_c.clear()
        previous = signal.signal(signal.SIGINT, _on_ctrl_c)
    if install or _depth:
        _depth += 1
    try:
        yield
    finally:
        if install or _depth:
            _depth -= 1
        if install:
            signal.signal(signal.SIGINT, previous)
            _ctrl_c.clear()
