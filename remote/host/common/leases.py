"""The bot's keys in etcd, and the one transaction that names a holder: shared by the supervisor's
election (supervision/election.py) and by the commands an operator runs on a host (a failover's
target, a resume), so that both make the same move the same way.

Under ``/sulfur/bots/<unit>/`` (unit: the bot id, with its shards when it has some):

- ``holder``: {"host", "lease", "epoch", "since"}, under the holder's lease: it goes when the lease does;
- ``epoch``: the fencing counter, with no lease ({"epoch", "bot_id", "active_host", "since", "by"},
  the record run/bot-epoch.json keeps): it only grows, whatever etcd's revisions do;
- ``paused``: {"host", "by", "at"}: the owner stopped the bot on purpose, nobody takes over;
- ``last``: the last election in words, for status and the pages.

Taking over is one transaction: the holder key absent (or, for an operator's move, still naming the
host it leaves), the epoch key still what was read, and then both written with the epoch at
max(etcd's, this host's own) + 1. A restored or new cluster cannot lower the epoch: a host's own
record counts too.
"""

import json
import os
import time

from remote.host.common import epochs, etcd
from remote.host.common.files import read_env_file, read_json, write_json

ROOT = "/sulfur/bots/"
MAX_VALUE = 4096  # bytes: a value longer than that is not ours


def prefix(unit):
    return ROOT + unit + "/"


def client(coordination, shared, timeout=2.0):
    """An etcd client with this host's credentials: ETCD_PASSWORD read from shared/.env now (a changed
    password is used from the next login on, no restart needed)."""
    dotenv = read_env_file(os.path.join(shared, ".env"))
    return etcd.Etcd(coordination.get("endpoints") or [], coordination.get("user"), dotenv.get("ETCD_PASSWORD"),
                     timeout=timeout, ca_pem=coordination.get("ca_pem"))


def decode(raw):
    """A value of ours as a dict, or {} (absent, too long, not JSON: another writer's, never trusted)."""
    if not raw or len(raw) > MAX_VALUE:
        return {}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def encode(doc):
    return json.dumps(doc, sort_keys=True)


class View:
    """The bot's keys as read at one revision."""

    def __init__(self, unit, found, revision):
        self.unit, self.revision = unit, revision
        base = prefix(unit)
        self.raw = {name: found.get(base + name) for name in ("holder", "epoch", "paused", "last", "released")}
        self.holder = decode((self.raw["holder"] or (b"",))[0])
        self.holder_lease = self.raw["holder"][2] if self.raw["holder"] else 0
        record = decode((self.raw["epoch"] or (b"",))[0])
        self.epoch = record if epochs.valid(record) else {"epoch": 0}
        self.paused = decode((self.raw["paused"] or (b"",))[0]) if self.raw["paused"] else None
        self.last = decode((self.raw["last"] or (b"",))[0])
        self.released = decode((self.raw["released"] or (b"",))[0])

    def why(self, me):
        """Why a host takes over now, in words: the previous holder let go (and why), or its lease ran out."""
        before = self.epoch.get("active_host")
        if not before:
            return "the first holder of this bot"
        if before == me:
            return "its own lease had ended"
        if self.released.get("host") == before and self.released.get("epoch") == self.epoch.get("epoch"):
            return "%s let its lease go (%s)" % (before, self.released.get("why") or "?")
        return "%s's lease expired" % before

    def held(self):
        return self.raw["holder"] is not None

    def names(self, host, lease=None):
        """The holder key names ``host`` (under ``lease`` when given)."""
        return self.held() and self.holder.get("host") == host and (lease is None or self.holder_lease == lease)


def read(client_, unit):
    found, revision = client_.scan(prefix(unit))
    return View(unit, found, revision)


def claim(client_, view, me, bot_id, own_epoch, lease, by, why, holder=None, resume=False, record=None):
    """One transaction that makes ``me`` the holder under ``lease`` with the next epoch: the holder key
    absent (or, with ``holder``, still naming that host), the epoch key as ``view`` read it, the bot not
    paused (unless ``resume``: the paused key is removed in the same step). Returns the new epoch record,
    or None when another host got there first (nothing was written). ``record``: the epoch an operator's
    failover gave this host (higher than etcd's, or the caller refuses first)."""
    base = prefix(view.unit)
    now = time.time()
    if record is None:
        number = max(int(view.epoch.get("epoch") or 0), int(own_epoch or 0)) + 1
        record = {"epoch": number, "bot_id": bot_id, "active_host": me, "since": now, "by": by}
    number = record["epoch"]
    compare = [etcd.value_is(base + "holder", view.raw["holder"][0]) if holder is not None and view.held()
               else etcd.absent(base + "holder")]
    compare.append(etcd.value_is(base + "epoch", view.raw["epoch"][0]) if view.raw["epoch"]
                   else etcd.absent(base + "epoch"))
    if not resume:
        compare.append(etcd.absent(base + "paused"))
    success = [etcd.put_op(base + "holder", encode({"host": me, "lease": str(lease), "epoch": number, "since": now}),
                           lease),
               etcd.put_op(base + "epoch", encode(record)),
               etcd.put_op(base + "last", encode({"host": me, "at": now, "epoch": number, "why": why}))]
    if resume:
        success.append(etcd.delete_op(base + "paused"))
    done, _ = client_.txn(compare, success)
    return record if done else None


def pause(client_, unit, me, by):
    client_.put(prefix(unit) + "paused", encode({"host": me, "by": by, "at": time.time()}))


def resume(client_, unit):
    return client_.delete(prefix(unit) + "paused")


def release(client_, unit, me, epoch, lease, why):
    """Let the lease go (its holder key goes with it), saying why for the next holder's ``last``: the
    bot failed here, its token changed, this host was fenced."""
    client_.put(prefix(unit) + "released", encode({"host": me, "epoch": epoch, "why": why, "at": time.time()}))
    client_.revoke(lease)


# ------------------------------------------------------------------------ run/lease.json
def lease_file(paths):
    return os.path.join(paths.run, "lease.json")


def remember(paths, unit, lease, epoch):
    """The lease this host holds, kept so that a new supervisor (a deploy, a restart) picks it up
    instead of starting an election: a deploy is not a failover."""
    write_json(lease_file(paths), {"unit": unit, "lease": str(lease), "epoch": epoch, "at": time.time()},
               durable=True)


def remembered(paths, unit):
    doc = read_json(lease_file(paths))
    try:
        return int(doc["lease"]) if doc.get("unit") == unit else 0
    except (KeyError, TypeError, ValueError):
        return 0


def forget(paths):
    try:
        os.unlink(lease_file(paths))
    except OSError:
        pass


def text(lease):
    """The lease as status and both pages word it, from a host's state (``services.bot.lease``, untrusted:
    the caller escapes it for its terminal or page): holder, epoch, time left, the last election, and
    what the last takeover here restored. None without coordination."""
    if not isinstance(lease, dict):
        return None
    state, holder, epoch = lease.get("state"), lease.get("holder"), lease.get("epoch")
    if state == "holder":
        line = "lease held here, epoch %s, %s s left" % (epoch, lease.get("time_left"))
    elif lease.get("paused"):
        line = "lease paused (the bot was stopped on purpose; invoke start --service bot --host HOLDER resumes it)"
    elif state in ("unreachable", "auth_failed", "error"):
        line = "lease: etcd %s (%s): the bot does not run here until etcd answers (safety over availability)" % (
            "refused the login" if state == "auth_failed" else "unreachable", lease.get("error"))
    elif holder:
        line = "lease held by %s, epoch %s" % (holder, epoch)
    else:
        line = "lease: %s" % state
    if lease.get("last"):
        line += "; last election: %s" % lease["last"]
    if lease.get("takeover"):
        line += "; %s" % lease["takeover"]
    return line


def election_text(last, now=None):
    """ "phone took over at 03:12: pi's lease expired" from the ``last`` key (untrusted: printable only)."""
    if not last.get("host"):
        return None
    at = last.get("at")
    when = time.strftime("%H:%M", time.localtime(at)) if isinstance(at, (int, float)) and 0 < at < 2 ** 33 else "?"
    text = "%s took over at %s: %s" % (last.get("host"), when, last.get("why") or "?")
    return "".join(c for c in text if c.isprintable())[:200]
