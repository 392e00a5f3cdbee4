"""The operator's hand on the bot's lease, from a command run on one host (ctl), never from this machine:
etcd's credentials live on the hosts.

- ``pause``: `invoke stop` of the bot (or of the stack) on the holder. Its owner stopped it on purpose:
  a ``paused`` key tells every host not to take it over, and run/lease-paused tells this host's own
  supervisor (a deploy's new supervisor too) not to start it.
- ``resume``: `invoke start`/`restart` of the bot on the holder (or, once its lease ran out while
  paused, on the host the epoch names): the pause ends. On another host it is refused.
- ``claim``: `failover --to` in a coordinated inventory: once the host the bot leaves has stopped it,
  this host (the target) takes the lease in one transaction compared on that host still holding it
  and the epoch etcd keeps, with the epoch the failover gave it.
"""

import os
import time

from remote.host.common import epochs, etcd, leases
from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import read_json
from remote.host.common.system import read_pid
from remote.host.supervision import bot
from remote.host.supervision.election import unit_of


def paused_file(paths):
    return os.path.join(paths.run, "lease-paused")


def _setup(paths, config):
    coordination, unit = config.get("coordination"), unit_of(paths, config)
    if not coordination or not config.get("bot_command") or unit is None:
        return None
    return unit, leases.client(coordination, paths.shared, timeout=3.0)


def pause_here(paths, config, by):
    """Before the stop: this host's own supervisor will not start the bot again (True: it holds the lease)."""
    found = _setup(paths, config)
    if not found or not leases.remembered(paths, found[0]):
        return False
    with open(paused_file(paths), "w") as handle:
        handle.write(by + "\n")
    return True


def pause(paths, config, by):
    """After the stop: the pause for every host (the paused key); a note for the answer. Whatever etcd
    answers, or fails to, the bot is already stopped here."""
    found = _setup(paths, config)
    me = config.get("name") or ""
    if not found:
        return None
    unit, client = found
    try:
        if not leases.read(client, unit).names(me, leases.remembered(paths, unit)):
            os.unlink(paused_file(paths))
            return None
        leases.pause(client, unit, me, by)
    except Exception as exc:  # etcd down, or an answer that is not etcd's: the stop stands, said plainly
        return ("etcd unreachable (%s): the pause is kept on this host only; if its lease runs out, another host "
                "may start the bot" % _plain(exc))
    return "the bot's election is paused: no host takes it over; invoke start --service bot --host %s resumes it" % me


def resume(paths, config, by):
    """Before a start of the bot here: a pause ended (a note), or nothing to do (None); Failure when the
    bot is paused and belongs to another host."""
    found = _setup(paths, config)
    if not found:
        return None
    unit, client = found
    me, local = config.get("name") or "", os.path.exists(paused_file(paths))
    try:
        view = leases.read(client, unit)
    except etcd.EtcdError as exc:
        if local:
            raise Failure("the bot is paused here and etcd cannot be reached to resume it (%s): try again once "
                          "it answers" % exc) from None
        return None
    if not view.paused and not local:
        return None
    if view.paused:
        owner = view.holder.get("host") if view.held() else view.epoch.get("active_host")
        if owner and owner != me:
            raise Failure("refused: the bot was stopped on purpose and belongs to %s (epoch %s): start it there "
                          "(invoke start --service bot --host %s)" % (owner, view.epoch.get("epoch"), owner))
        if view.held():
            leases.resume(client, unit)
        else:  # its lease ran out while paused: this host takes it back, epoch + 1, in the same step
            _take(paths, config, client, view, by, "resumed by %s" % by, resume=True)
    if local:
        os.unlink(paused_file(paths))
    return "the bot's election resumed"


def _plain(value):
    return "".join(c for c in str(value) if c.isprintable())[:200]


def claim(paths, config, from_host, record, timeout):
    """failover --to, on the target: the lease moved here from ``from_host`` with ``record``'s epoch."""
    found = _setup(paths, config)
    me = config.get("name") or ""
    if not found:
        raise BadRequest("lease claim: this host has no coordination settings or no bot token")
    if not epochs.valid(record) or record["active_host"] != me:
        raise BadRequest("lease claim: an epoch record naming this host is needed, not %r" % (record,))
    unit, client = found
    view = leases.read(client, unit)
    if view.held() and view.holder.get("host") not in (from_host, me):
        raise Failure("refused: the lease was moved meanwhile (an election?): %s holds it, epoch %s; nothing "
                      "was changed" % (view.holder.get("host"), view.holder.get("epoch")))
    if int(view.epoch.get("epoch") or 0) >= record["epoch"]:
        raise Failure("refused: etcd keeps a later epoch (%s): nothing was changed" % epochs.moved(view.epoch))
    _take(paths, config, client, view, record.get("by") or "failover", "moved by %s with failover --to"
          % (record.get("by") or "an operator"), holder=from_host if view.held() else None, record=record)
    if read_pid(paths.pidfile):  # its supervisor takes the lease over from this command before the bot starts
        deadline = time.monotonic() + timeout
        while ((read_json(paths.state).get("services") or {}).get("bot") or {}).get("lease", {}).get("state") \
                != "holder":
            if time.monotonic() >= deadline:
                raise Failure("this host's supervisor did not take the lease within %.0f s" % timeout)
            time.sleep(0.05)
    return {"ok": True, "epoch": record}


def _take(paths, config, client, view, by, why, holder=None, resume=False, record=None):
    """This host made the holder (its lease granted here, its supervisor keeps it: run/lease.json)."""
    me = config.get("name") or ""
    lease = client.grant(int(config["coordination"].get("lease_ttl") or 10))
    own = epochs.read(paths.bot_epoch)
    # named in run/lease.json before the claim: the supervisor here reads it when the claim's change
    # reaches its watch, and would otherwise find the key naming this host under a lease it does not know
    leases.remember(paths, view.unit, lease, None)
    try:
        done = leases.claim(client, view, me, view.unit, own.get("epoch"), lease, by, why,
                            holder=holder, resume=resume, record=record)
    except BaseException:
        leases.forget(paths)
        raise
    if done is None:
        leases.forget(paths)
        client.revoke(lease)
        raise Failure("refused: the lease changed while this host was taking it (an election?); nothing was changed")
    epochs.write(paths.bot_epoch, done)
    leases.remember(paths, view.unit, lease, done["epoch"])
    bot.write_role(paths.bot_role, "active")
    return done
