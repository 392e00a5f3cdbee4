"""The two ways a new dashboard takes over the held socket: a handover, and the warm spare that speeds it.

Handover: the new process starts on the socket the supervisor holds, the old one keeps serving until
the new one says READY=1, then it is sent SIGTERM and drains. Connections that arrive meanwhile
queue on the one socket: none is refused or reset.

Warm spare: a dashboard started ahead of time with DASHBOARD_SPARE=1. It imports everything, tells
SPARE=1, and waits for SIGUSR2 (serve) or SIGTERM (exit) without accepting, so a restart skips the
cold start. It is used only while it has loaded the code a new dashboard would load.
"""

import os


class Handover:
    """A new dashboard on the held socket, not yet READY; who waits for the outcome."""

    def __init__(self, service, proc, now, timeout, waiter=None):
        self.service, self.proc = service, proc
        self.started, self.deadline = now, now + timeout
        self.waiters = [waiter] if waiter else []

    def join(self, waiter):
        """A second restart request during this handover is answered with it."""
        if waiter:
            self.waiters.append(waiter)

    def expired(self, now):
        return now >= self.deadline

    def is_from(self, pid):
        return self.proc.pid == pid


class WarmSpare:
    """A pre-imported dashboard, usable while ``armed`` and while its code is the current one."""

    def __init__(self, proc, code_key):
        self.proc, self.code_key, self.armed = proc, code_key, False

    @property
    def alive(self):
        return self.proc.poll() is None

    def fits(self, code_key):
        return self.armed and self.alive and code_key == self.code_key


def code_key(code_dir, python, mtimes):
    """What a spare has loaded: the release ``code_dir`` resolves to, its interpreter, the code's mtimes."""
    return os.path.realpath(code_dir), os.path.realpath(python), sorted(mtimes.items())


def code_mtimes(code_dir):
    """mtime of every file of dashboard/ that a dashboard loads (code, templates, static files)."""
    found = {}
    for root, _, files in os.walk(os.path.join(code_dir, "dashboard")):
        for name in files:
            if name.endswith((".py", ".html", ".js", ".css")):
                path = os.path.join(root, name)
                try:
                    found[path] = os.stat(path).st_mtime_ns
                except OSError:
                    pass
    return found

