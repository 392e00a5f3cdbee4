"""The last snapshot's result on this host (run/backups.json), as status, doctor and the pages show it.

ctl snapshot writes it (remote/host/data/ops.record_result); the supervisor's schedule, `status`
and `doctor` read it here, so the three say the same thing about a host's backups.
"""

import os
import time

from remote.host.common.files import read_json


def last_result(paths):
    """run/backups.json: {"last": {at, ok, reason, stamp, bytes, files | error}, "last_ok": {...}}."""
    return read_json(os.path.join(paths.run, "backups.json"))


def stale(paths, every, now=None):
    """Why the backups need a look ("the last backup failed: ...", "no backup for 13 h"), or None.
    ``every``: backup_every in seconds (0 or None: none are scheduled, so none are late)."""
    doc, now = last_result(paths), time.time() if now is None else now
    last, good = doc.get("last") or {}, doc.get("last_ok") or {}
    if last and not last.get("ok"):
        return "the last backup failed: %s" % str(last.get("error"))[:200]
    at = good.get("at")
    if every and isinstance(at, (int, float)) and now - at > 2 * every:
        return "no backup for %.0f h (backup_every is %.1f h)" % ((now - at) / 3600, every / 3600)
    return None  # none yet, or recent: the first is due one period after the first start


def _replica_root(paths):
    return os.path.join(paths.app_dir, "backups", "replica")


def replicas_mark(paths):
    """Changes when a replica arrives (the folders' times): what `ctl watch` sends a new status for."""
    root = _replica_root(paths)
    try:
        return tuple(sorted((name, os.stat(os.path.join(root, name)).st_mtime) for name in os.listdir(root)))
    except OSError:
        return ()


def replicas(paths, most=8):
    """The newest replica held of each other host's data: {host: {stamp, taken_at, seq, epoch}}."""
    out, root = {}, _replica_root(paths)
    try:
        names = sorted(os.listdir(root))[:most]
    except OSError:
        return out
    for name in names:
        best = None
        try:
            files = [f for f in os.listdir(os.path.join(root, name)) if f.endswith(".json")]
        except OSError:
            continue
        for file in files:
            doc = read_json(os.path.join(root, name, file))
            key = (doc.get("epoch") if type(doc.get("epoch")) is int else 0,
                   doc.get("seq") if type(doc.get("seq")) is int else 0)
            if doc.get("stamp") and (best is None or key > best[0]):
                best = (key, {k: doc.get(k) for k in ("stamp", "taken_at", "seq", "epoch", "bytes")})
        if best:
            out[name] = best[1]
    return out


def summary(paths):
    """For status, doctor and the pages: the last good snapshot, the last attempt, a warning or
    None, and the newest replica held of each other host's data."""
    config = read_json(paths.config)
    every = config.get("backup_every") if config.get("shared_paths") else None
    doc = last_result(paths)
    return {"data": bool(config.get("shared_paths")), "last": doc.get("last"), "last_ok": doc.get("last_ok"),
            "every": every,
            "warning": stale(paths, every), "replicas": replicas(paths)}
