"""Start, restart and stop of a service on hosts, as the CLI and the fleet page both do them: a start
is checked against what the other hosts run first (the bot runs exactly once, botguard.py)."""

from __future__ import annotations

import functools
from typing import Any, Dict, List

from . import ctlcalls
from .botguard import Guard
from .fanout import DEFAULT_PARALLEL, on_hosts
from .inventory import Host

ACTIONS = ("restart", "start", "stop")


def service_action(guard: Guard, targets: List[Host], action: str, service: str,
                   parallel: int = DEFAULT_PARALLEL, **options: Any) -> List[Dict[str, Any]]:
    """``action`` on ``service`` of each target; a start or restart carries the guard's checks."""
    if action == "stop":
        return on_hosts(targets, functools.partial(ctlcalls.stop, service=service, **options), parallel)

    def start(runner: Any, target: Host) -> Dict[str, Any]:
        return ctlcalls.restart(runner, target, service=service, checks=guard.checks_for(target),
                                start_only=action == "start", **options)

    return on_hosts(targets, start, parallel)
