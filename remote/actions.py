"""Start, restart and stop of a service on hosts, as the CLI and the fleet page both do them: a start
is checked against what the other hosts run first (the bot runs exactly once, botguard.py), and
every task that changes state fences the stale hosts it reaches first (fencing.py)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .errors import BotConflict
from .fanout import DEFAULT_PARALLEL, on_hosts
from .inventory import Host, Inventory
from .lazy import Lazy

if TYPE_CHECKING:
    from .botguard import Guard

# the ctl side, only once a task reaches a bot: a read-only task on an inventory without one never needs it
ctlcalls, fencing = Lazy("remote.ctlcalls"), Lazy("remote.fencing")

ACTIONS = ("restart", "start", "stop")


def service_action(guard: Guard, targets: List[Host], action: str, service: str,
                   parallel: int = DEFAULT_PARALLEL, **options: Any) -> List[Dict[str, Any]]:
    """``action`` on ``service`` of each target; a start or restart carries the guard's checks."""
    if action == "stop":
        return on_hosts(targets, functools.partial(ctlcalls.stop, service=service, **options), parallel)

    def start(runner: Any, target: Host) -> Dict[str, Any]:
        return ctlcalls.restart(runner, target, service=service, checks=guard.checks_for(target),
                                start_only=action == "start", **options)

    docs = on_hosts(targets, start, parallel)
    fencing.learn(guard.inventory, docs)
    return docs


def fence(inventory: Inventory, guard: Guard, act: bool = True, say: Callable[[str], None] = lambda line: None) -> None:
    """Fence the hosts whose answers show a stale bot (``act``; else only say so), and tell the guard,
    so the checks a start carries count a fenced host as running nothing."""
    spare = tuple(t.name for t in guard.targets) if guard.takeover else ()
    steps, guard.epochs = fencing.on_contact(inventory, guard.answers(), act, say=say, spare=spare)
    for step in steps:
        if act and step.kind == "fence" and step.done:  # only a host that confirmed it runs nothing now
            guard.stood_down(step.host)


def contact(inventory: Inventory, targets: List[Host], say: Callable[[str], None],
            act: bool = True) -> Callable[[], None]:
    """Fencing for a task that starts no bot: a state-changing one (stop, free-port, autostart)
    fences all the same, a read-only one only says what would be (``act`` False). The hosts are
    asked now, in parallel with the task's own work; the returned function fences (or says)."""
    if not any(h.bot_command for h in inventory.hosts.values()):
        return lambda: None
    from .botguard import Guard

    guard = Guard(inventory, targets, with_targets=True)
    return lambda: fence(inventory, guard, act, say=say)


def refuse_standby(guard: Guard, target: Host, service: str) -> None:
    """`start --service bot --host H` (or restart) naming a standby or fenced host on its own: exit 1,
    the active host and its epoch named, and the command that moves the bot."""
    if service != "bot" or not target.bot_command:
        return
    doc = guard.answers().get(target.name) or {}
    info = doc.get("bot") if isinstance(doc.get("bot"), dict) else {}
    if (info.get("role") or ("standby" if target.standby else "active")) != "standby":
        return
    holder = _holder(guard, fencing.bot_of(doc))
    where = ("the bot's %s" % fencing.epochs.moved(holder)) if holder else "no host holds a known epoch"
    raise BotConflict("%s is standby: its bot does not start (%s); to move the bot there: invoke failover --to %s"
                      % (target.name, where, target.name))


def _holder(guard: Guard, bot_id: Optional[str]) -> Optional[Dict[str, Any]]:
    if not bot_id:
        return None
    return fencing.highest(guard.answers(), fencing.remembered(guard.inventory)).get(bot_id)
