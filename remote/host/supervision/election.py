"""The bot's lease on etcd, held by one host's supervisor at a time (coordination in the inventory).

A thread of the supervisor talks to etcd (common/leases.py, common/etcd.py); the loop only asks it
``may_run()``, which is a clock reading, never a network call:

- the holder renews its lease every ``lease_ttl/3``; ``may_run()`` is true while the last renewal that
  worked was *sent* less than ``lease_ttl/2`` ago, on CLOCK_BOOTTIME (it keeps counting through a
  suspend). Past that the loop stops the bot (TERM, KILL 1 s later), well before etcd lets the lease
  expire (``lease_ttl`` after it *received* that renewal);
- the others watch the bot's keys (one streamed request a minute when nothing happens) and, when the
  holder key goes, wait 1 s per place in the inventory (standby hosts after all others) and race for it
  with one transaction (leases.claim). The winner writes its epoch and role, and the loop restores the
  newest replica of the previous holder's data before it starts the bot;
- a new supervisor on the holder finds its lease in run/lease.json and keeps it: a deploy is not a
  failover. So does a host an operator named with `failover --to` (its ctl claimed for it);
- a bot that failed here (budget spent, crash loop) lets the lease go; so does a fenced host and a token
  change (the keys of the new bot id are then raced for, the epoch carried by run/bot-epoch.json).

The thread never touches the services: it writes run/ files the loop reads anyway and queues its
words for the loop to log (and alert) on its own thread.
"""

import http.client
import os
import threading
import time

from remote.host.common import epochs, etcd, leases
from remote.host.common.files import read_env_file
from remote.host.supervision import bot

CLOCK = getattr(time, "CLOCK_BOOTTIME", None)
WATCH = 60.0        # s: a standby's watch when nothing happens (then it watches again from where it was)
CHECK_EVERY = 60.0  # s: the holder reads its holder key (a move that fenced it is read at once)
PLACE_DELAY = 1.0   # s per place in the inventory before a host races for a free lease
FENCED_GRACE = 120.0  # s: a holder fenced by a failover that never took its lease (the operator's laptop died) lets go


def for_supervisor(cfg, paths, wake):
    """The election of a supervisor that runs a bot in a coordinated inventory (None otherwise), started."""
    if not cfg.get("coordination") or not cfg.get("bot_command"):
        return None

    election = Election(cfg, paths, lambda: unit_of(paths, cfg), wake)
    election.start()
    return election


def unit_of(paths, cfg):
    """What the lease is for: the bot id of shared/.env's token as it is now (None: no token)."""
    found = bot.unit(read_env_file(os.path.join(paths.shared, ".env")), cfg)
    return found["bot_id"] if found else None  # shards aside: one holder runs every shard of the bot


def deadline_file(paths):
    """run/lease-deadline: until when (CLOCK_BOOTTIME) the bot may run without another renewal (leash.py)."""
    return os.path.join(paths.run, "lease-deadline")


def deadline(path):
    try:
        with open(path) as handle:
            return float(handle.read(64).strip())
    except (OSError, ValueError):
        return None


def write_deadline(path, value):
    """Atomic: the leash never reads half a number."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write("%.3f\n" % value)
    os.replace(tmp, path)


def boottime():
    """Seconds on a clock that counts through suspend (CLOCK_BOOTTIME; monotonic where there is none)."""
    return time.clock_gettime(CLOCK) if CLOCK is not None else time.monotonic()


class Election:
    def __init__(self, cfg, paths, unit, wake, clock=boottime):
        settings = cfg["coordination"]
        self.cfg, self.paths, self.unit_of, self.wake, self.clock = cfg, paths, unit, wake, clock
        self.ttl = int(settings.get("lease_ttl") or 10)
        self.settings = settings
        self.me = cfg.get("name") or "this host"
        self.place = float(cfg.get("place") or 0)
        self.lease, self.renewed, self.epoch = 0, None, 0
        self.span = self.ttl              # the held lease's own TTL, when shorter (granted by an older setting)
        self.unit = None
        self.state, self.error, self.view = "starting", None, None
        self.eligible = True            # the loop clears it while the bot is failed here
        self.win = None                 # {"previous", "epoch"}: a takeover the loop has not acted on yet
        self.words = []                 # [(text, alert)] for the loop to log
        self.checked = None
        self.fenced_since = None
        self.trouble_since = None
        self.alerted = False
        self._client, self._password = None, None
        self.requests_before = 0        # made by clients before the current one (a password change)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="election", daemon=True)

    # ------------------------------------------------------------------ what the loop asks
    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()

    def may_run(self):
        lease, renewed = self.lease, self.renewed
        return bool(lease) and renewed is not None and self.clock() - renewed < self.span / 2.0

    def wake_in(self):
        """Seconds until a holder that hears nothing more must stop its bot (the loop wakes then)."""
        renewed = self.renewed
        if not self.lease or renewed is None:
            return None
        return max(0.0, renewed + self.span / 2.0 - self.clock())

    def take_win(self):
        win, self.win = self.win, None
        return win

    def messages(self):
        words, self.words = self.words, []
        return words

    def why_not(self):
        """Why this host does not run the bot now, for its state and the start's answer."""
        view = self.view
        if self.state == "holder" and not self.may_run():
            return "lease: no renewal for %.0f s (etcd unreachable?): the bot is stopped until one works" % (
                self.clock() - self.renewed if self.renewed is not None else 0)
        if view is not None and view.paused:
            return "lease: paused by %s (invoke start --service bot --host %s resumes it)" % (
                _plain(view.paused.get("by")), _plain(view.paused.get("host")))
        if view is not None and view.held() and not view.names(self.me):
            return "lease: held by %s (epoch %s)" % (_plain(view.holder.get("host")), _plain(view.holder.get("epoch")))
        if self.error:
            return "lease: %s" % self.error
        return "lease: waiting for it (%s)" % self.state

    def describe(self):
        view = self.view
        holder = view.holder.get("host") if view is not None and view.held() else None
        holder = self.me if self.lease else holder
        left = None
        if self.lease and self.renewed is not None:
            left = max(0.0, self.ttl - (self.clock() - self.renewed))
        state = self.state
        if self.lease and not self.may_run():  # it holds a lease it cannot renew: etcd is out of reach
            state = "auth_failed" if self.error and "refused user" in self.error else "unreachable"
        return {"state": state, "holder": _plain(holder) if holder else None,
                "epoch": self.epoch or (view.epoch.get("epoch") if view is not None else None),
                "ttl": self.ttl, "time_left": round(left, 1) if left is not None else None,
                "paused": bool(view is not None and view.paused), "error": self.error,
                "last": leases.election_text(view.last) if view is not None else None,
                "etcd_requests": self.requests_before + (self._client.requests if self._client else 0)}

    # ------------------------------------------------------------------ the thread
    def _say(self, text, alert=False):
        self.words.append((text, alert))
        self.wake()

    def _run(self):
        while not self._stop.is_set():
            try:
                wait = self._turn()
                if self.trouble_since is not None:
                    self._say("etcd answers again", alert=self.alerted)
                self.trouble_since, self.alerted, self.error = None, False, None
            except etcd.AuthFailed as exc:
                wait = self._trouble(str(exc), "auth_failed", self.ttl)
            except (etcd.EtcdError, OSError, ValueError, http.client.HTTPException) as exc:
                wait = self._trouble(str(exc), "unreachable", 0.3 if self.lease else 1.0)
            except Exception as exc:  # a bug must not end the election silently: said, and tried again
                wait = self._trouble("%s: %s" % (type(exc).__name__, exc), "error", 1.0)
            self._stop.wait(wait)

    def _trouble(self, error, state, wait):
        self.error = _plain(error, 300)  # etcd's words go to a log line and a webhook: printable only
        if not self.lease:
            self.state = state
        if self.trouble_since is None:
            self.trouble_since = self.clock()
            self._say("etcd: %s" % self.error)
        elif not self.alerted and self.clock() - self.trouble_since > self.ttl / 2.0:
            self.alerted = True
            self._say("etcd unreachable from %s for %.0f s (%s): the bot does not run here until it answers"
                      % (self.me, self.clock() - self.trouble_since, self.error), alert=True)
        return wait

    def _connection(self):
        """The client, made again when ETCD_PASSWORD in shared/.env changed (read on every turn)."""
        password = read_env_file(os.path.join(self.paths.shared, ".env")).get("ETCD_PASSWORD")
        if self._client is None or password != self._password:
            if self._client is not None:
                self.requests_before += self._client.requests
                self._client.close()
            self._client = leases.client(self.settings, self.paths.shared, timeout=max(1.0, self.ttl / 8.0))
            self._password = password
        return self._client

    def _turn(self):
        unit = self.unit_of()
        if unit != self.unit:
            if self.lease and self.unit:  # a new token: hosts still on the old one must not start the old bot
                client = self._connection()
                leases.pause(client, self.unit, self.me, "a token change on %s (a new bot id)" % self.me)
                self._let_go(client, "its bot id changed (a new token)")
            self.unit, self.view = unit, None
        if unit is None:
            self.state, self.error = "no_bot", "no bot token in shared/.env: nothing to hold a lease for"
            return 5.0
        client = self._connection()
        return self._hold(client) if self.lease else self._watch(client)

    def _hold(self, client):
        if leases.remembered(self.paths, self.unit) != self.lease:  # a command here took another lease
            self._lost("run/lease.json names another lease")  # adopted by _watch once the key names it
            return 0.0
        sent = self.clock()
        left = client.keepalive(self.lease)
        if left <= 0:
            self._lost("its lease expired on etcd")
            return 0.0
        self.span, self.renewed, self.state = min(self.ttl, left), sent, "holder"
        write_deadline(deadline_file(self.paths), sent + self.span / 2.0)
        own = epochs.read(self.paths.bot_epoch)
        fenced = own.get("active_host") and own["active_host"] != self.me and own["epoch"] > self.epoch
        self.fenced_since = (self.fenced_since or sent) if fenced else None
        if fenced or self.checked is None or sent - self.checked >= CHECK_EVERY:
            self.view, self.checked = leases.read(client, self.unit), sent  # a failover --to moves it soon
            if not self.view.names(self.me, self.lease):
                lease = self.lease
                self._lost("the lease was moved: %s holds it now" % _plain(self.view.holder.get("host") or "nobody"))
                client.revoke(lease)  # no key is on it any more
                return 0.0
        if fenced and sent - self.fenced_since > FENCED_GRACE:  # the move that fenced it never took the lease
            self._let_go(client, "fenced for %.0f s: %s" % (FENCED_GRACE, epochs.moved(own)))
            return 0.0
        if not self.eligible:
            self._let_go(client, "its bot failed on %s" % self.me)
            return 0.0
        return max(0.05, sent + self.span / 3.0 - self.clock())

    def _watch(self, client):
        view = self.view = leases.read(client, self.unit)
        if view.held():
            kept = leases.remembered(self.paths, self.unit)
            if kept and view.names(self.me, kept):  # a new supervisor here, or an operator's move to here
                sent = self.clock()
                left = client.keepalive(kept)
                if left > 0:
                    self._holding(kept, int(view.holder.get("epoch") or 0), sent, None, "kept its lease", left)
                    return 0.0
            self.state = "standby"
            return 0.0 if self._events(client, view.revision, WATCH) else 0.0
        if view.paused:
            self.state = "paused"
            self._events(client, view.revision, WATCH)
            return 0.0
        if not self.eligible:
            self.state = "failed"
            self._events(client, view.revision, 5.0)  # the loop may make it eligible again (an operator start)
            return 0.0
        self.state = "candidate"
        if self.place and self._events(client, view.revision, self.place * PLACE_DELAY):
            return 0.0  # something changed while it waited its turn: read again
        sent = self.clock()  # before the grant: the lease counts from etcd's receipt of it, later
        lease = client.grant(self.ttl)
        own = epochs.read(self.paths.bot_epoch)
        why = view.why(self.me)
        record = leases.claim(client, view, self.me, self.unit, own.get("epoch"), lease,
                              "etcd lease", why)
        if record is None:
            client.revoke(lease)
            return 0.0
        previous = view.epoch.get("active_host")
        epochs.write(self.paths.bot_epoch, record)
        self._holding(lease, record["epoch"], sent, previous if previous and previous != self.me else None,
                      "took over: %s" % why)
        return 0.0

    def _events(self, client, revision, timeout):
        """True at the first change of the bot's keys after ``revision``; False when ``timeout`` passed.
        A watch a member ends at once (no leader, a restart) is not tried again within the second."""
        started = time.monotonic()
        for _ in client.watch(leases.prefix(self.unit), since=revision + 1, timeout=timeout, prefix=True):
            return True
        early = min(1.0, timeout) - (time.monotonic() - started)
        if early > 0:
            self._stop.wait(early)
        return False

    def _holding(self, lease, epoch, sent, previous, how, left=None):
        own = epochs.read(self.paths.bot_epoch)
        if not (own.get("active_host") and own["active_host"] != self.me and own["epoch"] > epoch):
            bot.write_role(self.paths.bot_role, "active")  # a fenced host keeps the lease, not the role
        leases.remember(self.paths, self.unit, lease, epoch)
        self.span = min(self.ttl, left) if left else self.ttl
        self.lease, self.renewed, self.epoch, self.state = lease, sent, epoch, "holder"
        write_deadline(deadline_file(self.paths), sent + self.span / 2.0)
        self.checked = None  # the next renewal reads the keys as they are now (the view was from before)
        if previous:
            self.win = {"previous": previous, "epoch": epoch}
        self._say("lease: %s holds it, epoch %d (%s)" % (self.me, epoch, how))

    def _lost(self, why):
        self.lease, self.renewed, self.state = 0, None, "standby"
        write_deadline(deadline_file(self.paths), 0.0)  # the leash stops a bot the loop has not stopped yet
        bot.write_role(self.paths.bot_role, "standby")
        leases.forget(self.paths)
        self._say("lease lost: %s; the bot stops here" % why, alert=True)

    def _let_go(self, client, why):
        lease = self.lease
        self._lost(why)
        try:
            leases.release(client, self.unit, self.me, self.epoch, lease, why)
        except etcd.EtcdError:
            pass  # it expires by itself within lease_ttl


def _plain(value, most=80):
    text = "%s" % (value,)
    return "".join(c for c in text if c.isprintable())[:most]
