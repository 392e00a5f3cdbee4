"""`ctl role` and `ctl epoch`: this host's half of `invoke failover` and of fencing. The role is
recorded in run/bot-role, which every start of the bot honours (a restart, the page's button, a
rollback, autostart at boot); the epoch in run/bot-epoch.json (common/epochs.py).

- standby: record it, stop the bot (orphaned one included) and confirm it is gone;
- active: check the other hosts (guard.check), record it, start the bot (the stack too if it is not
  running) and confirm it stays up for ``settle`` seconds. A bot that does not stay up leaves the
  role standby again, so the operator can move the bot back.
"""

import time

from remote.host.common import epochs
from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import Layout, error_tail
from remote.host.common.system import is_alive, read_pid, read_pidfile
from remote.host.supervision import bot, guard, orphans
from remote.host.supervision.inbox import ask
from remote.host.supervision.stack import operator_lock, restart_locked, stack_config, wait_bot_up

FENCE_GRACE = 2.0  # s between TERM and KILL for an orphaned bot that is stood down


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


def settle(app_dir, settings, record, expect=None, timeout=20.0):
    """`ctl epoch`: what the operator knows of the bot's epoch, applied under this host's lock.

    - ``expect`` (failover's compare-and-set on the host it leaves): refused unless this host's epoch
      is still ``expect``, naming who moved the bot and where.
    - A record naming this host is kept (it is about to start the bot: failover's target, a first start).
    - A record naming another host that beats this host's own is kept, and this host stands down: role
      standby, its bot stopped and confirmed gone, its data untouched, a "fenced:" line in its log.
    - Otherwise nothing changes, and the answer carries this host's own record (it knows better).
    """
    paths = Layout(app_dir)
    paths.make()
    if record is None:  # a check only: a bot held by boot_wait may start now; nothing else changes
        with operator_lock(paths, timeout, "epoch check"):
            epochs.mark_checked(paths, bot.boot_id())
            return {"ok": True, "fenced": False, "epoch": epochs.read(paths.bot_epoch)}
    if not epochs.valid(record):
        raise BadRequest("an epoch record of the wrong shape: %r" % (record,))
    with operator_lock(paths, timeout, "epoch %d" % record["epoch"]):
        config = stack_config(app_dir, settings)
        me = config.get("name") or ""
        own = epochs.read(paths.bot_epoch)
        if expect is not None and own["epoch"] != expect:
            where = epochs.moved(own) if own.get("active_host") else "epoch %d here" % own["epoch"]
            raise Failure("refused: the bot was moved meanwhile: %s; nothing was changed" % where)
        if record["active_host"] == me:
            if own["epoch"] > record["epoch"]:
                raise Failure("refused: this host knows a later epoch: %s; nothing was changed" % epochs.moved(own))
            epochs.write(paths.bot_epoch, record)
            epochs.mark_checked(paths, bot.boot_id())  # a bot held by boot_wait may start now
            return {"ok": True, "fenced": False, "epoch": record}
        if not epochs.beats(record, own, me):
            epochs.mark_checked(paths, bot.boot_id())
            return {"ok": True, "fenced": False, "epoch": own}
        epochs.write(paths.bot_epoch, record)  # first: a host that dies now comes back knowing it lost the bot
        was = bot.read_role(paths.bot_role, bool(config.get("standby")))
        bot.write_role(paths.bot_role, "standby")
        epochs.mark_checked(paths, bot.boot_id())  # only now: a held bot sees the standby role, never a start
        stopped = stop_bot(paths, config, timeout, grace=FENCE_GRACE) if config.get("bot_command") else {}
        if was == "active" or stopped.get("stopped_pid"):
            epochs.log(paths, "fenced: %s%s" % (epochs.moved(record), "; bot pid %d stopped" % stopped["stopped_pid"]
                                          if stopped.get("stopped_pid") else ""))
        return {"ok": True, "fenced": was == "active" or bool(stopped.get("stopped_pid")), "epoch": record,
                "stopped_pid": stopped.get("stopped_pid")}


def stop_bot(paths, config, timeout, grace=None):
    """Stop the bot, through the supervisor or as an orphan (TERM, then KILL after ``grace``, by
    default the bot's own); return once its process is gone."""
    record = read_pidfile(paths.pid("bot"))
    if read_pid(paths.pidfile):
        answer = ask(paths, "stop", "bot", timeout, grace)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "the supervisor refused to stop the bot")
    else:
        orphan = orphans.recorded(paths, "bot")
        if orphan is not None:
            orphans.stop(orphan, config.get("grace", 5.0) if grace is None else grace)
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
    return wait_bot_up(paths, settle, timeout, config)
