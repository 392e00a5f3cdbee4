"""`invoke failover --to phone [--from pi]`: move the bot from one host to another, one step at a time.

Stop it on `from` and confirm it is gone, then start it on `to` and confirm it stays up, then both
hosts' states. If the start on `to` fails, the bot is started on `from` again. Each host records its
role (run/bot-role), so a host failed away from never starts the bot by itself again.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional

from remote.host.common import epochs
from remote.host.supervision import bot

from . import ctlcalls, dataflows, fencing, render_data
from .botguard import Guard, running_units, would_run
from .connections import open_runner
from .errors import UsageError
from .fanout import on_host, on_hosts, row
from .inventory import Host, Inventory

Step = Dict[str, Any]


def _on(host: Host, call: Callable[..., Dict[str, Any]], *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """``call`` on ``host`` over its own connection; a failure is {"ok": False, "error": one line}."""
    return on_host(host, lambda runner, target: call(runner, target, *args, **kwargs))


class _Kept:
    """_on for several calls in a row on one host, over one connection: the target's epoch, lease
    and start are three calls, and each new connection's handshake cost about 0.12 s of a failover
    that should be done in 2. A failure is the same one-line document; its connection is dropped."""

    def __init__(self, host: Host) -> None:
        self.host, self.stack, self.runner = host, contextlib.ExitStack(), None

    def __call__(self, call: Callable[..., Dict[str, Any]], *args: Any, **kwargs: Any) -> Dict[str, Any]:
        return row(self.host, lambda: call(self._runner(), self.host, *args, **kwargs), failed=self.close)

    def _runner(self) -> Any:
        if self.runner is None:
            self.runner = self.stack.enter_context(open_runner(self.host))
        return self.runner

    def close(self) -> None:
        self.stack.close()
        self.runner = None


def failover(inventory: Inventory, to: str, from_: Optional[str] = None, takeover: bool = False,
             settle: float = 5.0, timeout: float = 20.0, report: Callable[[Step], None] = lambda step: None,
             data: bool = True, progress: Optional[Callable[[str], None]] = None) -> List[Step]:
    """The steps taken, each {"host", "step", "ok", ...}; ``report`` hears each as it happens.
    ``data``: the bot's data goes with it (dataflows.carry; a takeover restores the newest copy)."""
    target = inventory.select(to)
    if len(target) != 1:
        raise UsageError("--to names one host, not %s" % to)
    target = target[0]
    if takeover and target.coordination:
        raise UsageError("failover --takeover: refused in an inventory with coordination: the etcd lease decides "
                         "who takes over (a host that cannot renew it stops its bot, another takes over after "
                         "lease_ttl); failover --to moves the bot from a host that answers")
    sources = [h for h in inventory.select(from_) if h.name != target.name] if from_ else []
    steps: List[Step] = []

    def step(host: str, what: str, ok: bool, **extra: Any) -> Step:
        item = dict({"host": host, "step": what, "ok": ok}, **extra)
        steps.append(item)
        report(item)
        return item

    guard = Guard(inventory, [target], takeover, with_targets=True)
    answers = guard.answers()
    mine = answers[target.name]
    if not mine.get("ok"):
        step(target.name, "cannot be reached: %s" % mine.get("error"), False)
        return steps
    unit = would_run(target, mine, role="active")
    if unit is None:
        reason = "no bot_command in the inventory" if not target.bot_command else "no bot token in its shared/.env"
        step(target.name, "cannot run the bot: %s" % reason, False)
        return steps
    key = epochs.unit_key(unit["bot_id"], unit["shard_count"], unit["shards"])
    best = fencing.highest(answers, fencing.remembered(inventory), inventory.hosts).get(key)
    current = best["epoch"] if best else 0
    moving = fencing.new_record(current + 1, key, target.name)
    if not epochs.valid(moving):
        step(target.name, "refused: the highest epoch known is out of range (%d): check the hosts' run/bot-epoch.json"
             % current, False)
        return steps
    if not sources:  # whichever host runs that bot now, reachable or last seen so, and the epoch's holder
        sources = [h for h in guard.others if any(bot.overlaps(unit, u) for u in guard.entry(h)["units"])
                   or (best and best["active_host"] == h.name)]
    owner = best["active_host"] if best else None
    ahead = None  # the carry's connections, opened while the bot is stopped on the source
    if data and owner in inventory.hosts and owner != target.name and target.shared_paths and \
            inventory.hosts[owner].shared_paths and any(h.name == owner and not guard.entry(h)["cached"]
                                                        for h in sources):
        ahead = dataflows.Prepared([inventory.hosts[owner], target])
    try:
        return _move(inventory, guard, answers, target, sources, unit, key, best, moving, owner, ahead, takeover,
                     settle, timeout, data, progress, step, steps)
    finally:
        if ahead is not None:
            ahead.close()


def _move(inventory: Inventory, guard: Guard, answers: Dict[str, Dict[str, Any]], target: Host,
          sources: List[Host], unit: Dict[str, Any], key: str, best: Optional[Dict[str, Any]],
          moving: Dict[str, Any], owner: Optional[str], ahead: Optional[Any], takeover: bool, settle: float,
          timeout: float, data: bool, progress: Optional[Callable[[str], None]], step: Callable[..., Step],
          steps: List[Step]) -> List[Step]:
    """The move itself, once the target can run the bot and the new epoch is known."""
    stopped: List[Host] = []
    for source in sources:
        entry = guard.entry(source)
        if entry["cached"]:
            if not takeover:
                step(source.name, "cannot be reached (%s): refused; use --takeover to start the bot on %s anyway"
                     % (entry.get("error"), target.name), False)
                return steps
            step(source.name, "TAKEOVER: cannot be reached; the bot is started on %s without stopping it here "
                 "(it stands down at the next contact: epoch %d)" % (target.name, moving["epoch"]), True)
            continue
        doc = _leave(source, answers.get(source.name) or {}, moving, timeout)
        if not doc.get("ok"):
            step(source.name, "could not stop the bot: %s" % doc.get("error"), False)
            return steps
        step(source.name, "epoch %d belongs to %s; bot stopped%s; role standby" % (
            moving["epoch"], target.name, " (pid %s)" % doc["stopped_pid"] if doc.get("stopped_pid") else ""),
            True, role="standby")
        stopped.append(source)
    checks = guard.checks_for(target, leave_out=tuple(h.name for h in stopped))
    shown = stopped + [target]
    owner = owner or (stopped[0].name if stopped else None)
    moved = _move_data(inventory, owner, stopped, target, takeover, data, progress, ahead) \
        if owner != target.name else None
    if moved is not None:
        step(target.name, moved.get("note") or render_data.carry_line(moved) if moved.get("ok")
             else "data NOT carried: %s; nothing starts here" % moved.get("error"), bool(moved.get("ok")),
             data={k: v for k, v in moved.items() if k != "snapshot"}, loud=bool(moved.get("loud")))
        if not moved.get("ok"):
            _undo(inventory, target, stopped, answers, key, moving, best["active_host"] if best else None,
                  settle, timeout, step)
            return steps
    at_target = _Kept(target)
    try:
        doc, claimed = _start(at_target, target, answers, moving, owner, checks, settle, timeout, stopped, step)
    finally:
        at_target.close()
    if doc is None:
        return steps
    if doc.get("ok"):
        fencing.remember(inventory, {key: moving})
        step(target.name, "bot running (pid %s), up %.0f s; role active; epoch %d" % (
            doc.get("pid"), settle, moving["epoch"]), True, role="active", pid=doc.get("pid"))
    else:
        step(target.name, "FAILED to start the bot: %s" % doc.get("error"), False, log_tail=doc.get("log_tail"))
        _undo(inventory, target, stopped, answers, key, moving, best["active_host"] if best else None,
              settle, timeout, step, claimed)
    others = {name: doc for name, doc in answers.items() if name not in {h.name for h in shown}}
    for line, taken in _fence_rest(inventory, others, timeout):
        step(taken.host, line, taken.kind == "note" or taken.done)
    # both hosts at once: the move is done, and each state costs a connection's handshake
    for host, final in zip(shown, [_state(doc) for doc in on_hosts(shown, ctlcalls.status)]):
        step(host.name, "now: %s" % final["text"], True, final=True, bot=final.get("bot"))
    return steps


def _move_data(inventory: Inventory, owner: Optional[str], stopped: List[Host], target: Host, takeover: bool,
               data: bool, progress: Optional[Callable[[str], None]], ahead: Optional[Any] = None
               ) -> Optional[Dict[str, Any]]:
    """The data step of a move, or None when there is none to take: carried from the owner when its
    bot was stopped here, the newest copy of it restored on a takeover, nothing with ``data`` off."""
    if not data:
        return {"ok": True, "note": "data: not carried (--no-data)"} if target.shared_paths else None
    source = next((h for h in stopped if h.name == owner), None)
    if source is not None:
        return dataflows.carry(inventory, source, target, progress, ahead)
    if takeover and owner in inventory.hosts:
        return dataflows.takeover_copy(inventory, owner, target)
    return None


def _fence_rest(inventory: Inventory, answers: Dict[str, Dict[str, Any]], timeout: float) -> List[Any]:
    """The hosts the move did not touch, fenced against the epochs known now (a third host still
    running the bot from before: it stands down): (line, its fencing.Step) pairs."""
    lines: List[str] = []
    steps, _ = fencing.on_contact(inventory, answers, act=True, timeout=timeout, say=lines.append)
    return list(zip(lines, steps))


def _leave(source: Host, seen: Dict[str, Any], moving: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """The compare-and-set on the host the bot leaves: the new epoch is written there under its lock
    only if its epoch is still the one read, then its bot is stopped and confirmed gone. A second
    failover racing this one finds the new epoch and is refused. A release from before epochs: its role."""
    if not fencing.speaks_epochs(seen):
        return _on(source, ctlcalls.role, "standby", timeout=timeout)
    return _on(source, ctlcalls.epoch, moving, expect=fencing.record_in(seen)["epoch"], timeout=timeout)


def _start(on: _Kept, target: Host, answers: Dict[str, Dict[str, Any]], moving: Dict[str, Any],
           owner: Optional[str], checks: Any, settle: float, timeout: float, stopped: List[Host],
           step: Callable[..., Step]) -> tuple:
    """The target's part, on one connection: the new epoch, the lease (coordination), then the bot
    started and confirmed. (its last answer, the host that claimed the lease); (None, None) when the
    epoch's compare-and-set lost before anything changed anywhere."""
    doc = _arrive(on, answers.get(target.name) or {}, moving, timeout)
    if not doc.get("ok") and not stopped:  # its compare-and-set lost: nothing was changed anywhere
        step(target.name, "refused: %s" % doc.get("error"), False)
        return None, None
    claimed = None
    if doc.get("ok") and target.coordination:  # the lease follows, compared on its holder and etcd's epoch
        doc = on(ctlcalls.lease, owner, moving, timeout=timeout)
        claimed = target.name if doc.get("ok") else None
        if doc.get("ok"):
            step(target.name, "holds the bot's etcd lease now (epoch %d)" % moving["epoch"], True)
    if doc.get("ok"):
        doc = on(ctlcalls.role, "active", checks=checks, settle=settle, timeout=timeout)
    return doc, claimed


def _arrive(on: _Kept, seen: Dict[str, Any], record: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """The target keeps the new epoch, a compare-and-set too (its epoch still the one read): a
    failover to it racing one away from it cannot both win."""
    if not fencing.speaks_epochs(seen):
        return {"ok": True}
    return on(ctlcalls.epoch, record, expect=fencing.record_in(seen)["epoch"], timeout=timeout)


def _undo(inventory: Inventory, target: Host, stopped: List[Host], answers: Dict[str, Dict[str, Any]], bot_id: str,
          moving: Dict[str, Any], before: Optional[str], settle: float, timeout: float,
          step: Callable[..., Step], claimed: Optional[str] = None) -> None:
    """A failed start on the target: once its bot is confirmed stopped there, the source is named
    active again with epoch N+2 (the target holds N+1) and starts its bot, as before the move. With
    no source stopped (a --takeover of an unreachable host), N+2 goes to the host that held the bot
    ``before``, so that host, still running it, is not the one fenced at the next contact."""
    # a lost connection looks like a refusal: the bot may be starting there after all. Only once
    # it is confirmed stopped there does it go back, or the two would both run it
    back_to = stopped[0].name if stopped else before
    undo_record = fencing.new_record(moving["epoch"] + 1, bot_id, back_to) if back_to else None
    seen = answers.get(target.name) or {}
    if undo_record and fencing.speaks_epochs(seen):
        undo = _on(target, ctlcalls.epoch, undo_record, timeout=timeout)
        kept = undo.get("epoch") if isinstance(undo.get("epoch"), dict) else {}
        if undo.get("ok") and kept.get("epoch") != undo_record["epoch"]:  # it knows a later epoch: not ours to undo
            undo = {"ok": False, "error": "it knows a later epoch (%s)" % epochs.moved(kept)
                    if epochs.valid(kept) else "it keeps another epoch"}
        elif undo.get("ok"):
            fencing.remember(inventory, {bot_id: undo_record})
    else:
        undo = _on(target, ctlcalls.role, "standby", timeout=timeout)
    if not undo.get("ok"):
        step(target.name, "cannot confirm the bot is stopped here (%s): %s left as they are (standby); "
             "check with invoke status --all" % (undo.get("error"), ", ".join(h.name for h in stopped)
                                                 or "the other hosts"), False)
        return
    for source in stopped[:1]:  # the bot goes back to one host: the first it left
        if undo_record and fencing.speaks_epochs(answers.get(source.name) or {}):
            kept = _on(source, ctlcalls.epoch, undo_record, timeout=timeout)
            if not kept.get("ok"):
                step(source.name, "could not take the bot back: %s" % kept.get("error"), False)
                continue
            fencing.remember(inventory, {bot_id: undo_record})
        if claimed and undo_record:  # the target took the etcd lease: it goes back with the bot
            kept = _on(source, ctlcalls.lease, claimed, undo_record, timeout=timeout)
            if not kept.get("ok"):
                step(source.name, "could not take the lease back: %s" % kept.get("error"), False)
                continue
        back = _on(source, ctlcalls.role, "active", settle=settle, timeout=timeout)
        step(source.name, "bot started again (pid %s); role active; epoch %d" % (
            back.get("pid"), undo_record["epoch"] if undo_record else 0) if back.get("ok")
            else "could not start the bot again: %s" % back.get("error"), bool(back.get("ok")))


def _state(doc: Dict[str, Any]) -> Dict[str, Any]:
    """A host's status answer as the failover's last lines say it: bot state, role, pid."""
    if not doc.get("ok"):
        return {"text": "unknown (%s)" % doc.get("error")}
    svc = (doc.get("services") or {}).get("bot") or {}
    units = running_units(doc)
    text = "bot %s, role %s" % (svc.get("state") or "not configured", svc.get("role") or "?")
    if units:
        text += ", pid %s" % units[0].get("pid")
    return {"text": text, "bot": svc}
