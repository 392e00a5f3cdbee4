"""This host's half of "the bot runs exactly once": which bot it would start, which it runs, and the
check of the one against what the other hosts run.

The operator asks every other host (`ctl status`, in parallel) and sends their answers with the
start; this host decides under its operator lock, with its own shared/.env, before anything
changes. The token never leaves the host: only its bot id travels.
"""

import os
import time

from remote.host.common import epochs
from remote.host.common.errors import Failure
from remote.host.common.files import read_env_file, read_json
from remote.host.common.system import read_pid
from remote.host.supervision import bot, orphans

#: states in which a host counts as running its bot: it is up, or about to be again by itself
RUNNING = ("running", "starting", "backoff", "stopping", "orphaned")


def env_path(paths):
    return os.path.join(paths.shared, ".env")


def env_bot_id(paths, token_env=None, path=None):
    """The bot id of the token in shared/.env (or ``path``), or None without a token."""
    return bot.env_bot_id(path or env_path(paths), token_env)


def would_run(paths, config, path=None, role=None, dotenv=None):
    """The unit a start here would run, or None: no bot, no token (demo mode), or the standby role.
    ``dotenv``: the keys of a .env not written yet (a plan's --env-file), instead of a file's."""
    role = role or bot.read_role(paths.bot_role, bool(config.get("standby")))
    if role == "standby":
        return None
    return bot.unit(dotenv if dotenv is not None else read_env_file(path or env_path(paths)), config)


def running(paths):
    """The unit this host runs now, with its state, pid and start, or None. A bot whose supervisor
    died counts while its process lives (orphaned)."""
    state = read_json(paths.state)
    svc = state.get("services", {}).get("bot") or {}
    if not svc.get("bot_id"):
        return None
    alive = read_pid(paths.pidfile)
    orphan = None if alive else orphans.recorded(paths, "bot")
    current = svc.get("state") if alive else ("orphaned" if orphan else "stopped")
    # a bot failed with a retry time (a spent budget) starts again by itself when the window slides
    waiting = alive and current == "failed" and svc.get("next_start_in") is not None
    if current not in RUNNING and not waiting:
        return None
    return {"bot_id": svc["bot_id"], "shard_count": svc.get("shard_count") or 1, "shards": svc.get("shards") or [0],
            "state": current, "pid": orphan.pid if orphan else svc.get("pid"), "started_at": svc.get("started_at")}


def _age(seconds):
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60) if seconds >= 3600 else "%dm%02ds" % divmod(seconds, 60)


def check(paths, config, guard, path=None, role=None, dotenv=None):
    """Refuse (Failure, exit 1) a start that would run a bot another host runs. ``guard`` is what
    the operator gathered: {"others": [{host, cached, seen_at, units: [...]}], "takeover": bool}."""
    if not guard or config.get("coordination"):  # with an etcd lease, the lease decides who runs it
        return None
    mine = would_run(paths, config, path, role, dotenv)
    if mine is None:
        return None
    notes = []
    for other in guard.get("others") or []:
        if other.get("unknown"):  # it answered, but not what it runs: it may run this very bot
            if not guard.get("takeover"):
                raise Failure("%s cannot tell which bot it runs (%s): refused; update it (invoke deploy --host "
                              "%s), or use --takeover" % (other["host"], other.get("error"), other["host"]))
            notes.append("TAKEOVER: %s could not tell which bot it runs" % other["host"])
        for unit in other.get("units") or []:
            if not bot.overlaps(mine, unit):
                continue
            what = "bot %s (%s)" % (mine["bot_id"], bot.shard_text(unit))
            if not other.get("cached"):
                raise Failure("%s already runs on %s (pid %s, up %s): refused before anything changed; stop it "
                              "there, or move it with invoke failover --to %s" % (
                                  what, other["host"], unit.get("pid"), _age(unit.get("uptime")),
                                  config.get("name") or "HOST"))
            seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(other.get("seen_at") or 0))
            if not guard.get("takeover"):
                raise Failure("%s cannot be reached and was last seen running %s at %s (pid %s): refused; "
                              "check that host, or use --takeover to start it here anyway"
                              % (other["host"], what, seen, unit.get("pid")))
            notes.append("TAKEOVER: %s was last seen running %s at %s" % (other["host"], what, seen))
    if dotenv is None:  # a start, not a plan
        take_epoch(paths, config, epochs.unit_key(mine["bot_id"], mine["shard_count"], mine["shards"]), guard)
    return notes


def take_epoch(paths, config, bot_id, guard):
    """The epoch a start here gives: 1 for the first start of a bot id anywhere (no host holds one),
    the highest known + 1 for a start with --takeover while another host holds it, the known one
    when it names this host and this host's own record is behind, and this host's own epoch carried
    to a new bot id (a changed token, or shard set). Anything else is failover's to do."""
    me = config.get("name") or ""
    own = epochs.read(paths.bot_epoch)
    known = (guard.get("epochs") or {}).get(bot_id)
    known = known if epochs.valid(known) else None
    record = {"bot_id": bot_id, "active_host": me, "since": time.time(), "by": guard.get("by")}
    if known is None and own.get("active_host") == me and own.get("bot_id") not in (None, bot_id):
        epochs.write(paths.bot_epoch, dict(own, bot_id=bot_id))  # a new token here: its epoch carried over
    elif known is None:
        if own.get("missing"):
            epochs.write(paths.bot_epoch, dict(record, epoch=1))
    elif known["active_host"] != me and guard.get("takeover"):
        taken = dict(record, epoch=max(known["epoch"], own["epoch"]) + 1)
        if not epochs.valid(taken):
            raise Failure("bot %s: the highest epoch known is out of range (%d): refused; check the hosts' "
                          "run/bot-epoch.json" % (bot_id, known["epoch"]))
        epochs.write(paths.bot_epoch, taken)
    elif known["active_host"] != me:  # started here, it would be fenced at the next contact
        raise Failure("bot %s: %s, not to this host: refused before anything changed; move it here with invoke "
                      "failover --to %s" % (bot_id, epochs.moved(known), me or "HOST"))
    elif own["epoch"] < known["epoch"]:  # it names this host, whose own record is behind
        epochs.write(paths.bot_epoch, known)
