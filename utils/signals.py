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
