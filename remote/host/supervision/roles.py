"""`ctl role`: this host's half of `invoke failover`. The role is recorded in run/bot-role, which
every start of the bot honours (a restart, the page's button, a rollback, autostart at boot).

- standby: record it, stop the bot (orphaned one included) and confirm it is gone;
- active: check the other hosts (guard.check), record it, start the bot (the stack too if it is not
  running) and confirm it stays up for ``settle`` seconds. A bot that does not stay up leaves the
  role standby again, so the operator can move the bot back.
"""

import time

from remote.host.common.errors import Failure
from remote.host.common.files import Layout, error_tail
from remote.host.common.system import is_alive, read_pid, read_pidfile
from remote.host.supervision import bot, guard, orphans
from remote.host.supervision.inbox import ask
from remote.host.supervision.stack import operator_lock, restart_locked, stack_config, wait_bot_up


def set_role(app_dir, settings, role, checks=None, settle=5.0, timeout=20.0):
    paths = Layout(app_dir)
    paths.make()
    with operator_lock(paths, timeout, "role %s" % role):
        config = stack_config(app_dir, settings)
        if not config.get("bot_command"):
            raise Failure("this host runs no bot (no bot_command in the inventory)")
        if role == "standby":
            bot.write_role(paths.bot_role, "standby")
            return dict(stop_bot(paths, config, timeout), ok=True, role="standby")
        notes = guard.check(paths, config, checks, role="active")
        bot.write_role(paths.bot_role, "active")
        try:
            pid = start_bot(paths, config, settle, timeout)
        except BaseException:  # whatever went wrong, this host must not keep the bot by itself
            bot.write_role(paths.bot_role, "standby")
            stop_bot(paths, config, timeout)
            raise
        return {"ok": True, "role": "active", "pid": pid, "notes": notes or []}


def stop_bot(paths, config, timeout):
    """Stop the bot, through the supervisor or as an orphan; return once its process is gone."""
    record = read_pidfile(paths.pid("bot"))
    if read_pid(paths.pidfile):
        answer = ask(paths, "stop", "bot", timeout)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "the supervisor refused to stop the bot")
    else:
        orphan = orphans.recorded(paths, "bot")
        if orphan is not None:
            orphans.stop(orphan, config.get("grace", 5.0))
    deadline = time.monotonic() + timeout
    while record and is_alive(record[0], record[1]):
        if time.monotonic() >= deadline:
            raise Failure("the bot (pid %d) did not stop within %.0f s" % (record[0], timeout))
        time.sleep(0.05)
    return {"stopped_pid": record[0] if record else None}


def start_bot(paths, config, settle, timeout):
    """Start the bot here and wait until it has stayed up, same pid, for ``settle`` seconds."""
    if read_pid(paths.pidfile):
        answer = ask(paths, "start", "bot", timeout + bot.MIN_SPACING)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "the supervisor refused to start the bot",
                          error_tail(paths.log("bot")))
    else:
        restart_locked(paths, config, timeout=timeout, start_only=True)
    return wait_bot_up(paths, settle, timeout)
