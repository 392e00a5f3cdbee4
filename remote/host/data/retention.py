"""Which snapshots a host (or this machine, per host) keeps: restic's rules, applied per data owner.

Kept: the newest ``keep`` scheduled snapshots; the newest of each of the last 7 UTC days; the newest
``keep`` of each other reason (manual, before-deploy, ...). Then, while the kept ones hold more than
``max_bytes``, the oldest scheduled ones go first, then the oldest of the others; the newest snapshot
of all is never removed (a limit below one snapshot would otherwise leave none). "Newest" is the
highest (epoch, seq), never the clock; only the day rule reads taken_at, which is all it is about.
"""

import time

from remote.host.data.snapshot import order

DAYS = 7


def _day(doc):
    taken = doc.get("taken_at")
    return time.strftime("%Y-%m-%d", time.gmtime(taken)) if isinstance(taken, (int, float)) else None


def plan(docs, keep, max_bytes, now=None):
    """The documents to remove, of ``docs`` (each with reason, epoch, seq, taken_at, bytes)."""
    now = time.time() if now is None else now
    newest_first = sorted(docs, key=order, reverse=True)
    kept, by_reason, days = [], {}, set()
    recent = {time.strftime("%Y-%m-%d", time.gmtime(now - 86400 * n)) for n in range(DAYS)}
    for doc in newest_first:
        reason = doc.get("reason") or "manual"
        day = _day(doc)
        count = by_reason.get(reason, 0)
        if count < keep or (day in recent and day not in days):
            kept.append(doc)
        by_reason[reason] = count + 1
        if day in recent:
            days.add(day)
    total = sum(int(doc.get("bytes") or 0) for doc in kept)
    spare = [doc for doc in reversed(kept) if doc is not newest_first[0]]  # oldest first
    spare.sort(key=lambda doc: 0 if doc.get("reason") == "scheduled" else 1)  # stable: oldest scheduled first
    for doc in spare:
        if total <= max_bytes:
            break
        kept.remove(doc)
        total -= int(doc.get("bytes") or 0)
    return [doc for doc in newest_first if doc not in kept]
