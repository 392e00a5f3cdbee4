"""One runner per host: a Fabric Connection, or invoke's Context for `connection: local`.

Both have `.run(command, hide=..., warn=..., timeout=...)`, so every flow is written once and cannot
drift between local and remote. The SSH side lives in remote/ssh.py and is imported on first use.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Dict, Iterator, Optional

from invoke import Context
from invoke.exceptions import CommandTimedOut

from .inventory import Host

Runner = Any  # fabric.Connection or invoke.Context: both have .run()


class HostError(Exception):
    """Something went wrong with one host; the message is the one line shown for it."""


@contextlib.contextmanager
def open_runner(host: Host) -> Iterator[Runner]:
    """The host's runner, connected (one SSH connection for the whole task), closed afterwards."""
    if host.is_local:
        yield Context()
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


def run(runner: Runner, command: str, timeout: Optional[float] = None):
    """Run ``command`` on the runner: output captured, never raises on a non-zero exit."""
    paramiko = sys.modules.get("paramiko")  # loaded only if some host is reached over SSH
    lost = (OSError, EOFError) + ((paramiko.SSHException,) if paramiko else ())
    try:
        return runner.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except CommandTimedOut:
        raise HostError("command timed out after %s s" % timeout) from None
    except lost as exc:
        raise HostError("connection lost: %s" % (exc or type(exc).__name__)) from None


def json_result(result: Any, what: str) -> Dict[str, Any]:
    """The JSON object a host-side command printed last; else HostError with stderr's last line.

    Every host-side command (agent, hostctl) ends its output with one JSON document: the operator
    never reads human text, and a failure before that document still says why in one line.
    """
    try:
        doc = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        doc = None
    if isinstance(doc, dict):
        return doc
    err = (result.stderr.strip().splitlines() or ["exit status %s" % result.exited])[-1]
    raise HostError("%s failed: %s" % (what, err))
