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


def summary(paths):
    """For status and doctor: the last good snapshot, the last attempt, and a warning or None."""
    config = read_json(paths.config)
    every = config.get("backup_every") if config.get("shared_paths") else None
    doc = last_result(paths)
    return {"last": doc.get("last"), "last_ok": doc.get("last_ok"), "every": every,
            "warning": stale(paths, every)}
