"""What the data tasks print: `backup`'s lines, `backups`' table, `restore`'s lines, a failover's
carry. Every field from a host or an archive is escaped (render.table and render._fmt do it)."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional

from remote.host.common import leases

from .render import _fmt, _number, table


def size(count: Any) -> str:
    """Bytes as a person reads them: 812 B, 3.4 MB, 1.2 GB (powers of 1024); "?" for no number."""
    value = _number(count)
    if value is None:
        return "?"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if value >= scale:
            return "%.1f %s" % (value / scale, unit)
    return "%d B" % value


def age(at: Any, now: Optional[float] = None) -> str:
    """"40 s ago", "12 min ago", "3 h ago", "2 d ago"; "?" for a time that is not one."""
    value = _number(at)
    if value is None:
        return "?"
    seconds = max(0.0, (time.time() if now is None else now) - value)
    for limit, unit, scale in ((90, "s", 1), (5400, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return "%d %s ago" % (seconds / scale, unit)
    return "%d d ago" % (seconds / 86400)


def backup_note(host: str, info: Any, now: Optional[float] = None) -> Optional[str]:
    """status and doctor: "last backup 12 min ago (3.4 MB)", or the warning run/backups.json gives."""
    if not isinstance(info, dict) or not (info.get("last") or info.get("every")):
        return None
    if info.get("warning"):
        return _fmt("%s: WARNING: %s", host, info["warning"])
    good = info.get("last_ok") if isinstance(info.get("last_ok"), dict) else {}
    if not good:
        return _fmt("%s: no backup yet (the first is due within backup_every)", host)
    return _fmt("%s: last backup %s (%s)", host, age(good.get("at"), now), size(good.get("bytes")))


def status_notes(docs: List[Dict[str, Any]]) -> List[str]:
    """status: one line per host with data, under the table."""
    notes = [backup_note(d["host"], d.get("backups"), d.get("now")) for d in docs if d.get("ok")]
    notes += [lease_note(d["host"], ((d.get("services") or {}).get("bot") or {}).get("lease")) for d in docs
              if d.get("ok")]
    return [n for n in notes if n]


def lease_note(host: str, lease: Any) -> Optional[str]:
    """status: the etcd lease as this host's supervisor sees it (coordination only): holder, epoch,
    time left, the last election, and what the last takeover here restored."""
    words = leases.text(lease)
    return _fmt("%s: %s", host, words) if words else None


def doctor_lines(docs: List[Dict[str, Any]]) -> List[str]:
    """doctor: the last backup of each host, and a Python without sqlite3 (its snapshots of a running
    bot's database cannot be consistent)."""
    out = []
    for d in docs:
        if not d.get("ok"):
            continue
        if not d.get("sqlite3", True):
            out.append(_fmt("%s: sqlite3 MISSING from this Python: snapshots of a running bot's SQLite files "
                            "cannot be consistent (apt install python3 / pkg install python)", d["host"]))
        note = backup_note(d["host"], d.get("backups"))
        if note:
            out.append(note)
        out += etcd_lines(d)
    return out


def etcd_lines(d: Dict[str, Any]) -> List[str]:
    """doctor: the etcd cluster as the host sees it (coordination), from its own side."""
    info = d.get("etcd")
    if not isinstance(info, dict):
        return []
    ok = [e for e in info.get("endpoints") or [] if isinstance(e, dict) and e.get("ok")]
    out = [_fmt("%s: etcd %d of %d endpoints answer, login %s", d["host"], len(ok), len(info.get("endpoints") or []),
                info.get("auth") or "not tried")]
    out += [_fmt("%s: etcd PROBLEM: %s", d["host"], p) for p in info.get("problems") or []]
    out += [_fmt("%s: etcd warning: %s", d["host"], w) for w in info.get("warnings") or []]
    return out


def stamp_time(taken_at: Any) -> str:
    value = _number(taken_at)
    return "?" if value is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(value)) + " UTC"


def backup_lines(docs: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for d in docs:
        if not d.get("ok"):
            out.append(_fmt("%s: FAILED: %s", d["host"], d.get("error")))
            continue
        s = d["snapshot"]
        out.append(_fmt("%s: snapshot %s (%s, %s, %d files, %s), copied here to %s in %.1f s", d["host"],
                        s.get("stamp"), s.get("consistency"), size(s.get("bytes")), len(s.get("files") or []),
                        "epoch %s" % s.get("epoch"), d.get("local"), s.get("seconds") or 0.0))
        for name, removed in (("on the host", d.get("removed_on_host")), ("here", d.get("removed_here"))):
            if removed:
                out.append(_fmt("%s:   retention removed %d %s", d["host"], len(removed), name))
        for r in d.get("replicas") or []:
            if r.get("skipped"):
                out.append(_fmt("%s:   replica on %s skipped: %s", d["host"], r["host"], r["skipped"]))
            elif r.get("ok"):
                out.append(_fmt("%s:   replica on %s", d["host"], r["host"]))
            else:
                out.append(_fmt("%s:   replica on %s FAILED: %s", d["host"], r["host"], r.get("error")))
    return "\n".join(out)


HEADERS = ["HOST", "WHERE", "STAMP", "AGE", "SIZE", "FILES", "BOT-ID", "DATA-ID", "EPOCH", "CONSISTENCY", "REASON"]


def backups_table(listing: Dict[str, Any]) -> str:
    rows = []
    for r in listing["rows"]:
        where = "replica@%s" % r["replica_on"] if r["where"] == "replica" else r["where"]
        rows.append([r["host"], where, r.get("stamp"), age(r.get("taken_at")), size(r.get("bytes")), r.get("files"),
                     r.get("bot_id"), r.get("data_id"), r.get("epoch"), r.get("consistency"), r.get("reason")])
    text = table(HEADERS, rows) if rows else "no snapshots yet: invoke backup takes one"
    for e in listing["errors"]:
        text += "\n" + _fmt("%s: not asked: %s", e["host"], e.get("error"))
    return text


def restore_lines(doc: Dict[str, Any]) -> str:
    out = [_fmt("%s: restored %s", doc["host"], doc.get("source"))]
    kept = doc.get("kept")
    if kept:
        out.append(_fmt("%s: the data before is kept as snapshot %s (before-restore%s): invoke restore --host %s "
                        "--from %s brings it back", doc["host"], kept.get("stamp"),
                        ", being packed" if kept.get("packing") else "", doc["host"], kept.get("stamp")))
    if not doc.get("ok") and doc.get("error"):
        out.append(_fmt("%s: FAILED: %s", doc["host"], doc.get("error")))
    started = doc.get("started")
    if started is not None:
        out.append(_fmt("%s: bot started again", doc["host"]) if started.get("ok") else
                   _fmt("%s: the bot did not start again: %s", doc["host"], started.get("error")))
    return "\n".join(out)


def carry_line(doc: Dict[str, Any]) -> str:
    s = doc.get("snapshot") or {}
    return _fmt("data: %s's snapshot %s (%d files, %s) carried in %.1f s, a copy kept here", s.get("host"),
                s.get("stamp"), len(s.get("files") or []), size(doc.get("bytes")), doc.get("seconds") or 0.0)


_SHOWN: List[bool] = []  # a progress line is on the terminal: the next line starts below it


def progress(host: str, line: str) -> None:
    """A long transfer's bytes and rate, on a terminal only (one line on stderr, rewritten)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + _fmt("%s: %s", host, line) + "   ")
        sys.stderr.flush()
        _SHOWN[:] = [True]


def end_progress() -> None:
    if _SHOWN:
        sys.stderr.write("\n")
        _SHOWN.clear()


def env_table(docs: List[Dict[str, Any]]) -> str:
    rows = []
    for d in docs:
        if not d.get("ok"):
            rows.append([d["host"], "error", d.get("error")])
            continue
        if not d.get("keys"):
            rows.append([d["host"], "-", "no shared/.env" if not d.get("exists") else "no variables"])
        rows += [[d["host"], k.get("key"), k.get("seen_by")] for k in d.get("keys") or []]
    return table(["HOST", "KEY", "SEEN BY"], rows)


def env_lines(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        if not d.get("ok"):
            out.append(_fmt("%s: FAILED: %s", d["host"], d.get("error")))
            continue
        if not d.get("changed"):
            out.append(_fmt("%s: nothing changed (the values were already so)", d["host"]))
            continue
        line = _fmt("%s: changed %s", d["host"], ", ".join(map(str, d["changed"])))
        if d.get("kept"):
            line += _fmt(" (the file before kept as shared/%s)", d["kept"])
        out.append(line)
        if d.get("restarted"):
            out.append(_fmt("%s: restarted %s", d["host"], ", ".join(map(str, d["restarted"]))))
        elif d.get("services") and not d.get("restart"):
            out.append(_fmt("%s: --no-restart: %s keep the old values until their next start", d["host"],
                            ", ".join(map(str, d["services"]))))
    return "\n".join(out)


def run_lines(docs: List[Dict[str, Any]]) -> str:
    """`invoke run`'s last word per host, after its output: the exit status and how long it took."""
    out = []
    for d in docs:
        seconds = _number(d.get("seconds"))
        if d.get("ok"):
            out.append(_fmt("%s: exit 0%s%s", d["host"], "" if seconds is None else " in %.1f s" % seconds,
                            "" if d.get("locked", True) else " (no lock)"))
        else:
            out.append(_fmt("%s: FAILED: %s%s", d["host"], d.get("error") or "exit status %s" % d.get("exit"),
                            "" if seconds is None else " (after %.1f s)" % seconds))
    return "\n".join(out)
