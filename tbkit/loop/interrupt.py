"""SIGINT/SIGTERM as a flag checked between iterations, and the resulting error."""

from __future__ import annotations

import signal

from tbkit.errors import TbkitError


class InterruptFlag:
    """Turns SIGINT/SIGTERM into a flag checked between iterations."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Interrupted(TbkitError):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
