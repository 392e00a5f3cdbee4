"""The dashboard's policy: it runs on the socket the supervisor holds, and a restart is a handover.

A new dashboard starts on the held socket (fd 3, LISTEN_FDS) while the old one still serves; it
counts as started on its READY=1 (the sender's pid checked by the kernel), and only then is the old
one retired. A warm spare, started after each ready dashboard, takes the next restart without a cold
start while it has loaded the code a new one would load. ``--reload`` (invoke dev) restarts it when
its files change. handover.py has the two small records this policy keeps.
"""

import select
import signal
from typing import Any, Dict, List, Optional, Tuple

from remote.host.common.files import environment_of, error_tail, rotate
from remote.host.supervision.handover import Handover, WarmSpare, code_key, code_mtimes
from remote.host.supervision.listener import spawn_on_socket
from remote.host.supervision.policy import Context


class DashboardPolicy:
    """Handover, warm spare and socket passing for the one service that serves the port."""

    def __init__(self, ctx: Context, service: Any, python: str, code_dir: str):
        self.ctx, self.service, self.python, self.code_dir = ctx, service, python, code_dir
        self.handover: Optional[Handover] = None   # a new dashboard waiting for READY=1
        self.spare: Optional[WarmSpare] = None
        self.spare_at: Optional[float] = None       # when to start the next spare (monotonic)
        self._taking: Optional[WarmSpare] = None    # the spare being woken by spawn()
        self.mtimes = code_mtimes(code_dir) if ctx.cfg["reload"] else None

    def environment(self, base: Dict[str, str], dotenv: Dict[str, str]) -> Dict[str, str]:
        """Only the DASHBOARD_* settings of shared/.env (its own token), never the bot's secrets."""
        env = dict(base, **environment_of(dotenv, "dashboard"))
        env.update(DASHBOARD_APP_DIR=self.ctx.paths.app_dir, DASHBOARD_PORT=str(self.ctx.cfg["port"]),
                   DASHBOARD_HOST=self.ctx.cfg["host"], NOTIFY_SOCKET=self.ctx.notify.name)
        return env

    def may_start(self, waiter: Optional[str]) -> bool:
        return True

    def _launch(self, argv: List[str], **kwargs: Any) -> Any:
        return spawn_on_socket(argv, self.ctx.listener.sock, **kwargs)

    def spawn(self) -> Any:
        """The armed spare, woken, or a new process on the held socket (a fresh log for a cold start)."""
        proc = self._take_spare()
        if proc is None:
            rotate(self.service.log_path)
            proc = self.service.spawn(self._launch, new_session=not self.ctx.cfg["stream"])
        return proc

    def started(self, proc: Any, waiter: Optional[str]) -> None:
        """It counts as started on its READY=1: until then the old one serves."""
        self.handover = Handover(self.service, proc, self.ctx.clock(), self.ctx.cfg["ready_timeout"], waiter)
        if self.service.proc is None:
            self.service.state = "starting"

    def restart(self, waiter: Optional[str]) -> bool:
        """A restart asked for during a handover is answered with it (True: nothing more to do)."""
        if self.handover:
            self.handover.join(waiter)
            return True
        return False

    def stopping(self) -> None:
        pass

    def heard(self, pid: int, lines: List[bytes]) -> bool:
        """READY=1 from the new dashboard ends its handover; SPARE=1 arms the spare."""
        spare = self._taking or self.spare
        if b"READY=1" in lines and pid and self.handover and self.handover.is_from(pid):
            self._ready(pid)
            return True
        if (b"SPARE=1" in lines or b"STANDBY=1" in lines) and spare and spare.proc.pid == pid:
            spare.armed = True
            self.ctx.write_state()
            return True
        return False

    def _ready(self, pid: int) -> None:
        handover = self.handover
        old = self.service.proc
        self.handover = None
        self.ctx.running(self.service, handover.proc)
        self.ctx.log("%s: pid %d ready in %.2f s" % (self.service.name, pid, self.ctx.clock() - handover.started))
        self.ctx.answer(handover.waiters, True, pid=pid)  # first: the old one may be the dashboard that asked
        if old is not None and old.poll() is None:
            self.ctx.retire(old)
        if self.ctx.cfg["spare"] and self.spare is None:
            self.spare_at = self.ctx.clock() + 0.1
        self.ctx.write_state()

    def reap(self) -> None:
        if self.spare and not self.spare.alive:
            self.ctx.log("dashboard: spare pid %d exited %s" % (self.spare.proc.pid, self.spare.proc.returncode))
            self.spare = None  # a new one comes with the next ready dashboard, never in a loop
        handover = self.handover
        if handover and handover.proc.poll() is not None:
            self.handover = None
            svc, code = self.service, handover.proc.returncode
            self.ctx.answer(handover.waiters, False, "%s exited %s before it was ready: %s" % (
                svc.name, code, " | ".join(error_tail(svc.log_path))))
            if svc.proc is None and not self.ctx.stopping:
                svc.started = handover.started
                self.ctx.exited(svc, code)

    def tick(self, now: float) -> Optional[Tuple[Optional[str]]]:
        """Timers: the next spare, the handover's deadline, --reload's look at the code."""
        if self.spare_at and now >= self.spare_at:
            self._spawn_spare()
        if self.handover and self.handover.expired(now):
            self.ctx.log("%s: no READY=1 within %.0f s: stopped" % (self.service.name, self.ctx.cfg["ready_timeout"]))
            self.handover.proc.kill()
        if self.mtimes is not None and not self.ctx.stopping:
            mtimes = code_mtimes(self.code_dir)
            if mtimes != self.mtimes:
                self.mtimes = mtimes
                self.ctx.log("dashboard code changed: restarting it on the held socket")
                return (None,)
        return None

    def shutdown(self) -> None:
        if self.handover:
            self.ctx.retire(self.handover.proc)
        if self.spare:
            self.ctx.retire(self.spare.proc)
            self.spare = None

    def busy(self) -> bool:
        """A handover still under way: the supervisor does not exit before it ends."""
        return self.handover is not None

    def wake_in(self) -> Optional[float]:
        return None

    def describe(self) -> Dict[str, Any]:
        return {}

    def supervisor_state(self) -> Dict[str, Any]:
        """state.json's ``spare_pid``: the armed spare a restart would wake."""
        return {"spare_pid": self.spare.proc.pid if self.spare and self.spare.armed else None}

    # ----------------------------------------------------------------------------- the warm spare
    def _code_key(self) -> Any:
        """What a spare must have loaded to stand in: the code, and the environment a new one would get."""
        return code_key(self.code_dir, self.python, code_mtimes(self.code_dir)), sorted(self.service.env.items())

    def _spawn_spare(self) -> None:
        self.spare_at = None
        if self.ctx.stopping or self.spare is not None or not self.ctx.cfg["spare"]:
            return
        self.ctx.refresh()
        # DASHBOARD_STANDBY too: after a rollback to a release from before the word "spare", its
        # dashboard must still know it is a spare, not serve unlisted on the held socket
        proc = self.service.spawn(self._launch, {"DASHBOARD_SPARE": "1", "DASHBOARD_STANDBY": "1"},
                                  new_session=not self.ctx.cfg["stream"])
        self.spare = WarmSpare(proc, self._code_key())
        self.ctx.log("dashboard: spare pid %d" % proc.pid)

    def _take_spare(self) -> Any:
        """The armed spare, woken (SIGUSR2), if it still has the code a new dashboard would load.
        A stale or unarmed one is retired: a cold start is always right, a stale spare never."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        self._taking = spare
        try:
            deadline = self.ctx.clock() + 0.5
            while not spare.armed and spare.alive and self.ctx.clock() < deadline:
                # still starting: it blocks SIGUSR2 within milliseconds, and a spare half through its
                # imports beats a cold start; a signal it gets mid-import waits for it
                select.select([self.ctx.notify], [], [], 0.05)
                self.ctx.drain_notify()
        finally:
            self._taking = None
        if spare.fits(self._code_key()):
            spare.proc.send_signal(signal.SIGUSR2)
            self.ctx.log("dashboard: spare pid %d takes over" % spare.proc.pid)
            return spare.proc
        if spare.alive:
            self.ctx.retire(spare.proc)
        return None

