"""What a service's policy may use of its supervisor (``Context``), and what the loop asks of a policy
(``ServicePolicy``).

The loop (supervisor.py) owns the sockets, the signals, the inbox and the clock; a policy
(dashpolicy.DashboardPolicy, botpolicy.BotPolicy) owns what differs between the dashboard and the bot.
A policy never sees the supervisor: it gets this context, whose fields and methods are all it may
touch, so a reader can tell from here what a policy can change.
"""

import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote.host.common.files import Layout, error_tail
from remote.host.common.system import pidfile_line
from remote.host.supervision import alerts
from remote.host.supervision.inbox import reply
from remote.host.supervision.jobs import Jobs, Outcome

try:  # typing.Protocol exists from Python 3.8 on
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore

#: an alert that has not gone out by then is dropped (its HTTP call has its own 5 s timeout)
ALERT_DEADLINE = 15.0


class Context:
    """The supervisor as its policies see it: settings, paths, the clock, the held and notify sockets
    (set in set-up), whether it is stopping, and the loop's shared actions below."""

    def __init__(self, cfg: Dict[str, Any], paths: Layout, clock: Callable[[], float], jobs: Jobs,
                 python: str, write_state: Callable[[], None], drain_notify: Callable[[], None],
                 refresh: Callable[[], None]):
        self.cfg, self.paths, self.clock, self.jobs, self.python = cfg, paths, clock, jobs, python
        # the loop's own: state.json written anew, notify messages dispatched now, every service's
        # environment built again from shared/.env as it is now
        self.write_state, self.drain_notify, self.refresh = write_state, drain_notify, refresh
        self.listener: Any = None               # listener.Listener: the dashboard's held socket
        self.notify: Any = None                 # notify.NotifySocket
        self.stopping = False
        self.election: Any = None               # election.Election: the bot's lease, with coordination only
        self.retiring: List[Tuple[Any, float]] = []   # [(process, SIGKILL deadline)]

    def log(self, message: str) -> None:
        line = "%s supervisor[%d] %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
        if self.cfg["stream"]:
            print("supervisor | " + line, flush=True)
            with open(self.paths.log("supervisor"), "a") as handle:
                handle.write(line + "\n")
        else:
            print(line, flush=True)  # detached: stdout is logs/supervisor.log

    def alert(self, text: str) -> None:
        """Log it, and post it to the webhook off the loop (an unreachable webhook costs the loop nothing)."""
        self.log("alert: " + text)
        url = self.cfg["alert_webhook"]
        if url:
            self.jobs.thread("alert", alerts.send, url, text, deadline=ALERT_DEADLINE, on_done=self._alert_done)

    def _alert_done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.log("alert not delivered: %s" % outcome.error)

    def retire(self, proc: Any, grace: Optional[float] = None) -> None:
        """SIGTERM an old process; the loop SIGKILLs it if it is still there after the grace period."""
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        self.retiring.append((proc, self.clock() + (self.cfg["grace"] if grace is None else grace)))

    def running(self, svc: Any, proc: Any, since: Optional[float] = None) -> None:
        """``proc`` is now ``svc``'s process: recorded in its pidfile; a failed service says it recovered."""
        if svc.state == "failed" or svc.alerted:
            self.alert("%s recovered on %s (pid %d)" % (svc.name, socket.gethostname(), proc.pid))
            svc.alerted = False
        svc.running(proc, since)
        with open(self.paths.pid(svc.name), "w") as handle:
            handle.write(pidfile_line(proc.pid))

    def exited(self, svc: Any, code: Any, last_error: Optional[List[str]] = None) -> None:
        """A service's current process ended without being asked: back off, or give up (and alert)."""
        delay = svc.exited(code, last_error or error_tail(svc.log_path))
        if delay is None:
            self.log("%s: exited %s; %d failures in a row: marked failed" % (svc.name, code, svc.failures))
            if not svc.alerted:
                self.alert("%s failed on %s after %d tries (exit %s): %s" % (
                    svc.name, socket.gethostname(), svc.failures, code, " | ".join(svc.last_error[-3:])))
                svc.alerted = True
        else:
            self.log("%s: exited %s; restart %d in %.1f s" % (svc.name, code, svc.failures, delay))
        self.write_state()

    def answer(self, waiters: List[Optional[str]], ok: bool, error: Optional[str] = None, **extra: Any) -> None:
        for waiter in waiters:
            reply(waiter, ok, error, **extra)

    def base_environment(self) -> Dict[str, str]:
        """What every service inherits: this process's environment without systemd's variables meant for
        the supervisor itself, the interpreter's folder first on PATH, unbuffered output."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
        base["PATH"] = os.path.dirname(self.python) + os.pathsep + base.get("PATH", "/usr/bin:/bin")
        base["PYTHONUNBUFFERED"] = "1"
        return base


class ServicePolicy(Protocol):
    """What the loop calls on each service's policy; each method's docstring in dashpolicy/botpolicy
    says what that service does there. ``waiter`` is an inbox result path to answer, or None."""

    service: Any

    def environment(self, base: Dict[str, str], dotenv: Dict[str, str]) -> Dict[str, str]: ...

    def may_start(self, waiter: Optional[str]) -> bool: ...

    def spawn(self) -> Any: ...

    def started(self, proc: Any, waiter: Optional[str]) -> None: ...

    def restart(self, waiter: Optional[str]) -> bool: ...

    def stopping(self) -> None: ...

    def reap(self) -> None: ...

    def tick(self, now: float) -> Optional[Tuple[Optional[str]]]: ...

    def heard(self, pid: int, lines: List[bytes]) -> bool: ...

    def shutdown(self) -> None: ...

    def busy(self) -> bool: ...

    def wake_in(self) -> Optional[float]: ...

    def describe(self) -> Dict[str, Any]: ...

    def supervisor_state(self) -> Dict[str, Any]: ...

