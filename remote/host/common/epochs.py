"""The bot's epoch on this host: a fencing number that only grows, in run/bot-epoch.json.

run/bot-role says what this host does (one word, which older releases read too); the epoch says
which host the bot belongs to and since which move: {"epoch", "bot_id", "active_host", "since",
"by"}. A failover gives the host it moves the bot to the highest epoch known plus one, and a host
that runs a bot with a lower epoch than another's stands down when anything of ours reaches it
(`ctl epoch`, roles.settle). Epochs are counters: ``since`` is shown, never compared, so a wrong clock
changes nothing. Equal epochs (two takeovers from two machines at once): the host whose name sorts
first in byte order keeps the bot.
"""

import json
import os
import time

from remote.host.common.files import create_private, read_json, write_json

FIELDS = ("epoch", "bot_id", "active_host", "since", "by")
MAX_BOOT_WAIT = 3600  # s: boot_wait longer than an hour is a bot down, not a bot held
MAX_EPOCH = 2 ** 31  # a counter of moves: a hostile answer cannot push it where +1 stops being exact


def read(file):
    """The record, with "epoch" 0 and "missing" or "garbled" when there is none to read: a garbled
    file never makes this host stand down by itself, only another host's known higher epoch does."""
    try:
        with open(file) as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return {"epoch": 0, "missing": True}
    except (OSError, ValueError):
        return {"epoch": 0, "garbled": True}
    if not valid(doc):
        return {"epoch": 0, "garbled": True}
    return {key: doc.get(key) for key in FIELDS}


def unit_key(bot_id, shard_count=1, shards=None):
    """What an epoch is kept for: the bot id, and with shards the shard set too (two hosts that run
    disjoint shards of one bot are both active, each under its own epoch)."""
    if not shard_count or shard_count <= 1:
        return bot_id
    text = "%s/%d:%s" % (bot_id, shard_count, ",".join(str(s) for s in shards or [0]))
    if len(text) <= 80:
        return text
    import hashlib

    return "%s/%d:%s" % (bot_id, shard_count, hashlib.sha256(text.encode()).hexdigest()[:16])


def valid(doc):
    """A record of the right shape: a positive whole epoch far below any float's reach, a time a
    clock can show, names of bounded size that encode (another host's answer may send anything)."""
    if not isinstance(doc, dict):
        return False
    epoch, since = doc.get("epoch"), doc.get("since")
    texts = [doc.get(key) for key in ("bot_id", "active_host", "by")]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 < epoch < MAX_EPOCH):
        return False
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since < 2 ** 33:
        return False
    if not isinstance(doc.get("active_host"), str) or not doc["active_host"]:
        return False
    for text in texts:
        if text is not None and (not isinstance(text, str) or len(text) > 200 or not _encodes(text)):
            return False
    return True


def _encodes(text):
    try:
        text.encode()
        return True
    except UnicodeError:
        return False


def in_answer(doc):
    """A host's record from its status answer, untrusted (the operator reads it): epoch 0 with
    "missing" (none yet, or a release from before epochs) or "garbled" (one that does not read)."""
    info = doc.get("bot") if isinstance(doc, dict) else None
    record = info.get("epoch") if isinstance(info, dict) else None
    if record is None or (isinstance(record, dict) and record.get("missing") is True and record.get("epoch") == 0):
        return {"epoch": 0, "missing": True}
    if valid(record):
        return {key: record.get(key) for key in FIELDS}
    return {"epoch": 0, "garbled": True}


def text(record, role, me):
    """A host's role and epoch as status and both pages show them: "role active, epoch 4", or on a
    host the bot was moved away from, "role standby, fenced: epoch 5 belongs to phone since ..."."""
    role = role or "initial"
    if record.get("garbled"):
        return "role %s, epoch unreadable (counts as 0)" % role
    if record.get("missing"):
        return "role %s, no epoch yet" % role
    if record.get("active_host") == me:
        return "role %s, epoch %d" % (role, record["epoch"])
    return "role %s, %s%s" % (role, "fenced: " if role == "standby" else "STALE: ", moved(record))


def answer_text(doc, me):
    """``text`` of a host's status answer (untrusted: its record read as in_answer reads it)."""
    info = doc.get("bot") if isinstance(doc.get("bot"), dict) else {}
    return text(in_answer(doc), info.get("role"), me)


def write(file, doc):
    """Atomic, private and on disk before the answer goes back (fsync of the file and its folder):
    a host that loses power just after a failover must not come back with the epoch before it."""
    tmp = "%s.%d-%s.tmp" % (file, os.getpid(), os.urandom(4).hex())
    with create_private(tmp) as handle:
        json.dump({key: doc.get(key) for key in FIELDS}, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, file)
    folder = os.open(os.path.dirname(file), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def beats(given, own, me):
    """Whether the record ``given`` (naming another host) wins over this host's own: a higher epoch,
    or the same one held by a host whose name sorts first in byte order."""
    if given["epoch"] != own["epoch"]:
        return given["epoch"] > own["epoch"]
    holder = own.get("active_host") or me
    return given["active_host"] != holder and given["active_host"].encode() < holder.encode()


def moved(doc):
    """How status and refusals name a record: "epoch 4 belongs to phone since 2026-12-07 01:02 (by ...)"."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["since"])) if doc.get("since") else "?"
    text = "epoch %d belongs to %s since %s" % (doc["epoch"], doc.get("active_host") or "?", since)
    return text + (" (moved by %s)" % doc["by"] if doc.get("by") else "")


# ------------------------------------------------------------------------------- boot_wait
def write_boot_wait(paths, seconds):
    """run/boot-wait.json, which every supervisor reads when it starts (a change needs no new one)."""
    if seconds is not None and os.path.isdir(paths.run):
        write_json(paths.boot_wait, {"seconds": float(seconds)})


def read_boot_wait(paths):
    seconds = read_json(paths.boot_wait).get("seconds")
    return float(seconds) if isinstance(seconds, (int, float)) and 0 < seconds <= MAX_BOOT_WAIT else 0.0


def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read(200).strip()
    except (OSError, ValueError):  # missing, or not text (a torn write): as if missing
        return None


def _write_text(path, text):
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())  # pids repeat across boots
    with create_private(tmp) as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def mark_checked(paths, boot):
    """ctl epoch ran in this boot: a bot held by boot_wait may start (or stays stood down)."""
    if boot:
        _write_text(paths.epoch_checked, boot)


class BootHold:
    """A host that boots with role active cannot know it was replaced while it was off: the first
    supervisor of a boot (the boot id differs from the one run/boot-id recorded) holds the bot for
    ``boot_wait`` seconds, or until something of ours has checked its epoch (`ctl epoch` in this boot,
    run/epoch-checked), whichever comes first. Later supervisors of the same boot hold nothing."""

    def __init__(self, paths, boot, clock):
        self.paths, self.boot, self.clock = paths, boot, clock
        wait, seen = read_boot_wait(paths), _read_text(paths.boot_seen)
        self.until = clock() + wait if wait > 0 and boot and seen != boot else None
        if self.until is None and boot and seen != boot:
            _write_text(paths.boot_seen, boot)  # no hold: this boot is seen

    def remaining(self):
        """Seconds the bot is still held, or None: not held (any more). The boot counts as seen only
        when the hold ends, so a supervisor that dies while holding leaves the next one holding too."""
        if self.until is None:
            return None
        if self.clock() >= self.until or _read_text(self.paths.epoch_checked) == self.boot:
            self.until = None
            _write_text(self.paths.boot_seen, self.boot)
            return None
        return self.until - self.clock()


def log(paths, message):
    """A line in logs/supervisor.log, as the supervisor writes its own (appended whole)."""
    line = "%s supervisor[%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
    fd = os.open(paths.log("supervisor"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
