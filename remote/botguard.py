"""The operator's half of "the bot runs exactly once": before a task starts a bot anywhere, ask the
other hosts what they run, in parallel, and hand that to the host that would start it (which decides
with its own shared/.env, under its lock: remote/host/supervision/guard.py).

- Each question has a 2 s connect timeout: a dead host must not stall a restart for its full
  connect_timeout. Its last answer is kept in the user's cache dir, keyed by inventory file, so an
  unreachable host last seen running the bot still blocks the start (unless --takeover).
- A task with several targets checks them against each other first, from their answers: two
  targets that would both start an overlapping bot are refused before anything starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Dict, List, Optional

from remote.host.common.files import read_json, write_json
from remote.host.supervision import bot

from . import ctlcalls
from .connections import open_runner
from .errors import BotConflict, ContractError
from .inventory import Host, Inventory
from .release import operator

CONNECT_TIMEOUT = 2.0
QUERY_TIMEOUT = 10.0


def cache_path(inventory_path: Path, kind: str = "bots") -> Path:
    """This machine's memory for an inventory file: ``bots`` (what each host last ran), ``epochs``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sulfur-ops"
    return base / ("%s-%s.json" % (kind, inventory_key(inventory_path)))


def inventory_key(inventory_path: Path) -> str:
    """What this machine's files for one inventory file are named after (caches, data copies)."""
    return hashlib.sha256(str(Path(inventory_path).resolve()).encode()).hexdigest()[:12]


def ask(host: Host) -> Dict[str, Any]:
    """One host's `status`, with a short connect timeout; {"ok": False, "error": ...} if unreachable."""
    quick = dataclasses.replace(host, connect_timeout=min(host.connect_timeout, CONNECT_TIMEOUT))
    try:
        with open_runner(quick) as runner:
            return ctlcalls.status(runner, host, token_env=host.bot_token_env, timeout=QUERY_TIMEOUT)
    except ContractError as exc:  # it answered, in a contract this sulfur-ops does not share
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # unreachable, refused, timed out: the cache answers for it
        return {"ok": False, "error": str(exc), "unreachable": True}


def answered(doc: Dict[str, Any]) -> bool:
    """The host told what it runs: its status, or that it has no release (so it runs nothing)."""
    return bool(doc.get("ok")) or doc.get("kind") == "no_release"


def well_formed(unit: Any) -> bool:
    """A unit the overlap check can read: a bot id, a shard count, a short list of shard numbers."""
    if not isinstance(unit, dict):
        return False
    shards = unit.get("shards", [0])
    return (isinstance(unit.get("bot_id"), str) and isinstance(unit.get("shard_count", 1), int)
            and isinstance(shards, list) and len(shards) <= 1024 and all(isinstance(s, int) for s in shards))


def running_units(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The bot a host's answer says it runs, with its uptime; none when the answer is malformed:
    it comes from another host, which may send anything, and every task and the fleet page's banner
    read it beside the other hosts' (a 400-digit started_at must not stop them)."""
    info = doc.get("bot") if isinstance(doc, dict) else None
    unit = info.get("running") if isinstance(info, dict) else None
    if not unit or not well_formed(unit):
        return []
    started, now = unit.get("started_at"), doc.get("now")
    try:
        uptime = now - started if started and now else None
    except (TypeError, OverflowError):
        uptime = None
    return [dict(unit, uptime=uptime)]


def would_run(host: Host, doc: Dict[str, Any], bot_id: Optional[str] = None,
              role: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The unit a start on ``host`` would run, from its answer and the inventory (``bot_id``: the
    one of an --env-file that a deploy brings)."""
    if not host.bot_command:
        return None
    info = doc.get("bot") or {}
    role = role or info.get("role") or ("standby" if host.standby else "active")
    ident = bot_id or info.get("env_bot_id")
    if role == "standby" or not ident:
        return None
    return {"bot_id": ident, "shard_count": host.shard_count, "shards": bot.parse_shards(host.shards, host.shard_count)}


def env_file_bot_id(path: Optional[Path], host: Host) -> Optional[str]:
    return bot.env_bot_id(str(path), host.bot_token_env) if path is not None else None


#: an answer that has not come by then is none (a host that takes the login and then stalls)
ANSWER_DEADLINE = CONNECT_TIMEOUT + QUERY_TIMEOUT + 15.0


def _result(future: Future, name: str) -> Dict[str, Any]:
    try:
        return future.result(timeout=ANSWER_DEADLINE)
    except FutureTimeout:
        return {"host": name, "ok": False, "error": "no answer within %.0f s" % ANSWER_DEADLINE}


class Guard:
    """Answers of the other hosts (and of the targets, when there are several), asked at once."""

    def __init__(self, inventory: Inventory, targets: List[Host], takeover: bool = False,
                 env_file: Optional[Path] = None, with_targets: bool = False) -> None:
        self.inventory, self.targets, self.takeover, self.env_file = inventory, targets, takeover, env_file
        names = {t.name for t in targets}
        self.others = [h for h in inventory.hosts.values() if h.name not in names]
        if not with_targets and not any(t.bot_command for t in targets):  # no bot to start: nobody to ask
            self.others, self.targets, targets = [], [], []
        asked = self.others + targets  # the targets too: their epochs are read for fencing (fencing.py)
        self.cache_file = cache_path(inventory.path)
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(asked))))
        self._futures: Dict[str, Future] = {h.name: self._pool.submit(ask, h) for h in asked}
        self._answers: Optional[Dict[str, Dict[str, Any]]] = None
        self.epochs: Dict[str, Dict[str, Any]] = {}  # the highest epoch known per bot id (fencing), sent with a start
        self._pool.shutdown(wait=False)

    def answers(self) -> Dict[str, Dict[str, Any]]:
        """Every answer (waiting for them), the cache updated with those that came."""
        if self._answers is None:
            self._answers = {name: _result(future, name) for name, future in self._futures.items()}
            cache, now = read_json(str(self.cache_file)), time.time()
            for name, doc in self._answers.items():
                if answered(doc):
                    cache[name] = {"units": running_units(doc), "seen_at": now}
            try:  # atomic and mode 600, like the state files on hosts
                self.cache_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_json(str(self.cache_file), cache)
            except OSError:
                pass  # a read-only home: the guard still works, only without memory
            self._cache = cache
        return self._answers

    def entry(self, host: Host) -> Dict[str, Any]:
        doc = self.answers()[host.name]
        if answered(doc):
            return {"host": host.name, "cached": False, "units": running_units(doc)}
        if not doc.get("unreachable"):  # reachable, but it cannot say what it runs (an older release)
            return {"host": host.name, "cached": False, "unknown": True, "units": [], "error": doc.get("error")}
        seen = self._cache.get(host.name) or {}
        return {"host": host.name, "cached": True, "seen_at": seen.get("seen_at"), "units": seen.get("units") or [],
                "error": doc.get("error")}

    def stood_down(self, name: str) -> None:
        """``name`` was fenced: it runs no bot now, and the checks sent with a start say so."""
        doc = self.answers().get(name)
        if isinstance(doc, dict) and isinstance(doc.get("bot"), dict):
            doc["bot"] = dict(doc["bot"], running=None, role="standby")

    def checks_for(self, target: Host, leave_out: tuple = ()) -> Dict[str, Any]:
        """What ``target`` must check its bot against: every other host but the task's targets
        (those are checked against each other by conflicts())."""
        return {"others": [self.entry(h) for h in self.others if h.name not in leave_out], "takeover": self.takeover,
                "epochs": self.epochs, "by": operator()}

    def conflicts(self) -> List[str]:
        """Pairs of this task's targets that would both start an overlapping bot."""
        if len(self.targets) < 2 or self.targets[0].coordination:  # an etcd lease decides who runs it
            return []
        answers, units = self.answers(), []
        for host in self.targets:
            unit = would_run(host, answers[host.name], env_file_bot_id(self.env_file, host))
            if unit:
                units.append((host, unit))
        lines = []
        for i, (one, unit) in enumerate(units):
            for other, other_unit in units[i + 1:]:
                if bot.overlaps(unit, other_unit):
                    lines.append("%s and %s would both run bot %s (%s): refused before anything started; set "
                                 "`standby: true` on one of them in the inventory (or give them disjoint shards)"
                                 % (one.name, other.name, unit["bot_id"], bot.shard_text(other_unit)))
        return lines


def refuse_conflicts(guard: Guard) -> None:
    lines = guard.conflicts()
    if lines:
        raise BotConflict("\n".join(lines))
