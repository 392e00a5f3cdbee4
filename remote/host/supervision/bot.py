"""What makes the bot more than a process: its identity, its role, its start budget, its liveness.

- Identity: the bot id is the first 12 hex characters of sha256(token), so hosts, the operator and
  the page can tell whether two hosts run the same bot without the token leaving shared/.env. The
  unit that must run once fleet-wide is (bot id, shard).
- Role: run/bot-role ("active" or "standby"), written by `failover`; without it the inventory's
  `standby` setting decides. Every start reads it, autostart at boot included.
- Start budget: Discord resets a token after 1,000 logins in 24 h. Every start of the bot is kept
  in run/bot-starts.json, in wall-clock time with the boot it happened in; within a boot, ages come
  from the monotonic clock, so a clock step neither erases the record nor fills it.
- Liveness: systemd's notify protocol (READY=1, STATUS=..., WATCHDOG=1), see Liveness.
"""

import hashlib
import os
import time

from remote.host.common import epochs
from remote.host.common.errors import BadRequest
from remote.host.common.files import read_env_file, read_json, write_json

TOKEN_NAMES = ("DISCORD_TOKEN", "BOT_TOKEN", "TOKEN")
WINDOW = 24 * 3600.0
MIN_SPACING = 5.0   # Discord's login spacing: never two starts of the same bot closer than this
STATUS_MAX = 200    # characters of a STATUS= line kept
ROLES = ("active", "standby")


def token(dotenv, name=None):
    """The bot's token from shared/.env: the variable ``name``, else the first of TOKEN_NAMES set."""
    for key in [name] if name else TOKEN_NAMES:
        if dotenv.get(key):
            return dotenv[key]
    return None


def bot_id(secret):
    """sha256(token)[:12]: names the bot everywhere; 48 bits say nothing usable about the token."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else None


def env_bot_id(path, name=None):
    """The bot id of the token in the .env file at ``path`` (None: no token there)."""
    return bot_id(token(read_env_file(path), name))


def parse_shards(spec, count):
    """ "0-3", "0,2,5", "1-2,7" or None (all of them) -> a sorted list of shard ids < count."""
    if count < 1:
        raise BadRequest("shard_count must be at least 1, not %s" % count)
    if spec in (None, "", "all"):
        return list(range(count))
    found = set()
    for part in str(spec).split(","):
        part = part.strip()
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise BadRequest("shards %r: use numbers and ranges like 0-3 or 0,2" % spec) from None
        if first < 0 or last < first or last >= count:
            raise BadRequest("shards %r: %s is outside 0-%d (shard_count %d)" % (spec, part, count - 1, count))
        found.update(range(first, last + 1))
    return sorted(found)


def overlaps(one, other):
    """Two (bot id, shard_count, shards) units collide: same bot, a shard in common. With different
    shard counts the shards mean different guild sets, so any two of them collide."""
    if not one or not other or one["bot_id"] != other["bot_id"]:
        return False
    if one.get("shard_count", 1) != other.get("shard_count", 1):
        return True
    return bool(set(one.get("shards") or [0]) & set(other.get("shards") or [0]))


def shard_text(unit):
    shards = unit.get("shards") or [0]
    if unit.get("shard_count", 1) == 1:
        return "the only shard"
    return "shard%s %s of %d" % ("s" if len(shards) > 1 else "", ",".join(map(str, shards)), unit["shard_count"])


# ------------------------------------------------------------------------------------ the role


def read_role(path, default_standby=False):
    """"active" or "standby": the recorded role, else the inventory's initial one."""
    try:
        with open(path) as handle:
            role = handle.read().strip()
    except OSError:
        role = ""
    return role if role in ROLES else ("standby" if default_standby else "active")


def recorded_role(paths):
    """run/bot-role as failover wrote it, or None (the inventory's standby setting decides)."""
    return read_role(paths.bot_role) if os.path.exists(paths.bot_role) else None


def write_role(path, role):
    if role not in ROLES:
        raise BadRequest("unknown role %r (known: %s)" % (role, ", ".join(ROLES)))
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(role + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ the budget


def boot_id():
    """This boot's id (Linux and Android have it), so records of an earlier boot are told apart."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


class StartBudget:
    """Starts of the bot in a sliding 24 h window, kept across supervisors and reboots.

    A record from this boot ages on the monotonic clock. One from an earlier boot is aged once, when
    first read after the reboot, by the wall clock but never less than this boot's uptime (it
    happened before the boot), then kept on this boot's monotonic clock: a wall clock that NTP steps
    later changes nothing. Errs towards counting a start too long, never towards forgetting it.
    """

    def __init__(self, path, limit, wall=time.time, mono=time.monotonic, boot=None):
        self.path, self.limit = path, limit
        self.wall, self.mono = wall, mono
        self.boot = boot if boot is not None else boot_id()

    def load(self):
        """The starts within the window, each with its age on this boot's monotonic clock."""
        now_wall, now_mono = self.wall(), self.mono()
        starts, rebased = [], False
        for item in read_json(self.path).get("starts", []):
            try:
                wall, mono, boot = float(item["wall"]), float(item["mono"]), item.get("boot")
            except (KeyError, TypeError, ValueError):
                continue
            if self.boot is None:  # no boot id on this machine: the wall clock is all there is
                mono = now_mono - (now_wall - wall)
            elif boot != self.boot:
                age = max(now_wall - wall, now_mono)
                mono, boot = now_mono - age, self.boot
                rebased = True
            if now_mono - mono < WINDOW:
                starts.append({"wall": wall, "mono": mono, "boot": boot})
        if rebased:  # aged once: a wall clock stepped later changes nothing
            self._save(starts)
        return starts

    def _save(self, starts):
        write_json(self.path, {"starts": starts, "limit": self.limit})

    def used(self):
        return len(self.load())

    def last_start_age(self, starts=None):
        """Seconds since the latest start on record (None: none in the window). ``starts``: the
        record as load() just read it, so that one decision reads the file once."""
        starts = self.load() if starts is None else starts
        return self.mono() - max(s["mono"] for s in starts) if starts else None

    def frees_in(self, starts=None):
        """Seconds until one more start is allowed (0 when one is allowed now)."""
        starts = sorted(s["mono"] for s in (self.load() if starts is None else starts))
        if len(starts) < self.limit:
            return 0.0
        return max(0.0, starts[len(starts) - self.limit] + WINDOW - self.mono())

    def record(self):
        starts = self.load()
        starts.append({"wall": self.wall(), "mono": self.mono(), "boot": self.boot})
        self._save(starts)

    def reset(self):
        self._save([])

    def describe(self):
        starts = self.load()
        frees = self.frees_in(starts)
        return {"limit": self.limit, "used": len(starts), "window_hours": WINDOW / 3600,
                "next_start_allowed_at": self.wall() + frees if frees else None}


def spent_reason(limit):
    return "start budget spent (%d in 24 h)" % limit


def reset_budget(path, limit):
    StartBudget(path, limit).reset()


# ------------------------------------------------------------------------------------ liveness


class Liveness:
    """What the bot said over the notify socket: READY, its STATUS line, its WATCHDOG pings."""

    def __init__(self, watchdog_sec, clock=time.monotonic):
        self.watchdog_sec, self.clock = float(watchdog_sec or 0), clock
        self.reset()

    def reset(self):
        """A new bot process: nothing heard yet; its watchdog runs from its start."""
        self.ready, self.status, self.last_ping = False, None, self.clock()
        self.status_changed = False

    def heard(self, lines):
        """The lines of one datagram from the bot (or a child of it)."""
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text == "READY=1":
                self.ready = True
            elif text == "WATCHDOG=1":
                self.last_ping = self.clock()
            elif text.startswith("STATUS="):
                status = "".join(c for c in text[7:] if c.isprintable())[:STATUS_MAX]
                if status != self.status:
                    self.status, self.status_changed = status, True

    def overdue(self):
        """The watchdog is on and no WATCHDOG=1 came for watchdog_sec."""
        return self.watchdog_sec > 0 and self.clock() - self.last_ping > self.watchdog_sec

    def due_in(self):
        """Seconds until the watchdog would fire (None when it is off)."""
        return None if self.watchdog_sec <= 0 else self.last_ping + self.watchdog_sec - self.clock()

    def environment(self):
        """What the bot's environment gets for it (WATCHDOG_PID is set by the exec shim, see spawn)."""
        return {"WATCHDOG_USEC": str(int(self.watchdog_sec * 1e6))} if self.watchdog_sec > 0 else {}


def unit(dotenv, cfg):
    """This host's bot unit from shared/.env and the settings: {bot_id, shard_count, shards} or None
    (no token: the example bot's demo mode; no bot_command)."""
    if not cfg.get("bot_command"):
        return None
    ident = bot_id(token(dotenv, cfg.get("bot_token_env")))
    if not ident:
        return None
    count = int(cfg.get("shard_count") or 1)
    return {"bot_id": ident, "shard_count": count, "shards": parse_shards(cfg.get("shards"), count)}


class Keeper:
    """The supervisor's decisions about starting the bot: role, budget, spacing; and what it heard."""

    def __init__(self, cfg, paths, clock=time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.role_path = paths.bot_role
        self.limit = int(cfg.get("bot_starts_per_day") or 50)
        self.budget = StartBudget(paths.bot_starts, self.limit, mono=clock)
        self.live = Liveness(cfg.get("watchdog_sec"), clock)
        self.unit = None                # what the running bot is: {bot_id, shard_count, shards}
        self.next_unit = None           # what a start now would run (shared/.env as it is now)
        self.pending = None             # (old process, waiter): a restart waits until the old one is gone
        self.status_written = 0.0
        self.hold = epochs.BootHold(paths, boot_id(), clock)  # boot_wait: the first supervisor of a boot

    def role(self):
        return read_role(self.role_path, bool(self.cfg.get("standby")))

    def gate(self):
        """(decision, reason, seconds): start | standby | spent (retry in) | wait (start in)."""
        if self.role() == "standby":
            return "standby", "standby: this host does not start the bot (invoke failover moves it here)", None
        held = self.hold.remaining()
        if held is not None:
            return "wait", "boot_wait: held until its epoch is checked (%.0f s at most)" % held, min(held, 1.0)
        starts = self.budget.load()
        frees = self.budget.frees_in(starts)
        if frees > 0:
            return "spent", spent_reason(self.limit), frees
        age = self.budget.last_start_age(starts)
        if age is not None and age < MIN_SPACING:
            return "wait", "logins are kept %.0f s apart" % MIN_SPACING, MIN_SPACING - age
        return "start", None, None

    def environment(self, dotenv):
        """The bot's own variables: its shards, its watchdog. Recorded as the unit it now runs."""
        self.next_unit = unit(dotenv, dict(self.cfg, bot_command=self.cfg.get("bot_command") or "bot"))
        count = int(self.cfg.get("shard_count") or 1)
        env = {"SHARD_COUNT": str(count),
               "SHARD_IDS": ",".join(map(str, parse_shards(self.cfg.get("shards"), count)))}
        env.update(self.live.environment())
        return env

    def started(self):
        """The bot was just spawned, with the environment built last: that is the unit it runs."""
        self.unit = self.next_unit
        self.budget.record()
        self.live.reset()

    def describe(self, running=True):
        """For state.json: the unit the running bot runs; else the one a start would run."""
        unit_ = (self.unit if running else self.next_unit) or {}
        return {"bot_id": unit_.get("bot_id"), "shard_count": unit_.get("shard_count"),
                "shards": unit_.get("shards"), "role": self.role(), "status": self.live.status,
                "ready": self.live.ready, "watchdog_sec": self.live.watchdog_sec, "budget": self.budget.describe(),
                "boot_hold": self.hold.remaining() if not running and self.role() == "active" else None}


#: a bot that speaks sd_notify counts as started at READY=1 with the same pid still alive this long after
READY_HOLD = 0.5
#: the inventory's bot_ready_timeout when none is sent: a notify bot not READY by then has failed to start
READY_TIMEOUT = 60.0


def remember_notify(paths):
    """The bot said READY=1: from now on its starts are confirmed by READY, not by a fixed grace (kept
    in run/, across its restarts and releases, until the host's app_dir goes)."""
    if os.path.exists(paths.bot_notify):
        return
    try:
        with open(paths.bot_notify, "w") as handle:
            handle.write("READY=1 first seen %s\n" % time.strftime("%Y-%m-%d %H:%M:%S"))
    except OSError:  # a full disk: the grace period stays, nothing else changes
        pass


def speaks_notify(paths, config):
    """True when a start is confirmed by READY=1: the inventory says so (bot_notify: true), or it says
    nothing and the bot did before; bot_notify: false is a bot that no longer does (the grace again)."""
    said = config.get("bot_notify")
    return bool(said) if said is not None else os.path.exists(paths.bot_notify)

