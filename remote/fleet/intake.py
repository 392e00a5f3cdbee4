"""What a host's watch says, made safe for the fleet page before it is kept.

Every host is untrusted: a compromised one may send anything on its channel. What it sends must
spoil at most its own card: never the page's JSON (a bare NaN), never another host's link (a status
too big or deep to copy for every event; botguard.running_units drops a malformed bot), never the
operator's CPU or the browser (a status of megabytes, a
history of a million points, columns of any name).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional, Tuple

from remote.host.common import history

KEPT = 8640  # samples: 24 h at one per 10 s
STATUS_BYTES = 256 * 1024  # a real status with a bot is about 3 KB
STATUS_DEPTH = 16  # a real one nests 5 deep
MAX_SERVICES = 16  # a real one has 3 (supervisor, dashboard, bot)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError("not a finite number")
    return value


def _no_constant(name: str) -> None:
    raise ValueError("%s is not JSON" % name)


def parse(line: bytes) -> Optional[Dict[str, Any]]:
    """A line as a JSON object with finite numbers only, or None: a bare NaN or Infinity forwarded
    would make the page's JSON invalid for every host."""
    try:
        doc = json.loads(line, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def number(value: Any) -> Optional[float]:
    """A figure the page can draw: a number a browser reads exactly (below 2**53), else None (a gap)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2 ** 53:
        return value
    return None


def aligned(samples: Any) -> Dict[str, list]:
    """A backlog's columns as the charts need them: the ring's fields only, each as long as the
    times (the newest KEPT), numbers or None; rows without a time dropped."""
    if not isinstance(samples, dict) or not isinstance(samples.get("t"), list):
        return {}
    count = min(len(samples["t"]), KEPT)
    out = {}
    for name in history.FIELDS:
        values = samples.get(name)
        values = [number(v) for v in values[-count:]] if isinstance(values, list) and count else []
        out[name] = [None] * (count - len(values)) + values
    rows = [i for i, t in enumerate(out["t"]) if t is not None]
    if len(rows) < count:
        out = {name: [values[i] for i in rows] for name, values in out.items()}
    return out


def _depth(doc: Any) -> int:
    """How deep ``doc`` nests, without recursion (a hostile one may nest a thousand deep). Asked
    only of a status already under STATUS_BYTES, so it walks a few thousand nodes at most."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > STATUS_DEPTH:
            return depth
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _size(doc: Any) -> int:
    """Its JSON's length (the C encoder: fast); past the encoder's recursion, as good as endless."""
    try:
        return len(json.dumps(doc))
    except (RecursionError, ValueError):
        return STATUS_BYTES + 1


def status(doc: Any) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(the status, None) when it is one a page can show, else (None, why): a mapping, at most
    STATUS_DEPTH deep, STATUS_BYTES of JSON and MAX_SERVICES services, each a mapping."""
    if not isinstance(doc, dict):
        return None, "the host sent a status that is not a JSON object"
    if _size(doc) > STATUS_BYTES:  # first: the depth walk is Python, the size C
        return None, "the host sent a status of over %d KB or nested beyond reading" % (STATUS_BYTES // 1024)
    if _depth(doc) > STATUS_DEPTH:
        return None, "the host sent a status nested over %d deep" % STATUS_DEPTH
    services = doc.get("services", {})
    if not isinstance(services, dict) or len(services) > MAX_SERVICES or not all(
            isinstance(s, dict) for s in services.values()):
        return None, "the host sent a status whose services are not %d mappings at most" % MAX_SERVICES
    return doc, None
