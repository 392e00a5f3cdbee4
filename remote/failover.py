"""`invoke failover --to phone [--from pi]`: move the bot from one host to another, one step at a time.

Stop it on `from` and confirm it is gone, then start it on `to` and confirm it stays up, then both
hosts' states. If the start on `to` fails, the bot is started on `from` again. Each host records its
role (run/bot-role), so a host failed away from never starts the bot by itself again.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from remote.host.supervision import bot

from . import ctlcalls
from .botguard import Guard, running_units, would_run
from .errors import UsageError
from .fanout import on_host
from .inventory import Host, Inventory

Step = Dict[str, Any]


def _on(host: Host, call: Callable[..., Dict[str, Any]], *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """``call`` on ``host`` over its own connection; a failure is {"ok": False, "error": one line}."""
    return on_host(host, lambda runner, target: call(runner, target, *args, **kwargs))


def failover(inventory: Inventory, to: str, from_: Optional[str] = None, takeover: bool = False,
             settle: float = 5.0, timeout: float = 20.0, report: Callable[[Step], None] = lambda step: None
             ) -> List[Step]:
    """The steps taken, each {"host", "step", "ok", ...}; ``report`` hears each as it happens."""
    target = inventory.select(to)
    if len(target) != 1:
        raise UsageError("--to names one host, not %s" % to)
    target = target[0]
    sources = inventory.select(from_) if from_ else []
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
    if not sources:  # whichever host runs that bot now, reachable or last seen so
        sources = [h for h in guard.others if any(bot.overlaps(unit, u) for u in guard.entry(h)["units"])]
    stopped: List[Host] = []
    for source in sources:
        entry = guard.entry(source)
        if entry["cached"]:
            if not takeover:
                step(source.name, "cannot be reached (%s): refused; use --takeover to start the bot on %s anyway"
                     % (entry.get("error"), target.name), False)
                return steps
            step(source.name, "TAKEOVER: cannot be reached; the bot is started on %s without stopping it here"
                 % target.name, True)
            continue
        doc = _on(source, ctlcalls.role, "standby", timeout=timeout)
        if not doc.get("ok"):
            step(source.name, "could not stop the bot: %s" % doc.get("error"), False)
            return steps
        step(source.name, "bot stopped%s; role standby" % (" (pid %s)" % doc["stopped_pid"] if doc.get("stopped_pid")
                                                            else ""), True, role="standby")
        stopped.append(source)
    checks = guard.checks_for(target, leave_out=tuple(h.name for h in stopped))
    shown = stopped + [target]
    doc = _on(target, ctlcalls.role, "active", checks=checks, settle=settle, timeout=timeout)
    if doc.get("ok"):
        step(target.name, "bot running (pid %s), up %.0f s; role active" % (doc.get("pid"), settle), True,
             role="active", pid=doc.get("pid"))
    else:
        step(target.name, "FAILED to start the bot: %s" % doc.get("error"), False, log_tail=doc.get("log_tail"))
        # a lost connection looks like a refusal: the bot may be starting there after all. Only once
        # it is confirmed stopped there does it go back, or the two would both run it
        undo = _on(target, ctlcalls.role, "standby", timeout=timeout)
        if not undo.get("ok"):
            step(target.name, "cannot confirm the bot is stopped here (%s): %s left as they are (standby); "
                 "check with invoke status --all" % (undo.get("error"), ", ".join(h.name for h in stopped)
                                                     or "the other hosts"), False)
            stopped = []
        for source in stopped:
            back = _on(source, ctlcalls.role, "active", settle=settle, timeout=timeout)
            step(source.name, "bot started again (pid %s); role active" % back.get("pid") if back.get("ok")
                 else "could not start the bot again: %s" % back.get("error"), bool(back.get("ok")))
    for host in shown:
        final = guard_state(host)
        step(host.name, "now: %s" % final["text"], True, final=True, bot=final.get("bot"))
    return steps


def guard_state(host: Host) -> Dict[str, Any]:
    doc = _on(host, ctlcalls.status)
    if not doc.get("ok"):
        return {"text": "unknown (%s)" % doc.get("error")}
    svc = (doc.get("services") or {}).get("bot") or {}
    units = running_units(doc)
    text = "bot %s, role %s" % (svc.get("state") or "not configured", svc.get("role") or "?")
    if units:
        text += ", pid %s" % units[0].get("pid")
    return {"text": text, "bot": svc}
