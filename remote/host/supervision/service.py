"""One supervised service (the dashboard, the bot): its process, its counters, its restart policy.

Every interval here is measured on a monotonic clock that the owner passes in (a Raspberry Pi has no
RTC and NTP steps the wall clock at boot); wall time is kept only for what people read
(``started_at``). Tests pass a fake clock, so a day of crashes runs in milliseconds.
"""

import os
import signal
import subprocess
import time


class RestartPolicy:
    """When a service that exited by itself is started again, and when it is given up.

    The delay doubles from ``backoff`` up to ``cap``; ``max_failures`` exits in a row mark it failed;
    a run of ``stable_after`` seconds or more forgets the earlier failures.
    """

    def __init__(self, backoff=1.0, cap=30.0, max_failures=5, stable_after=60.0):
        self.backoff, self.cap = backoff, cap
        self.max_failures, self.stable_after = max_failures, stable_after

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["backoff"], cfg["backoff_cap"], cfg["max_failures"], cfg["stable_after"])

    def after_exit(self, failures, uptime):
        """(failures counted now, seconds until the next start or None to give up)."""
        if uptime is not None and uptime >= self.stable_after:
            failures = 0
        failures += 1
        if failures >= self.max_failures:
            return failures, None
        return failures, min(self.backoff * 2 ** (failures - 1), self.cap)


class GroupPopen(subprocess.Popen):
    """A process started in a session of its own, signalled as a group: a bot started by a launcher
    (`sh run.sh`, `npm start`) must not outlive its stop in a child while a new one starts."""

    def send_signal(self, sig):
        if self.poll() is None or group_alive(self):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def group_alive(proc):
    """Some process of ``proc``'s group (it leads one: GroupPopen) is still there."""
    if not isinstance(proc, GroupPopen):
        return False
    try:
        os.killpg(proc.pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_group(proc):
    if isinstance(proc, GroupPopen):
        proc.kill()


class Service:
    """A service's current process and what ``status`` shows of it."""

    def __init__(self, name, argv, env, cwd, log_path, policy, clock=time.monotonic):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = log_path
        self.policy, self.clock = policy, clock
        self.proc = None
        self.state = "stopped"          # stopped | starting | running | backoff | failed | stopping | standby
        self.started = None             # monotonic, for uptime and the policy
        self.started_at = None          # wall clock, for people
        self.restarts = self.failures = 0
        self.last_exit, self.last_error = None, []
        self.next_start = None          # monotonic, while in backoff
        self.alerted = False            # a "failed" alert went out; the next start says "recovered"
        self.reason = None              # why it is not running: standby, a spent budget, a watchdog kill
        self.waiters = []               # control requests answered once a deferred start happens
        self.deferred = False           # in backoff only to keep logins apart: not one more restart

    def spawn(self, launch, extra_env=None, new_session=True):
        """Start a process of this service with its policy's ``launch(argv, **Popen keywords)`` (the
        dashboard's on the held socket, the bot's in a group of its own); output to its log."""
        out = open(self.log_path, "ab")
        try:
            env = dict(self.env, **(extra_env or {}))
            return launch(list(self.argv), env=env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                          start_new_session=new_session)
        finally:
            out.close()

    def running(self, proc, since=None):
        """``proc`` is now this service's process (``since``: when it was started, monotonic)."""
        self.proc, self.state, self.next_start, self.reason = proc, "running", None, None
        self.started = since if since is not None else self.clock()
        self.started_at = time.time() - (self.clock() - self.started)

    def uptime(self):
        return self.clock() - self.started if self.started is not None else None

    def exited(self, code, last_error):
        """The process ended without being asked to. Returns the backoff delay, or None: failed."""
        self.failures, delay = self.policy.after_exit(self.failures, self.uptime())
        self.proc, self.last_exit, self.last_error = None, code, list(last_error)
        if delay is None:
            self.state, self.next_start = "failed", None
        else:
            self.state, self.next_start = "backoff", self.clock() + delay
        return delay

    def due(self):
        """In backoff (or failed with a retry time: a spent start budget), and its time has come."""
        return (self.state in ("backoff", "failed") and self.next_start is not None
                and self.clock() >= self.next_start)

    def take_waiters(self, waiter=None):
        """The requests to answer now: those waiting for a deferred start, and ``waiter``."""
        waiting, self.waiters = [w for w in self.waiters + [waiter] if w], []
        return waiting

    def detach(self):
        """Forget the process (the caller retires it); returns it, or None when none runs."""
        proc, self.proc = self.proc, None
        return proc if proc is not None and proc.poll() is None else None

    def stopped(self):
        self.proc, self.state, self.next_start = None, "stopped", None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def describe(self):
        retry = self.next_start - self.clock() if self.next_start is not None else None
        return {"state": self.state, "pid": self.pid, "started_at": self.started_at, "reason": self.reason,
                "next_start_in": retry,
                "restarts": self.restarts, "failures": self.failures, "last_exit": self.last_exit,
                "last_error": self.last_error, "log": self.log_path}
