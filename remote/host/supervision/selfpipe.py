"""Signals as events of the supervisor's loop: a handler only records the signal and writes a byte to a
pipe the loop waits on, so nothing runs inside a signal handler (gunicorn's arbiter does the same).

The same pipe wakes the loop when a job finishes off it (jobs.py).
"""

import os
import signal
from typing import Iterable, List


class SelfPipe:
    """The wake-up pipe and the signals received since the last ``take()``."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._received: List[int] = []

    def fileno(self) -> int:
        return self._read

    def catch(self, signals: Iterable[int]) -> None:
        for signum in signals:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._received.append(signum)
        self.wake()

    def wake(self) -> None:
        """From any thread or handler: the loop's select returns now."""
        try:
            os.write(self._write, b"x")
        except OSError:  # full: the loop is awake already
            pass

    def take(self) -> List[str]:
        """The names (``sigterm``, ...) of the signals received since the last call, each once, in order."""
        try:
            while os.read(self._read, 4096):
                pass
        except OSError:  # drained (EAGAIN)
            pass
        received, self._received = self._received, []
        return [signal.Signals(signum).name.lower() for signum in dict.fromkeys(received)]
