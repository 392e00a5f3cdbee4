"""shared/.env, changed key by key (`invoke env-set`, `env-unset`) and listed by name (`invoke env`).

A change is made under the host's operator lock: the file is rewritten atomically (mode 600, fsynced,
renamed; a host without one gets one), other lines (comments, `export`, order) kept as they were, the
previous file kept as `.env.before-env-<UTC stamp>` (the newest KEEP of them), and then only the
services whose environment changed restart (files.seen_by: the dashboard sees DASHBOARD_*, the
supervisor reads ETCD_* itself, the bot everything else). Values arrive in the request on stdin and
are never logged, listed or answered: only key names leave this module.
"""

import os
import re
import time

from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import Layout, parse_env, read_env_file, seen_by
from remote.host.common.paths import remove

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
KEEP = 5
PREFIX = ".env.before-env-"
MAX_VALUE = 64 * 1024


def env_path(paths):
    return os.path.join(paths.shared, ".env")


def listing(app_dir):
    """The keys of shared/.env (never values) and who sees each."""
    dotenv = read_env_file(env_path(Layout(app_dir)))
    return {"ok": True, "exists": os.path.exists(env_path(Layout(app_dir))),
            "keys": [{"key": key, "seen_by": seen_by(key)} for key in sorted(dotenv)]}


def check_change(values, unset):
    """BadRequest for a key that is no name or a value a .env line cannot hold; nothing is written."""
    for key in list(values) + list(unset):
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise BadRequest("%r is not a variable name (letters, digits and _, not first a digit)" % (key,))
    for key, value in values.items():
        if not isinstance(value, str) or len(value) > MAX_VALUE or "\0" in value:
            raise BadRequest("the value of %s is not text of at most 64 KB" % key)
        if "\r" in value:
            raise BadRequest("the value of %s has a carriage return: not a value .env can hold" % key)
    both = set(values) & set(unset)
    if both:
        raise BadRequest("%s is both set and unset" % sorted(both)[0])


def quoted(key, value):
    """``KEY=value`` as parse_env reads it back exactly: bare when it can be, else quoted."""
    plain = value and value == value.strip() and not any(c in value for c in " \t\n#'\"")
    if plain:
        return "%s=%s" % (key, value)
    for quote in ('"', "'"):
        if quote not in value:
            return "%s=%s%s%s" % (key, quote, value, quote)
    raise BadRequest("the value of %s holds both kinds of quote: .env cannot hold it" % key)


def edit(text, values, unset):
    """``text`` with every line of the keys changed removed (a quoted value's continuation lines too)
    and the new assignments appended, in the order given."""
    out, lines, targets = [], iter(text.splitlines()), set(values) | set(unset)
    for line in lines:
        stripped = line.strip()
        name = stripped[7:].strip() if stripped.startswith("export ") else stripped
        key, sep, value = name.partition("=")
        if sep and key.strip() in targets:
            value = value.strip()
            quote = value[:1] if value[:1] in ("'", '"') else ""
            while quote and (len(value) < 2 or not value.endswith(quote)):  # as parse_env reads it
                more = next(lines, None)
                if more is None:
                    break
                value += "\n" + more.rstrip()
            continue
        out.append(line)
    out += [quoted(key, value) for key, value in values.items()]
    return "\n".join(out) + "\n" if out else ""


def _write(path, text):
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _keep_previous(paths, text):
    """The file before the change, private, as .env.before-env-<stamp>; only the newest KEEP stay."""
    name = "%s%s-%s" % (PREFIX, time.strftime("%Y%m%d%H%M%S", time.gmtime()), os.urandom(3).hex())
    _write(os.path.join(paths.shared, name), text)
    copies = sorted(n for n in os.listdir(paths.shared) if n.startswith(PREFIX))
    for old in copies[:-KEEP]:
        remove(paths.shared, os.path.join(paths.shared, old), ignore_errors=True)
    return name


def change(app_dir, settings, values, unset, restart=True, checks=None, lock_timeout=120.0, timeout=20.0, by=None):
    """Set ``values`` and remove ``unset`` in shared/.env under the lock; restart what sees a change."""
    from remote.host.supervision import guard
    from remote.host.supervision.stack import operator_lock, restart_locked, stack_config

    check_change(values, unset)
    paths = Layout(app_dir)
    paths.make()
    os.makedirs(paths.shared, mode=0o700, exist_ok=True)
    with operator_lock(paths, lock_timeout, "env by %s" % (by or "?")):
        path = env_path(paths)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            text = None
        new = edit(text or "", values, unset)
        before, after = parse_env(text or ""), parse_env(new)
        if any(after.get(k) != v for k, v in values.items()):
            raise Failure("the new .env would not read back as given (a value .env cannot hold): nothing changed")
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if not changed:
            return {"ok": True, "changed": [], "kept": None, "restarted": [], "restart": restart}
        config = stack_config(app_dir, settings)
        notes = guard.check(paths, config, checks, dotenv=after) if checks is not None else []
        kept = _keep_previous(paths, text) if text is not None else None
        _write(path, new)
        if checks is not None:  # the same check on the file now written: it takes the bot's epoch to its new id
            guard.check(paths, config, checks)
        services = sorted({seen_by(k) for k in changed} - {"supervisor"})
        restarted = []
        if restart and services:
            service = services[0] if len(services) == 1 else "all"
            from remote.host.common.system import read_pid

            if read_pid(paths.pidfile):  # a stopped stack starts with the new file by itself
                restart_locked(paths, config, service=service, timeout=timeout)
                restarted = services
    return {"ok": True, "changed": changed, "kept": kept, "restarted": restarted, "restart": restart,
            "notes": notes, "services": services}
