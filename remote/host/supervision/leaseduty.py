"""What the bot's policy does for the etcd lease (election.py), on the loop's own thread.

- No lease, or one whose last renewal was sent ``lease_ttl/2`` ago: the bot does not start, and a
  running one is stopped (TERM, KILL 1 s later) — a holder that cannot renew stops itself first.
- A lease won from another host: the newest replica of that host's data this host holds is restored
  (``ctl restore`` as a child process, as scheduled snapshots run) before the bot starts; no copy is
  said loudly, and the bot starts with this host's own data.
- A lease held (won, kept across a deploy, given back by etcd): the bot starts, through the same gate
  as every start (budget, spacing).
- A bot that failed here makes the host ineligible: its lease goes to another host.
"""

import os
import time
from typing import Any, Dict, Optional, Tuple

from remote.host import CODE_DIR
from remote.host.supervision import jobs
from remote.host.supervision.election import unit_of
from remote.host.supervision.policy import Context

STATE_EVERY = 5.0  # s: state.json written at least this often (the time left, the requests made)
RESTORE_DEADLINE = 1800.0  # s: a restore of the previous holder's data still running then is killed
#: what ``ctl restore`` needs of the settings (the data's entries, the host's name)
RESTORE_SETTINGS = ("name", "shared_paths", "backup_keep", "backup_max", "bot_token_env")


class LeaseDuty:
    def __init__(self, ctx: Context, service: Any):
        self.ctx, self.service = ctx, service
        self.restoring: Optional[str] = None  # the previous holder whose data is being restored
        self.takeover: Optional[str] = None   # what the last takeover restored, in words
        self.seen: Dict[str, Any] = {}        # the election as state.json last showed it
        self.written = 0.0                    # when (the loop's clock)

    @property
    def election(self) -> Any:
        return self.ctx.election

    def gate(self) -> Optional[Tuple[str, str, None]]:
        """("standby", why, None) while this host may not run the bot; None: the usual gate decides."""
        election = self.election
        if election is None:
            return None
        if self.restoring:
            return "standby", "lease: restoring %s's data before the bot starts" % self.restoring, None
        if self.paused():
            return "standby", "lease: paused (the bot was stopped on purpose; invoke start --service bot " \
                              "resumes it)", None
        if not election.may_run():
            return "standby", election.why_not(), None
        if election.unit != unit_of(self.ctx.paths, self.ctx.cfg):  # the token changed: the old id's lease
            return "standby", "lease: held for the bot id before the token change; waiting for the new one's", None
        return None

    def tick(self, pending: bool) -> Optional[Tuple[None]]:
        """(None,) when the bot should start now (this host holds the lease and the bot waits for it)."""
        election = self.election
        if election is None:
            return None
        for text, alert in election.messages():
            (self.ctx.alert if alert else self.ctx.log)(text)
        svc = self.service
        election.eligible = svc.state != "failed"
        seen = {k: v for k, v in election.describe().items() if k not in ("time_left", "etcd_requests")}
        now = self.ctx.clock()
        if seen != self.seen or now - self.written >= STATE_EVERY:  # status shows the lease as it is now
            self.seen, self.written = seen, now
            self.ctx.write_state()
        if not election.may_run():
            if svc.proc is not None:
                self._stop(election.why_not())
            elif svc.state == "standby" and svc.reason != election.why_not():
                svc.reason = election.why_not()  # who holds it now, or why there is no holder
                self.ctx.write_state()
            return None
        win = election.take_win()
        if win is not None:
            self._restore(win["previous"])
        if svc.proc is None and not pending and not self.restoring and svc.state == "standby" \
                and not self.ctx.stopping and not self.paused():
            return (None,)
        return None

    def paused(self) -> bool:
        """The owner stopped the bot on purpose here (leasectl.pause): no start until a resume."""
        return os.path.exists(os.path.join(self.ctx.paths.run, "lease-paused"))

    def wake_in(self) -> Optional[float]:
        """Until the holder's renewal deadline (never 0: past it there is nothing left to wait for)."""
        due = self.election.wake_in() if self.election is not None else None
        return due if due else None

    def describe(self) -> Dict[str, Any]:
        if self.election is None:
            return {}
        return {"lease": dict(self.election.describe(), takeover=self.takeover, restoring=self.restoring)}

    def _stop(self, why: str) -> None:
        svc = self.service
        old = svc.detach()
        if old is not None:
            self.ctx.retire(old, grace=min(self.ctx.cfg["grace"], 1.0))  # TERM, KILL at most 1 s later
            if _suspended(old.pid):  # a stopped process cannot act on TERM: this host slept, it goes now
                old.kill()
            self.ctx.log("bot: stopping pid %d: %s" % (old.pid, why))
        svc.stopped()
        svc.state, svc.reason = "standby", why
        self.ctx.write_state()

    def _restore(self, previous: str) -> None:
        cfg = self.ctx.cfg
        if not cfg.get("shared_paths"):
            self._said(previous, None, None)
            return
        options = {"replica_of": previous, "reason": "before-takeover", "by": "etcd lease", "lock_timeout": 60.0,
                   "force": True}  # the bot's data, whatever this host kept of its own
        started = jobs.ctl(self.ctx.jobs, "restore", "restore", self.ctx.paths.app_dir, options,
                           {k: cfg.get(k) for k in RESTORE_SETTINGS}, RESTORE_DEADLINE, cfg.get("code_dir") or CODE_DIR,
                           lambda outcome: self._restored(previous, outcome))
        if started is None:
            self._said(previous, None, "too many jobs running to restore its data now")
        else:
            self.restoring = previous
            self.ctx.write_state()

    def _restored(self, previous: str, outcome: Any) -> None:
        self.restoring = None
        answer = jobs.ctl_answer(outcome)
        if answer.get("ok"):
            self._said(previous, answer.get("restored") or {}, None)
        else:
            self._said(previous, None, str(answer.get("error") or outcome.error or "no answer")[:300])
        self.ctx.write_state()

    def _said(self, previous: str, restored: Optional[Dict[str, Any]], error: Optional[str]) -> None:
        """The takeover in one line, logged and alerted: whose data, how old, or that there was none."""
        me = self.ctx.cfg.get("name") or "this host"
        if not self.ctx.cfg.get("shared_paths"):
            self.takeover = "%s took the bot over from %s (no shared_paths: no data to carry)" % (me, previous)
        elif restored:
            taken = restored.get("taken_at")
            age = time.time() - taken if isinstance(taken, (int, float)) else None
            self.takeover = "%s took the bot over from %s with its snapshot #%s of %s UTC, %s old, from the replica " \
                            "on %s (replicas are as fresh as the last backup --all or the fleet page's replication)" % (
                                me, previous, restored.get("seq", "?"), _utc(taken), _age(age), me)
        else:
            self.takeover = "%s took the bot over from %s: NO COPY of its data here (%s): the bot starts with " \
                            "%s's own data" % (me, previous, error, me)
        self.ctx.alert(self.takeover)


def _suspended(pid: int) -> bool:
    """The process is stopped (SIGSTOP, a debugger): state T in /proc/PID/stat."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _utc(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)) or not 0 < stamp < 2 ** 33:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "of unknown age"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    return "%.1f h" % (seconds / 3600)
