"""Scheduled snapshots of the bot's data, taken by the supervisor of the host whose role is active.

Every ``backup_every`` seconds (inventory; off by default in no inventory: 6h) it runs
``ctl snapshot`` as a child process through jobs.py, so a 50 MB copy never stalls the loop, and the
snapshot code stays where the operator's snapshots run (remote/host/data). The first one after a
supervisor starts is due ``backup_every`` after the last one that worked (run/backups.json), at once
when that is long past; then the clock is the monotonic one. A failure is retried after a minute at
most five times a period, each logged and alerted once per streak; a last good snapshot older than
twice the period is alerted once too (status and doctor show it as a warning).
"""

import time

from remote.host.common.backupstate import last_result, stale
from remote.host.supervision import bot, jobs

RETRY = 60.0
DEADLINE = 1800.0  # s: a snapshot still running then is killed (and alerted)
SETTINGS = ("name", "shared_paths", "backup_keep", "backup_max", "bot_token_env")


class BackupSchedule:
    """The supervisor's chore: ``tick()`` on every turn, ``wake_in()`` for the loop's timeout."""

    def __init__(self, ctx, code_dir, clock=time.monotonic):
        self.ctx, self.code_dir, self.clock = ctx, code_dir, clock
        self.every = ctx.cfg.get("backup_every") or 0
        self.running = False
        self.failures = 0
        self.alerted_stale = False
        self.due = None
        if self.every and ctx.cfg.get("shared_paths") and ctx.cfg.get("bot_command"):
            good = (last_result(ctx.paths).get("last_ok") or {}).get("at")
            since = time.time() - good if isinstance(good, (int, float)) else self.every
            self.due = self.clock() + min(self.every, max(0.0, self.every - since))

    def active(self):
        """The host whose data is the bot's: the holder of its lease with coordination, else the active role."""
        if self.ctx.election is not None:
            return self.ctx.election.may_run()
        return bot.read_role(self.ctx.paths.bot_role, bool(self.ctx.cfg.get("standby"))) == "active"

    def wake_in(self):
        return None if self.due is None or self.running else max(0.0, self.due - self.clock())

    def tick(self):
        if self.due is None or self.running or self.ctx.stopping or self.clock() < self.due:
            return
        if not self.active():  # a standby's data is not the bot's: nothing to schedule until it is active
            self.due = self.clock() + min(self.every, RETRY)
            return
        started = jobs.ctl(self.ctx.jobs, "backup", "snapshot", self.ctx.paths.app_dir, {"reason": "scheduled"},
                           {k: self.ctx.cfg.get(k) for k in SETTINGS}, DEADLINE, self.code_dir, self._done)
        if started is not None:
            self.running = True
        else:
            self.due = self.clock() + RETRY

    def _done(self, outcome):
        self.running = False
        answer = jobs.ctl_answer(outcome)
        if answer.get("ok"):
            shot = answer.get("snapshot") or {}
            self.ctx.log("backup: snapshot %s, %s bytes, %s files" % (shot.get("stamp"), shot.get("bytes"),
                                                                        shot.get("files")))
            if self.failures:
                self.ctx.alert("backups work again on %s" % (self.ctx.cfg.get("name") or "this host"))
            self.failures, self.alerted_stale = 0, False
            self.due = self.clock() + self.every
            return
        error = answer.get("error") or outcome.error or "no answer"
        self.failures += 1
        self.ctx.log("backup failed: %s" % error)
        if self.failures == 1:
            self.ctx.alert("backup failed on %s: %s" % (self.ctx.cfg.get("name") or "this host", error))
        why = stale(self.ctx.paths, self.every)
        if why and not self.alerted_stale and "no backup for" in why:
            self.alerted_stale = True
            self.ctx.alert("%s: %s" % (self.ctx.cfg.get("name") or "this host", why))
        self.due = self.clock() + (min(self.every, RETRY) if self.failures <= 5 else self.every)
