"""The bot's policy: beyond keeping a process alive, a bot must run exactly once, and a crash loop must
not cost its token.

Before every start the Keeper (bot.py) is asked: the role (a standby host never starts it), the start
budget (50 a day by default), the spacing (5 s between logins). A restart waits until the old process
and its whole group are gone, so two never overlap. Liveness comes over the notify socket (WATCHDOG=1,
STATUS=...), from the bot's process or any child of it; a missed watchdog restarts it.
"""

import json
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from remote.host.common.files import FreshRedactor, environment_of
from remote.host.common.system import parent_pid
from remote.host.supervision import election
from remote.host.supervision.bot import Keeper, remember_notify
from remote.host.supervision.leaseduty import LeaseDuty
from remote.host.supervision.listener import shell
from remote.host.supervision.policy import Context
from remote.host.supervision.service import GroupPopen, group_alive, kill_group


def launch(argv: List[str], **kwargs: Any) -> Any:
    """The bot's process: in a group of its own when it has a session of its own (a launcher script's
    children stop with it); WATCHDOG_PID set to the bot's own pid by a shim that execs it."""
    if "WATCHDOG_USEC" in kwargs["env"]:
        argv = [shell(), "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + list(argv)
    popen = GroupPopen if kwargs.get("start_new_session") else subprocess.Popen
    return popen(argv, stdin=subprocess.DEVNULL, **kwargs)


class BotPolicy:
    """Role, start budget, spacing, watchdog and shards of the bot; the Keeper decides, this applies."""

    def __init__(self, ctx: Context, service: Any):
        self.ctx, self.service = ctx, service
        self.keeper = Keeper(ctx.cfg, ctx.paths, ctx.clock)
        self.pending: Optional[Tuple[Any, Optional[str]]] = None  # (old process, waiter): a restart in wait
        self.lease = LeaseDuty(ctx, service)  # with coordination: the etcd lease decides (leaseduty.py)
        self.redact = FreshRedactor(ctx.paths)  # a STATUS= line may quote a secret as a log line may

    def environment(self, base: Dict[str, str], dotenv: Dict[str, str]) -> Dict[str, str]:
        """shared/.env but the dashboard's and the supervisor's keys (files.environment_of), its
        shards and watchdog; recorded as the unit a start would run."""
        env = dict(base, **environment_of(dotenv, "bot"))
        env.update(self.keeper.environment(dotenv), NOTIFY_SOCKET=self.ctx.notify.name)
        return env

    def may_start(self, waiter: Optional[str]) -> bool:
        """Only in the active role, within the budget, 5 s after the last start, never beside another of
        its processes: a start asked for while one runs or is being stopped is answered by that one, or
        once the new one starts."""
        svc = self.service
        if self.pending:
            svc.waiters.append(waiter)
            return False
        if svc.proc is not None and svc.proc.poll() is None:
            self.ctx.answer([waiter], True, pid=svc.proc.pid)
            return False
        decision, reason, seconds = self.lease.gate() or self.keeper.gate()
        if decision == "start":
            return True
        svc.reason = reason
        if decision == "standby":
            svc.stopped()
            svc.state = "standby"
            self.ctx.answer(svc.take_waiters(waiter), True, state="standby")
        elif decision == "wait":  # answered when it starts; the start it defers was counted already
            svc.state, svc.next_start, svc.deferred = "backoff", self.ctx.clock() + seconds, True
            svc.waiters.append(waiter)
        else:
            svc.state, svc.next_start = "failed", self.ctx.clock() + seconds  # the window slides on
            self.ctx.log("bot: %s; next start in %.0f s at the earliest" % (reason, seconds))
            if not svc.alerted:
                self.ctx.alert("bot on %s: %s: no more starts until the window slides or an operator runs "
                               "invoke start --reset-budget" % (socket.gethostname(), reason))
                svc.alerted = True
            self.ctx.answer(svc.take_waiters(waiter), False, reason)
        self.ctx.write_state()
        return False

    def spawn(self) -> Any:
        how = self._leashed if self.ctx.election else launch
        return self.service.spawn(how, new_session=not self.ctx.cfg["stream"])

    def _leashed(self, argv: List[str], **kwargs: Any) -> Any:
        """With an etcd lease the bot runs under leash.py, which stops it when renewals stop even if this
        supervisor is killed or frozen. Its argv travels in the environment, not on the leash's line."""
        if "WATCHDOG_USEC" in kwargs["env"]:
            argv = [shell(), "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + list(argv)
        kwargs["env"] = dict(kwargs["env"], SULFUR_LEASH_ARGV=json.dumps(argv))
        leash = [sys.executable, "-S", "-m", "remote.host.supervision.leash", election.deadline_file(self.ctx.paths)]
        popen = GroupPopen if kwargs.get("start_new_session") else subprocess.Popen
        return popen(leash, stdin=subprocess.DEVNULL, **kwargs)  # cwd: the code dir, where the leash is too

    def started(self, proc: Any, waiter: Optional[str]) -> None:
        """Running at once (its READY=1 is shown, not waited for); the start is counted in the budget."""
        self.keeper.started()
        self.ctx.running(self.service, proc)
        self.ctx.answer(self.service.take_waiters(waiter), True, pid=proc.pid)

    def restart(self, waiter: Optional[str]) -> bool:
        """Never two bots at once: the old one is retired and the new one starts once it is gone (True:
        the start is left to tick())."""
        old = self.service.detach()
        if old is None:
            return False
        self.ctx.retire(old)
        self.pending, self.service.state = (old, waiter), "stopping"
        return True

    def stopping(self) -> None:
        self.pending = None

    def reap(self) -> None:
        pass

    def tick(self, now: float) -> Optional[Tuple[Optional[str]]]:
        """The old bot of a restart gone (with its group): the new one starts now. A missed watchdog."""
        bot, pending = self.service, self.pending
        due = self.lease.tick(self.pending is not None)
        if pending and pending[0].poll() is not None and not group_alive(pending[0]):
            self.pending, due = None, (pending[1],)
        elif pending and pending[0].poll() is not None:  # its leader exited, its children linger
            kill_group(pending[0])
        elif bot.proc is not None and self.keeper.live.overdue() and due is None:
            self._watchdog_kill()
        if self.keeper.live.status_changed and now - self.keeper.status_written >= 2.0:
            self.ctx.write_state()  # STATUS= lines reach the state at most every 2 s
        return due

    def _watchdog_kill(self) -> None:
        """No WATCHDOG=1 for watchdog_sec: stop it (short grace: it hangs) and start it again."""
        bot, seconds = self.service, self.keeper.live.watchdog_sec
        old = bot.detach()
        if old is None:  # it exited just now: reap handles that on the next tick
            return
        self.ctx.log("bot: no WATCHDOG=1 for %.0f s: stopping pid %d" % (seconds, old.pid))
        self.ctx.alert("bot on %s missed its watchdog (%.0f s): restarted" % (socket.gethostname(), seconds))
        bot.failures, delay = bot.policy.after_exit(bot.failures, bot.uptime())
        bot.last_exit, bot.reason = "watchdog", "watchdog"
        self.ctx.retire(old, grace=min(self.ctx.cfg["grace"], 1.0))
        if delay is None:
            bot.state, bot.next_start = "failed", None
            self.ctx.log("bot: %d failures in a row: marked failed" % bot.failures)
        else:
            self.pending, bot.state = (old, None), "stopping"
        self.ctx.write_state()

    def heard(self, pid: int, lines: List[bytes]) -> bool:
        """STATUS=, WATCHDOG=1, READY=1 from the bot's process or a child of it (a launcher, a worker)."""
        if not pid or not self._from_bot(pid):
            return False
        was_ready = self.keeper.live.ready
        self.keeper.live.heard(lines)
        if self.keeper.live.ready and not was_ready:  # status and the pages say it at once
            self.ctx.write_state()
            remember_notify(self.ctx.paths)
        return True

    def _from_bot(self, pid: int) -> bool:
        for _ in range(8):
            proc = self.service.proc
            if proc is None or pid <= 1:
                return False
            if pid == proc.pid:
                return True
            try:
                pid = parent_pid(pid)
            except (OSError, ValueError, IndexError):
                return False
        return False

    def shutdown(self) -> None:
        pass

    def busy(self) -> bool:
        return False

    def wake_in(self) -> Optional[float]:
        """Seconds until the watchdog's deadline, while the bot runs: the loop must not sleep past it."""
        due = [self.keeper.live.due_in() if self.service.proc else None, self.lease.wake_in()]
        return min([d for d in due if d is not None], default=None)

    def describe(self) -> Dict[str, Any]:
        """For state.json, as it is written: the unit the running bot runs (or a start would), its role,
        STATUS=, watchdog and budget. New STATUS= lines are from now on the ones not yet written."""
        self.keeper.status_written, self.keeper.live.status_changed = self.ctx.clock(), False
        doc = dict(self.keeper.describe(self.service.proc is not None), **self.lease.describe())
        if doc.get("status"):  # shown by status and both pages: the .env's secrets as their keys' names
            doc["status"] = self.redact([doc["status"]])[0]
        return doc

    def supervisor_state(self) -> Dict[str, Any]:
        return {}
