"""`invoke run`: a one-off command on this host, in the current release, as a deploy hook runs.

The command runs in the release this ctl runs from (the shell guard did `cd current`), with the
release's venv first on PATH and the bot's environment (shared/.env without DASHBOARD_* and
ETCD_*), with no stdin and no terminal. Its argv is exec'd as given, so that arguments arrive
exactly as typed on the operator's machine; only ``shell`` hands the words to `sh -c`.

Its output goes to the operator as it comes, one ``progress: out|err <line>`` line each (the answer
stays the last line). It has a time limit on the monotonic clock, and it stops when the operator
goes away or presses Ctrl+C (ETX or the end of the ctl's stdin, or SIGINT for a local host): its
whole process group is stopped then, TERM and 2 s later KILL, whatever happened here.

Unless ``lock`` is off (read-only commands during a deploy), it holds the host's operator lock from
start to end, like a deploy or an env change.
"""

import contextlib
import math
import os
import select
import subprocess
import sys
import time

from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import Layout, current_stamp, redactor
from remote.host.releases import hooks
from remote.host.supervision.service import GroupPopen

#: characters of one output line passed on (a longer one is cut); the operator drops lines past 64 KB
LINE_CAP = 16384
#: the longest --timeout (a day): a run holds the host's lock, which failover's epoch step waits for
MAX_TIMEOUT = 86400.0
#: how long a run waits for the host's lock (a deploy that holds it) before it gives up
LOCK_WAIT = 120.0
#: seconds the operator may leave its end unread (a paused terminal) before the run counts it gone
STALL = 30.0


def check(argv, timeout):
    """The request's command, or BadRequest: words of text, none with a NUL (exec cannot take it)."""
    if not isinstance(argv, list) or not argv or not all(isinstance(word, str) for word in argv):
        raise BadRequest("run: argv must be a non-empty list of words, not %r" % (argv,))
    if any("\0" in word for word in argv):
        raise BadRequest("run: a word of the command has a NUL character")
    if not argv[0]:
        raise BadRequest("run: the command's name is empty")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise BadRequest("run: timeout must be over 0 and at most %g s, not %r" % (MAX_TIMEOUT, timeout))


def run(app_dir, argv, shell, timeout, lock, lock_timeout, by, stdin):
    """Run ``argv`` to its end, its time limit or the operator's Ctrl+C; the answer (exit status)."""
    check(argv, timeout)
    paths, where = Layout(app_dir), os.getcwd()
    command = ["sh", "-c", " ".join(argv)] if shell else list(argv)
    held = contextlib.nullcontext()
    if lock:
        from remote.host.supervision.stack import operator_lock

        held = operator_lock(paths, lock_timeout, "run by %s" % (by or "?"))
    with held:
        started = time.monotonic()
        if os.path.islink(paths.current):  # a deploy it waited for may have moved current meanwhile
            where = os.path.realpath(paths.current)
        release = current_stamp(paths)
        if stdin.closed(0):  # Ctrl+C while it waited for the lock: it never starts
            reason, code = "not started", None
        else:
            env = hooks.environment(paths, where, release=release)
            reason, code = _run(command, where, env, started + timeout, stdin, redactor(paths))
    doc = {"ok": reason == "ended" and code == 0, "exit": code, "seconds": round(time.monotonic() - started, 3),
           "release": release, "locked": bool(lock)}
    if reason == "timeout":
        doc.update(timed_out=True, error="timed out after %g s (--timeout) and was stopped" % timeout)
    elif reason == "stopped":
        doc.update(stopped=True, error="stopped: Ctrl+C, or the operator went away")
    elif reason == "not started":
        doc.update(stopped=True, error="not started: Ctrl+C, or the operator went away, while it waited")
    elif code != 0:
        doc["error"] = "exit status %s" % (code if code is not None and code >= 0 else "signal %d" % -(code or 0))
    return doc


def _run(command, where, env, deadline, stdin, redact):
    """(how it ended, its exit status or None) for ``command``, its output passed on as it comes, the
    .env's secrets redacted (the command sees them; the operator's terminal and its logs need not)."""
    gone = []
    write = _writer(deadline)

    def report(label, text):
        try:
            write(("progress: %s %s\n" % (label, redact(text))).encode("utf-8", "replace"))
        except (OSError, ValueError):  # the operator's end is gone, or stalled: stop the command
            gone.append(True)

    try:
        proc = GroupPopen(command, cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise Failure("cannot run %s: %s (PATH has the release's .venv/bin first)"
                      % (command[0], exc.strerror or exc)) from None
    try:
        try:
            reason, _ = hooks.relay(proc, {proc.stdout: "out", proc.stderr: "err"}, deadline, report,
                                    stop=lambda: bool(gone) or stdin.closed(0), line_cap=LINE_CAP)
        except KeyboardInterrupt:  # a local host: the terminal's SIGINT reaches this ctl too
            reason = "stopped"
        while reason == "ended" and proc.poll() is None:  # its output closed, the command itself not done
            if time.monotonic() >= deadline:
                reason = "timeout"
            elif gone or stdin.closed(0.2):
                reason = "stopped"
        code = proc.returncode if reason == "ended" else None
    finally:
        # what it started in its group goes with it, whatever happened here: TERM first, with its pipes
        # still open, so that a command that cleans up on TERM is not cut short by SIGPIPE on a write
        hooks.stop_group(proc)
        proc.stdout.close()
        proc.stderr.close()
    return reason, code


def _writer(deadline):
    """Writes to stdout that never block past ``deadline`` or STALL seconds: an operator that stops
    reading (a paused terminal, a laptop asleep) must not hold the run, and the host's lock, beyond
    its time limit. Pieces of at most 4096 bytes (PIPE_BUF) go once select says the pipe has room."""
    sys.stdout.flush()
    fd = sys.stdout.fileno()

    def write(data):
        view = memoryview(data)
        while view:
            left = min(deadline, time.monotonic() + STALL) - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise OSError("the operator has not read for %.0f s" % STALL)
            view = view[os.write(fd, view[:4096]):]

    return write
