"""Files the host side shares: where things live under app_dir, atomic JSON, .env, logs.

The supervisor, the stack and release libraries, the agent and the dashboard all use it.
"""

import hashlib
import json
import os
import re
import threading

from remote.host.common.logtail import last_lines

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ERROR_LINE = re.compile(r"error|exception|traceback|failed|in use", re.I)
LOG_CAP = 5 * 1024 * 1024


class Layout:
    """Where things live under app_dir (docs/architecture.md, "The host layout")."""

    def __init__(self, app_dir):
        self.app_dir = os.path.abspath(os.path.expanduser(app_dir))
        self.run, self.logs = os.path.join(self.app_dir, "run"), os.path.join(self.app_dir, "logs")
        self.shared = os.path.join(self.app_dir, "shared")
        self.releases = os.path.join(self.app_dir, "releases")
        self.current = os.path.join(self.app_dir, "current")
        self.venvs = os.path.join(self.app_dir, "venvs")
        self.state = os.path.join(self.run, "state.json")
        self.config = os.path.join(self.run, "supervisor.json")
        self.supervisor_lock = os.path.join(self.run, "supervisor.lock")  # held by the running supervisor
        self.operator_lock = os.path.join(self.run, "lock")  # one operator action at a time
        self.pidfile = os.path.join(self.run, "supervisor.pid")
        self.commands = os.path.join(self.run, "commands")
        self.notify = os.path.join(self.run, "notify.sock")
        self.session = os.path.join(self.run, "dashboard-session.json")  # the dashboard's cookie secret
        self.revisions = os.path.join(self.app_dir, "revisions.log")
        self.bot_role = os.path.join(self.run, "bot-role")  # active | standby, written by failover
        self.bot_epoch = os.path.join(self.run, "bot-epoch.json")  # the bot's fencing number (epochs.py)
        self.boot_wait = os.path.join(self.run, "boot-wait.json")  # the inventory's boot_wait (epochs.BootHold)
        self.boot_seen = os.path.join(self.run, "boot-id")  # the boot the last supervisor started in
        self.epoch_checked = os.path.join(self.run, "epoch-checked")  # the boot in which ctl epoch last ran
        self.bot_starts = os.path.join(self.run, "bot-starts.json")  # the start budget's record
        self.bot_notify = os.path.join(self.run, "bot-notify")  # there once the bot said READY=1: started means READY

    def pid(self, name):
        """run/NAME.pid: "PID START CMDLINE" of a process the supervisor runs."""
        return os.path.join(self.run, name + ".pid")

    def log(self, name):
        return os.path.join(self.logs, name + ".log")

    def make(self):
        """run/, logs/ and run/commands/, private to this user whatever the umask or an older release
        left: a group member could otherwise read the settings (a webhook URL) or plant requests."""
        for path in (self.run, self.logs, self.commands):
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        for name in os.listdir(self.logs):
            os.chmod(os.path.join(self.logs, name), 0o600)


def create_private(path, binary=False):
    """A new file only this user may read, opened for writing; never through a planted symlink
    (O_NOFOLLOW) and never someone else's file (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb" if binary else "w")


def sha256_of(path):
    """The sha256 of a file's bytes, read a block at a time (an archive may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, data, durable=False):
    """Atomic and private (mode 600): readers see the old document or the new one, never half of one.
    ``durable``: on disk before this returns (file and directory fsynced), for a record a power cut
    must not empty (what a restore keeps, a snapshot's record)."""
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    with create_private(tmp) as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path):
    """A JSON object from a file, or {} when it is missing or unreadable."""
    try:
        with open(path) as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_env_file(path):
    """KEY=VALUE lines of shared/.env (comments, blank lines, `export` and quotes allowed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_env(handle.read())
    except OSError:
        return {}


def parse_env(text):
    """The KEY=VALUE pairs of a .env file's text. A quoted value may span lines (a PEM key), as
    python-dotenv reads it: its lines are never taken for keys of their own."""
    env, lines = {}, iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[7:].strip()
        value = value.strip()
        quote = value[:1] if value[:1] in ("'", '"') else ""
        while quote and (len(value) < 2 or not value.endswith(quote)):
            more = next(lines, None)
            if more is None:
                break
            value += "\n" + more.rstrip()
        if not _ENV_KEY.match(key):
            continue  # not KEY=VALUE (a typo): never taken for a name
        if quote and len(value) >= 2 and value.endswith(quote):
            value = value[1:-1]
        env[key] = value
    return env


#: who sees which .env key: the dashboard only its own (DASHBOARD_*); the supervisor only reads
#: ETCD_* itself (its etcd login); the bot, the deploy hooks and `invoke run` everything else
SERVICE_PREFIXES = {"dashboard": ("DASHBOARD_",), "supervisor": ("ETCD_",)}


def seen_by(key):
    """The service that sees .env key ``key``: "dashboard", "supervisor" or "bot" (hooks and run too)."""
    for service, prefixes in SERVICE_PREFIXES.items():
        if key.startswith(prefixes):
            return service
    return "bot"


def environment_of(dotenv, service):
    """The part of shared/.env ``service`` gets ("bot" also stands for hooks and `invoke run`)."""
    return {k: v for k, v in dotenv.items() if seen_by(k) == service}


def current_stamp(paths):
    """The stamp `current` points at, or None before a first deploy."""
    return os.path.basename(os.path.realpath(paths.current)) if os.path.islink(paths.current) else None


#: a shared/.env value this long or longer is a secret to every log line that leaves the host
SECRET_MIN = 8


def redactor(paths, env_file=None):
    """A function that shows each secret of shared/.env (or ``env_file``) in a log line as its key's
    name ("[BOT_TOKEN]"): a bot that prints its token, or a library that quotes it in a traceback, must
    not send it to the operator's terminal, a deploy's output or the fleet page. Values under
    SECRET_MIN characters (a port, "1") stay: they are settings, and replacing them would garble
    every line."""
    found = read_env_file(env_file or os.path.join(paths.shared, ".env"))
    # a multi-line value (a PEM key) shows in a log line by line: each of its long lines is a secret too
    pairs = {(part.strip(), k) for k, v in found.items() for part in [v] + v.splitlines()}
    pairs = sorted(((v, k) for v, k in pairs if len(v) >= SECRET_MIN), key=lambda pair: -len(pair[0]))

    def redact(line):
        for value, key in pairs:
            if value in line:
                line = line.replace(value, "[%s]" % key)
        return line

    return redact


class FreshRedactor:
    """redactor(paths) for a follow that lasts hours: made again whenever shared/.env has changed
    (an env-set meanwhile), checked once per batch of lines."""

    def __init__(self, paths):
        self.paths, self.stamp, self.redact = paths, None, None

    def __call__(self, lines):
        try:
            info = os.stat(os.path.join(self.paths.shared, ".env"))
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if self.redact is None or stamp != self.stamp:
            self.stamp, self.redact = stamp, redactor(self.paths)
        return [self.redact(line) for line in lines]


def log_lines(paths, service, count, end=None):
    """The last ``count`` lines of a service's log (of its first ``end`` bytes), secrets redacted."""
    redact = redactor(paths)
    return [redact(line) for line in last_lines(paths.log(service), count, end)]


def error_tail(path, count=20):
    """Up to 5 lines that look like the error, else the last ``count`` lines of the log (app_dir/logs/),
    secrets redacted."""
    redact = redactor(Layout(os.path.dirname(os.path.dirname(os.path.abspath(path)))))
    lines = [redact(line) for line in last_lines(path, 400)]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    return errors[-5:] if errors else lines[-count:]


_ROTATING = threading.Lock()  # the loop (a cold start's rename) and the log cap's thread (copies)


def rotate(path, copy=False, cap=None):
    """Keep a log under ``cap`` (LOG_CAP): move it to .1, or, while a child writes to it, copy it
    there in blocks (never the whole file in memory: a flood may make it large) and truncate it."""
    with _ROTATING:
        try:
            if os.path.getsize(path) < (cap or LOG_CAP):
                return
            if copy:  # the child holds the file open with O_APPEND: truncating keeps its writes coming
                with open(path, "rb") as src, open(path + ".1", "wb") as dst:
                    left = os.fstat(src.fileno()).st_size  # what is there now: a writer as fast as the
                    while left > 0:                        # copy must not keep it going for ever
                        block = src.read(min(left, 1 << 20))
                        if not block:
                            break
                        dst.write(block)
                        left -= len(block)
                os.truncate(path, 0)
            else:
                os.replace(path, path + ".1")
        except OSError:
            pass
