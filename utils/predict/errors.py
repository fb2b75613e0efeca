"""What stops a run: an input, output or setting that cannot be used, and Ctrl-C."""
from __future__ import annotations


class PredictError(ValueError):
    """An input, output folder or option that cannot be used; the message is one sentence
    naming it, saying what was expected and what to do."""


class Interrupted(Exception):
    """Ctrl-C during a run, after the outputs of what was analysed were written; ``lines`` is
    the summary of that part."""

    def __init__(self, lines: list[str], out):
        super().__init__("interrupted")
        self.lines, self.out = lines, out
