"""What a host's watch says, made safe for the fleet page before it is kept.

Every host is untrusted: a compromised one may send anything on its channel. What it sends must
spoil at most its own card: never the page's JSON (a bare NaN), never another host's link (a status
too big or deep to copy for every event; botguard.running_units drops a malformed bot), never the
operator's CPU or the browser (a status of megabytes, a
history of a million points, columns of any name), and never another host's buttons: every name it
reports is checked against the contract (`names`) before the page builds anything of it, so a service
named `bot/../../../pi/stop/bot` is dropped, and its card says so, rather than becoming a URL.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from typing import Any, Dict, List, Optional, Tuple

from remote.host.common import history, names

KEPT = 8640  # samples: 24 h at one per 10 s
STATUS_BYTES = 256 * 1024  # a real status with a bot is about 3 KB
STATUS_DEPTH = 16  # a real one nests 5 deep
MAX_SERVICES = 16  # a real one has 3 (supervisor, dashboard, bot)
SERVICE_NAMES = frozenset(names.LOGS)  # every process of a stack (names.PROCESSES), as status names them
STAMP = re.compile(r"[0-9]{14}\Z")  # a release's name: the host's UTC stamp (releases.release.STAMP)
PATH_MOST = 4096


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


def is_path(value: Any) -> bool:
    """A path a host may report (a log's): absolute, normal (no `..`, no `//`), printable, of a
    sane length."""
    return (isinstance(value, str) and 0 < len(value) <= PATH_MOST and value.startswith("/")
            and not value.startswith("//") and posixpath.normpath(value) == value and value.isprintable())


def _shown(names_: List[str]) -> str:
    """Names a host made up, for its card (shown as text there): each cut, a few at most."""
    listed = ", ".join(repr(n[:60]) for n in names_[:3])
    return listed + (" and %d more" % (len(names_) - 3) if len(names_) > 3 else "")


def _releases(doc: Dict[str, Any]) -> List[str]:
    """Drops every `release` of ``doc`` (at any depth) that is not a release's name; returns them."""
    wrong, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "release" in node and node["release"] is not None and not (
                    isinstance(node["release"], str) and STAMP.match(node["release"])):
                wrong.append(str(node.pop("release")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return wrong


def checked_names(doc: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str]]:
    """The status with only the names the contract allows, and what was dropped (for the card), or
    None: services named in remote.host.common.names (exactly: `bot\\n` is not `bot`), each one's log
    an absolute normal path, every release a stamp. The page builds URLs and buttons of these names;
    one that passed unchecked could steer a click on this host's card to another host."""
    services = doc.get("services", {})
    unknown = [str(name) for name in services if name not in SERVICE_NAMES]
    logs = [name for name, svc in services.items() if name in SERVICE_NAMES and "log" in svc
            and svc["log"] is not None and not is_path(svc["log"])]
    if unknown or logs:
        doc = dict(doc, services={name: dict(svc) for name, svc in services.items() if name in SERVICE_NAMES})
        for name in logs:
            doc["services"][name].pop("log")
    releases = _releases(doc)  # in place: the status is this line's own, fresh from json.loads
    notes = []
    if unknown:
        notes.append("services not named in the contract: %s" % _shown(unknown))
    if logs:
        notes.append("log paths that are not absolute normal paths: %s" % _shown(logs))
    if releases:
        notes.append("releases not named as stamps: %s" % _shown(releases))
    return doc, ("the host sent " + "; ".join(notes) + " (not shown)") if notes else None


def status(doc: Any) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(the status, None) when it is one a page can show, else (None, why): a mapping, at most
    STATUS_DEPTH deep, STATUS_BYTES of JSON and MAX_SERVICES services, each a mapping. One whose
    names break the contract is kept without them, and ``why`` says what was dropped
    (``checked_names``)."""
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
    return checked_names(doc)
