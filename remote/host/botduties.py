"""The supervisor's duties towards the bot, beyond keeping a process alive (a mixin of Supervisor).

A bot must run exactly once, and a crash loop must not cost its token, so before every start of the
bot the Keeper (remote/host/bot.py) is asked: the role (standby hosts never start it), the start
budget (50 a day by default), the spacing (5 s between logins). Its liveness comes over the notify
socket (WATCHDOG=1, STATUS=...), from its process or any child of it. And a new supervisor first
deals with the processes the last one left behind (remote/host/orphans.py).
"""

import socket

from remote.host import orphans
from remote.host.inbox import reply
from remote.host.listener import Listener
from remote.host.service import group_alive, kill_group
from remote.host.system import parent_pid


class BotDuties:
    """Methods of Supervisor that concern the bot and the orphans; they use its state and helpers."""

    def _orphans(self):
        """Our processes that outlived the last supervisor: the bot is stopped before anything starts,
        spares too; the dashboard's socket is taken over (then it is the orphan returned)."""
        grace = self.cfg["grace"]
        bot = orphans.recorded(self.paths, "bot")
        if bot is not None:
            self.log("orphan bot pid %d stopped (%s)" % (bot.pid, orphans.stop(bot, grace)))
        for spare in orphans.spares(self.paths.app_dir):
            self.log("orphan spare pid %d stopped (%s)" % (spare.pid, orphans.stop(spare, grace)))
        dash = orphans.recorded(self.paths, "dashboard")
        if dash is None:
            return None
        sock = orphans.take_socket(self.notify, dash, self.cfg["host"], self.cfg["port"])
        if sock is None:
            self.log("orphan dashboard pid %d cannot hand its socket over: stopped (%s)"
                     % (dash.pid, orphans.stop(dash, grace)))
            return None
        self.listener = Listener(sock, inherited=True, reuse_port=False, attempts=0)
        self.log("orphan dashboard pid %d handed its socket over; it serves until a new one is ready" % dash.pid)
        return dash

    def _bot_may_start(self, svc, waiter):
        """The bot starts only in the active role, within its start budget, 5 s after its last start,
        and never beside another of its processes: a start asked for while one runs or is being
        stopped is answered by that one, or once the new one starts."""
        if self.keeper.pending:
            svc.waiters.append(waiter)
            return False
        if svc.proc is not None and svc.proc.poll() is None:
            reply(waiter, True, pid=svc.proc.pid)
            return False
        decision, reason, seconds = self.keeper.gate()
        if decision == "start":
            return True
        svc.reason = reason
        if decision == "standby":
            svc.stopped()
            svc.state = "standby"
            for each in svc.take_waiters(waiter):
                reply(each, True, state="standby")
        elif decision == "wait":  # answered when it starts; the start it defers was counted already
            svc.state, svc.next_start, svc.deferred = "backoff", self.clock() + seconds, True
            svc.waiters.append(waiter)
        else:
            svc.state, svc.next_start = "failed", self.clock() + seconds  # the window slides on
            self.log("bot: %s; next start in %.0f s at the earliest" % (reason, seconds))
            if not svc.alerted:
                self.alert("bot on %s: %s: no more starts until the window slides or an operator runs "
                           "invoke start --reset-budget" % (socket.gethostname(), reason))
                svc.alerted = True
            for each in svc.take_waiters(waiter):
                reply(each, False, reason)
        self.write_state()
        return False

    def _bot_timers(self, bot):
        pending = self.keeper.pending
        if pending and pending[0].poll() is not None and not group_alive(pending[0]):
            # the old bot is gone, and what it started with it: now the new one
            self.keeper.pending = None
            bot.restarts += 1
            self.start(bot, pending[1])
        elif pending and pending[0].poll() is not None:  # its leader exited, its children linger
            kill_group(pending[0])
        elif bot.proc is not None and self.keeper.live.overdue():
            self._watchdog_kill(bot)
        if self.keeper.live.status_changed and self.clock() - self.keeper.status_written >= 2.0:
            self.write_state()  # STATUS= lines reach the state at most every 2 s

    def _watchdog_kill(self, bot):
        """No WATCHDOG=1 for watchdog_sec: stop it (short grace: it hangs) and start it again."""
        seconds = self.keeper.live.watchdog_sec
        old = bot.detach()
        if old is None:  # it exited just now: reap() handles that on the next tick
            return
        self.log("bot: no WATCHDOG=1 for %.0f s: stopping pid %d" % (seconds, old.pid))
        self.alert("bot on %s missed its watchdog (%.0f s): restarted" % (socket.gethostname(), seconds))
        bot.failures, delay = self.policy.after_exit(bot.failures, bot.uptime())
        bot.last_exit, bot.reason = "watchdog", "watchdog"
        self._retire(old, grace=min(self.cfg["grace"], 1.0))
        if delay is None:
            bot.state, bot.next_start = "failed", None
            self.log("bot: %d failures in a row: marked failed" % bot.failures)
        else:
            self.keeper.pending, bot.state = (old, None), "stopping"
        self.write_state()

    def _from_bot(self, pid):
        """The bot's process or one of its children (a launcher script, a worker) sent it."""
        bot = self.services.get("bot")
        for _ in range(8):
            if bot is None or bot.proc is None or pid <= 1:
                return False
            if pid == bot.proc.pid:
                return True
            try:
                pid = parent_pid(pid)
            except (OSError, ValueError, IndexError):
                return False
        return False
