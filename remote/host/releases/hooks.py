"""Deploy hooks: the inventory's commands run on each host before and after the switch to a release.

A hook runs with `sh` from PATH (Termux has no /bin/sh), in the release's directory, with its venv's
bin/ first on PATH and the keys of shared/.env in its environment (the .env the deploy brings, when
it brings one). Its output becomes the deploy's progress lines as it comes; it has a time limit,
measured on the monotonic clock, after which its whole process group is stopped.

    before_switch   after the release is installed, before `current` moves: its failure leaves
                    `current` untouched and the release marked failed (a database migration)
    after_switch    after the health check: its failure rolls back like a failed health check

Hooks run on a rollback only when their entry says ``on_rollback: true``.
"""

import os
import select
import signal
import subprocess
import time

from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import environment_of, read_env_file
from remote.host.supervision.service import GroupPopen, group_alive

NAMES = ("before_switch", "after_switch")
LINE_CAP = 400  # characters of one output line passed on
PENDING_CAP = 65536  # bytes of a line without its end kept before it is passed on cut
DEFAULT_TIMEOUT = 300.0


def normalize(hooks):
    """{name: {"run": CMD, "on_rollback": bool}} from the short (CMD) or long ({run: CMD}) form;
    BadRequest naming what is wrong. The inventory checks with this too, so both sides agree."""
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise BadRequest("hooks must be a mapping of %s, not %r" % (" and ".join(NAMES), hooks))
    out = {}
    for name, spec in hooks.items():
        if name not in NAMES:
            raise BadRequest("unknown hook %r (known: %s)" % (name, ", ".join(NAMES)))
        if isinstance(spec, str):
            spec = {"run": spec}
        if not isinstance(spec, dict):
            raise BadRequest("%s: expected a command or {run: CMD, on_rollback: true}, got %r" % (name, spec))
        unknown = sorted(set(spec) - {"run", "on_rollback"})
        if unknown:
            raise BadRequest("%s: unknown key %s (known: run, on_rollback)" % (name, ", ".join(unknown)))
        command, on_rollback = spec.get("run"), spec.get("on_rollback", False)
        if not isinstance(command, str) or not command.strip():
            raise BadRequest("%s: run must be a command, not %r" % (name, command))
        if any(ord(c) < 32 and c not in "\n\t" for c in command):
            raise BadRequest("%s: the command has control characters" % name)
        if not isinstance(on_rollback, bool):
            raise BadRequest("%s: on_rollback must be true or false, not %r" % (name, on_rollback))
        out[name] = {"run": command, "on_rollback": on_rollback}
    return out


def wanted(hooks, name, rolling_back=False):
    """The command of hook ``name`` for this step, or None (none set, or not for a rollback)."""
    spec = normalize(hooks).get(name)
    if spec is None or (rolling_back and not spec["on_rollback"]):
        return None
    return spec["run"]


def environment(paths, where, env_file=None, **extra):
    """The hook's environment: ours, the .env's keys, the venv of the release in ``where`` first on
    PATH, and ``extra`` as SULFUR_<KEY>."""
    env = dict(os.environ)
    env.update(environment_of(read_env_file(env_file or os.path.join(paths.shared, ".env")), "bot"))
    venv = os.path.join(where, ".venv")
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", os.defpath)
    env["VIRTUAL_ENV"] = venv
    env.update({"SULFUR_" + k.upper(): str(v) for k, v in extra.items() if v is not None})
    return env


def run(name, command, where, env, timeout, report, redact=lambda text: text):
    """Run one hook to its end; Failure with its exit status (or its timeout) when it fails. Whatever
    it leaves running in its process group is stopped too, whatever happens here. Its output goes to
    ``report`` through ``redact``: a migration that prints its database URL shows the key's name."""
    started = time.monotonic()
    deadline = started + timeout
    report("%s: running %s" % (name, command.strip().splitlines()[0][:LINE_CAP]))
    try:
        proc = GroupPopen(["sh", "-c", command], cwd=where, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise Failure("%s hook could not start: sh: %s" % (name, exc.strerror)) from None
    try:
        reason, last = relay(proc, {proc.stdout: name}, deadline,
                             lambda label, text: report("%s: %s" % (label, redact(text))))
        last = [redact(line) for line in last]
        code = _finish(proc, deadline, reason == "timeout")
    finally:
        stop_group(proc)  # its answer must be the whole story: nothing of it runs on unowned
    if code is None:
        raise Failure("%s hook timed out after %.0f s (hook_timeout) and was stopped" % (name, timeout), last)
    if code != 0:
        raise Failure("%s hook failed with exit status %s" % (name, code if code > 0 else "signal %d" % -code),
                      last)
    report("%s: done in %.1f s" % (name, time.monotonic() - started))


def relay(proc, streams, deadline, report, stop=None, line_cap=LINE_CAP):
    """A child's output, line by line as it comes, to ``report(label, text)``: ``streams`` maps each
    pipe to its label. Ends when the pipes close (or 1 s after the child exited: a child it left behind
    may hold them), at ``deadline`` or once ``stop()`` says so: ("ended" | "timeout" | "stopped", the
    last 5 lines). A line with no end in sight is passed on cut: nothing here grows without bound."""
    labels = {pipe.fileno(): label for pipe, label in streams.items()}
    pending = dict.fromkeys(labels, b"")
    last, exited_at, reason = [], None, "ended"

    def emit(fd, raw):
        text = raw.decode("utf-8", "replace").rstrip("\r")[:line_cap]
        last[:] = (last + [text])[-5:]
        report(labels[fd], text)

    while any(rest is not None for rest in pending.values()):  # None: that pipe has ended
        now = time.monotonic()
        if now >= deadline:
            reason = "timeout"
            break
        if stop is not None and stop():
            reason = "stopped"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 1.0:
            break  # a child it left behind holds the pipe: its own output is over
        readable = [fd for fd, rest in pending.items() if rest is not None]
        for fd in select.select(readable, [], [], min(0.2, deadline - now))[0]:
            data = os.read(fd, 65536)
            if not data:
                if pending[fd]:
                    emit(fd, pending[fd])
                pending[fd] = None
                continue
            data = pending[fd] + data
            if b"\n" not in data and len(data) > PENDING_CAP:
                data += b"\n"  # a line with no end in sight: pass on what came, never grow without bound
            *lines, pending[fd] = data.split(b"\n")
            for line in lines:
                emit(fd, line)
    for fd, rest in pending.items():
        if rest:
            emit(fd, rest)
    return reason, last


def _finish(proc, deadline, timed_out):
    """The hook's exit status, or None when it ran out of time."""
    proc.stdout.close()
    code = None
    if not timed_out:  # a hook that closed its output may still run: wait, within the same limit
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    return None if timed_out else code


def stop_group(proc):
    """TERM to the hook's process group, then KILL to whatever is still in it 2 s later."""
    if not group_alive(proc):
        proc.poll()
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while group_alive(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
        proc.poll()
    if group_alive(proc):
        proc.kill()
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        pass
