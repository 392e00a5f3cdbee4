"""One runner per host, and the one way a host-side command is called through it.

A runner is a Fabric Connection, or for `connection: local` a LocalRunner (invoke's Context plus the
`put()` Fabric has). Both have `.run()` and `.put()`, so every operation is written once and cannot
drift between local and remote. The SSH side lives in remote/ssh.py and is imported on first use.

Every host-side command gets its request as one JSON line on stdin and answers one JSON document as
the last line of stdout, both with a protocol number (remote/host/common/contract.py); `call()` sends the
one, reads the other and turns a version mismatch into one line that says which side to update.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Optional

from invoke import Config, Context
from invoke.exceptions import CommandTimedOut, ThreadException

from remote.host.common import wire

from .capture import AnswerTooLarge, BoundedLocal
from .errors import ContractError, HostError, UnknownCommand
from .inventory import Host

Runner = Any  # fabric.Connection or LocalRunner: both have .run() and .put()


class LocalRunner(Context):
    """invoke's Context with Fabric's `put()`: a path relative to the home directory, like SFTP's;
    its commands' output captured within bounds (capture.py)."""

    def __init__(self, config: Optional[Config] = None) -> None:
        super().__init__(config or Config(overrides={"runners": {"local": BoundedLocal}}))

    def put(self, local: str, remote: str, preserve_mode: bool = True) -> None:
        target = os.path.join(os.path.expanduser("~"), remote)
        shutil.copyfile(local, target)
        if preserve_mode:
            shutil.copymode(local, target)


@contextlib.contextmanager
def open_runner(host: Host) -> Iterator[Runner]:
    """The host's runner, connected (one SSH connection for the whole task), closed afterwards."""
    if host.is_local:
        yield LocalRunner()
        return
    from .ssh import connect

    conn = connect(host)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:  # closing a connection that died raises (EOFError); the real error is the task's
            pass


class RequestStream:
    """An in_stream for invoke's run: the request line at once, then end of input (or, with
    ``hold``, nothing more until the command ends: a streaming command stops when its stdin ends).
    With ``stop`` (an Event, implying ``hold``), ETX once it is set: the host-side command stops on it
    as on the end of its stdin (wire.Stdin.closed), and answers.

    invoke reads an in_stream one byte per 10 ms unless it is a terminal; read() here ignores the size
    and hands over the whole line in one go."""

    def __init__(self, request: Optional[Dict[str, Any]], hold: bool = False,
                 stop: Optional[threading.Event] = None) -> None:
        self.data = json.dumps(request) + "\n" if request is not None else ""
        self.hold, self.stop = hold or stop is not None, stop

    def read(self, size: int = -1) -> Optional[str]:
        data, self.data = self.data, ""
        if not data and self.stop is not None and self.stop.is_set():
            self.stop = None
            return wire.ETX.decode()
        return data if data or not self.hold else None


def _lost() -> tuple:
    paramiko = sys.modules.get("paramiko")  # loaded only if some host is reached over SSH
    return (OSError, EOFError) + ((paramiko.SSHException,) if paramiko else ())


def run(runner: Runner, command: str, timeout: Optional[float] = None,
        request: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
    """Run ``command`` (``request`` on its stdin): output captured, never raises on a non-zero exit."""
    options = dict(hide=True, warn=True, timeout=timeout, in_stream=RequestStream(request))
    options.update(kwargs)
    try:
        return runner.run(command, **options)
    except CommandTimedOut:
        raise HostError("command timed out after %s s" % timeout) from None
    except ThreadException as exc:
        for caught in exc.exceptions:
            if isinstance(caught.value, AnswerTooLarge):
                raise HostError(str(caught.value)) from None
        raise
    except _lost() as exc:
        raise HostError("connection lost: %s" % (exc or type(exc).__name__)) from None


def put(runner: Runner, local: str, target: str, mode: Optional[int] = None) -> None:
    """Copy a file to the host; ``target`` is absolute or starts with ~/ (SFTP starts at home)."""
    remote = target[2:] if target.startswith("~/") else target
    try:
        runner.put(str(local), remote, preserve_mode=mode is None)
        if mode is not None:
            if isinstance(runner, LocalRunner):
                os.chmod(os.path.join(os.path.expanduser("~"), remote), mode)
            else:
                runner.sftp().chmod(remote, mode)
    except Exception as exc:  # OSError, EOFError, paramiko's SSHException: the connection went away
        raise HostError("upload failed: %s" % (str(exc).strip() or type(exc).__name__)) from None


def older_release(host: Host) -> str:
    return ("the release on %s is older than this sulfur-ops: run `invoke deploy --host %s`"
            % (host.name, host.name))


class _NotANumber(ValueError):
    pass


def _not_a_number(word: str) -> None:
    """json's hook for NaN and Infinity: a host that sends them is refused, as the fleet page does."""
    raise _NotANumber(word)


def read_answer(result: Any, what: str, host: Host, command: Optional[str] = None) -> Dict[str, Any]:
    """The JSON document a host-side command printed last, checked for its protocol: the two sides
    must share one (wire.speaks), and a host that does not know ``command`` is UnknownCommand.

    No document: HostError with stderr's last line (or, for a Python error that says the host lacks
    our modules or options, the release is older than this operator).
    """
    # the last line as the host wrote it: split on "\n" alone (str.splitlines also splits on \x1c, \x85,
    # \u2028, which a progress line may carry), and a progress line is never the answer
    last = result.stdout.rstrip("\r\n").rsplit("\n", 1)[-1].strip()
    try:
        if last.startswith("progress: "):
            raise ValueError("a progress line")
        doc = json.loads(last, parse_constant=_not_a_number)
    except _NotANumber:
        raise ContractError("%s on %s: the answer holds NaN or Infinity, which no release of ours sends"
                            % (what, host.name)) from None
    except (IndexError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        err = (result.stderr.strip().splitlines() or ["exit status %s" % result.exited])[-1]
        if "No module named 'remote.host" in result.stderr or "usage:" in result.stderr:
            raise ContractError("%s (it said: %s)" % (older_release(host), err))
        raise HostError("%s failed: %s" % (what, err))
    theirs = wire.speaks(doc)
    if theirs is None or theirs[1] < wire.OLDEST:
        raise ContractError(older_release(host))
    if theirs[0] > wire.PROTOCOL:
        ours = wire.span(wire.OLDEST, wire.PROTOCOL)
        raise ContractError("the release on %s speaks protocol %s, this sulfur-ops %s: update sulfur-ops on this "
                            "machine (git pull)" % (host.name, wire.span(*theirs), ours))
    if command and (doc.get("kind") == "unknown_command" or theirs[1] < wire.SINCE.get(command, wire.OLDEST)):
        raise UnknownCommand("%s runs an older release, which has no `%s`: run `invoke deploy --host %s` first"
                             % (host.name, command, host.name))
    if doc.get("kind") == "protocol":  # a shared number, and refused all the same: its own words
        raise ContractError("%s on %s: %s" % (what, host.name, doc.get("error")))
    return doc


def call(runner: Runner, host: Host, command: str, request: Dict[str, Any], what: str,
         timeout: Optional[float] = None, progress: Optional[Callable[[str], None]] = None,
         stop: Optional[threading.Event] = None) -> Dict[str, Any]:
    """One host-side command with ``request`` on stdin; its checked answer. ``stop``: see RequestStream."""
    name = request.get("command")
    request = dict(request, **wire.header(name))
    streams: Dict[str, Any] = {} if stop is None else {"in_stream": RequestStream(request, stop=stop)}
    if progress is None:
        return read_answer(run(runner, command, timeout, request, **streams), what, host, name)
    result = run(runner, command, timeout, request, hide=False, out_stream=_Progress(progress),
                 err_stream=_Progress(lambda line: None), **streams)
    return read_answer(result, what, host, name)


#: the longest progress line passed on; a longer unfinished line is dropped
PROGRESS_LINE = 64 * 1024


class _Progress:
    """An out_stream for invoke's run: passes on the host's `progress:` lines as they arrive.

    Only the new chunk is searched for line ends, and an unfinished line past PROGRESS_LINE is dropped
    (it is no progress line): a host that streams megabytes without a newline costs neither quadratic
    time nor memory here (the answer itself is bounded by capture.py)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report, self.pending, self.size, self.dropping = report, [], 0, False

    def write(self, data: str) -> None:
        *lines, rest = data.split("\n")
        for piece in lines:
            line = "".join(self.pending) + piece
            if line.startswith("progress: ") and not self.dropping:
                self.report(line[10:])
            self.pending, self.size, self.dropping = [], 0, False
        self.pending.append(rest)
        self.size += len(rest)
        if self.size > PROGRESS_LINE:
            self.pending, self.size, self.dropping = [], 0, True

    def flush(self) -> None:
        pass
