"""Host-side commands that carry bytes: an archive out of one host, into another, or both at once.

invoke's run() is made for text (it decodes, and reads an in_stream a byte at a time), so the data
commands (ctl snapshot --stream, backup-read, restore --stream) run through this instead: an SSH
channel of the connection the task already has, or a local process for `connection: local`; the
same calls either way. The request goes first on stdin as for every ctl call; a binary command's
answer is the last line of its stderr (its stdout is the archive), a restore's the last line of stdout.

Every read and write has a bound on the monotonic clock (``timeout`` of inactivity): a host that
stops sending mid-archive is given up, never waited on for good.
"""

from __future__ import annotations

import json
import select
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional

from remote.host.common import wire

from .connections import LocalRunner, read_answer
from .errors import HostError
from .inventory import Host

CHUNK = 1 << 16
MAX_STDERR = 256 * 1024  # kept of a command's stderr: the answer is its last line


class Exec:
    """One command with binary stdin and stdout; stderr gathered (its tail) on a thread."""

    def __init__(self, runner: Any, host: Host, command: str, timeout: float) -> None:
        self.host, self.timeout = host, timeout
        self.err = bytearray()
        self._proc: Optional[subprocess.Popen] = None
        self._chan: Any = None
        if isinstance(runner, LocalRunner):
            self._proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
            self._drain = threading.Thread(target=self._drain_local, daemon=True)
        else:
            transport = runner.client.get_transport() if runner.is_connected else None
            if transport is None:
                runner.open()
                transport = runner.client.get_transport()
            self._chan = transport.open_session(timeout=timeout)
            self._chan.settimeout(timeout)
            self._chan.exec_command(command)
            self._drain = threading.Thread(target=self._drain_ssh, daemon=True)
        self._drain.start()

    def _keep(self, data: bytes) -> None:
        self.err += data
        if len(self.err) > MAX_STDERR:
            del self.err[: len(self.err) - MAX_STDERR]

    def _drain_local(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for block in iter(lambda: self._proc.stderr.read1(CHUNK), b""):  # type: ignore[union-attr]
            self._keep(block)

    def _drain_ssh(self) -> None:
        while True:
            if self._chan.recv_stderr_ready():
                data = self._chan.recv_stderr(CHUNK)
                if not data:
                    return
                self._keep(data)
            elif self._chan.exit_status_ready() and not self._chan.recv_stderr_ready():
                return
            else:
                time.sleep(0.01)

    def send(self, data: bytes) -> None:
        try:
            if self._proc is not None:
                self._proc.stdin.write(data)  # type: ignore[union-attr]
            else:
                self._chan.sendall(data)
        except (OSError, EOFError) as exc:
            raise HostError("%s: the connection went away while sending (%s)" % (self.host.name, exc)) from None

    def send_request(self, request: Dict[str, Any]) -> None:
        self.send(json.dumps(dict(request, **wire.header(request["command"]))).encode() + b"\n")

    def end_input(self) -> None:
        try:
            if self._proc is not None:
                self._proc.stdin.close()  # type: ignore[union-attr]
            else:
                self._chan.shutdown_write()
        except OSError:
            pass

    def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes of stdout; b"" at its end; HostError after ``timeout`` s of silence."""
        try:
            if self._proc is not None:
                out = self._proc.stdout
                ready = select.select([out], [], [], self.timeout)[0]
                if not ready:
                    raise HostError("%s sent nothing for %g s" % (self.host.name, self.timeout))
                return out.read1(size)  # type: ignore[union-attr]
            return self._chan.recv(size)
        except TimeoutError:
            raise HostError("%s sent nothing for %g s" % (self.host.name, self.timeout)) from None
        except OSError as exc:
            raise HostError("%s: the connection went away (%s)" % (self.host.name, exc)) from None

    def finish(self, command: str, answer_on_stderr: bool) -> Dict[str, Any]:
        """Wait for the command's end (bounded) and return its checked answer."""
        rest = bytearray()
        if not answer_on_stderr:
            for block in iter(lambda: self.read(), b""):
                rest += block
                if len(rest) > MAX_STDERR:
                    del rest[: len(rest) - MAX_STDERR]
        deadline = time.monotonic() + self.timeout
        if self._proc is not None:
            try:
                code = self._proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._proc.kill()
                raise HostError("%s: %s did not end within %g s" % (self.host.name, command, self.timeout)) from None
        else:
            while not self._chan.exit_status_ready():
                if time.monotonic() >= deadline:
                    self._chan.close()
                    raise HostError("%s: %s did not end within %g s" % (self.host.name, command, self.timeout))
                time.sleep(0.01)
            code = self._chan.recv_exit_status()
        self._drain.join(max(0.1, deadline - time.monotonic()))
        err = self.err.decode("utf-8", "replace")
        out = err if answer_on_stderr else rest.decode("utf-8", "replace")
        return read_answer(SimpleNamespace(stdout=out, stderr=err, exited=code), command, self.host, command)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                try:
                    pipe.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        elif self._chan is not None:
            self._chan.close()


class Meter:
    """Bytes carried so far and the rate, for a terminal's progress line (at most 4 a second)."""

    def __init__(self, report: Optional[Callable[[str], None]]) -> None:
        self.report, self.count = report, 0
        self.started = self.shown = time.monotonic()

    def add(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if self.report is not None and now - self.shown >= 0.25:
            self.shown = now
            self.report(self.line())

    def line(self) -> str:
        took = max(time.monotonic() - self.started, 1e-6)
        return "%.1f MB, %.1f MB/s" % (self.count / 2**20, self.count / 2**20 / took)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

