"""Ctrl-C and SIGTERM as a request to stop at the next mini-batch, so a checkpoint can be saved.

    with StopRequests() as stop:
        for batch in batches:
            ...
            if stop.requested:
                save_checkpoint(); raise RunStopped(...)

A second Ctrl-C stops at once (KeyboardInterrupt; the last checkpoint stands). Outside the main
thread signals cannot be caught, so the caller's handling is left as it is.
"""
from __future__ import annotations

import os
import signal


class StopRequests:
    def __init__(self):
        self.requested: str | None = None  # the signal's name once one arrived
        self._previous = {}

    def _request(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "StopRequests":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._request)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exception) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


STARTING = "interrupted (Ctrl-C) while the launcher was starting: nothing was written"


def _exit_while_starting(signum, frame) -> None:
    os.write(2, f"\n{STARTING}\n".encode())
    os._exit(130)


def exit_at_once_on_ctrl_c() -> None:
    """Until ``ctrl_c_unwinds()``, Ctrl-C prints one sentence and ends the process (130).

    For a script's first seconds, while JAX loads: nothing has been written yet, and a
    KeyboardInterrupt raised in a library's initialisation prints a long traceback and can
    crash the interpreter's exit (a segmentation fault, status 139)."""
    signal.signal(signal.SIGINT, _exit_while_starting)


def ctrl_c_unwinds() -> None:
    """Ctrl-C raises KeyboardInterrupt again (so cleanup code runs), if the above was set."""
    if signal.getsignal(signal.SIGINT) is _exit_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
