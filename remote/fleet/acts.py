"""What the fleet page's buttons do, as the CLI does it (its exactly-once guard, its fencing, its
failover), answered with the CLI's own lines: a document for the page and its HTTP status."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from remote import actions, dataflows, render, render_data
from remote import failover as moves
from remote.botguard import Guard
from remote.errors import SulfurError
from remote.inventory import Inventory

Answer = Tuple[Dict[str, Any], int]


def failover(inventory: Inventory, moving: threading.Lock, to: str, from_: Optional[str], data: bool = True
             ) -> Answer:
    """`invoke failover --to` (``data`` False: --no-data), step by step as the CLI prints it; never two
    at once from this page."""
    if not moving.acquire(blocking=False):
        return {"ok": False, "line": "a failover is under way: wait for its answer"}, 409
    try:
        steps = moves.failover(inventory, to, from_, data=data)
    except SulfurError as exc:
        return {"ok": False, "line": str(exc)}, 409
    finally:
        moving.release()
    return {"ok": all(step["ok"] for step in steps), "steps": steps,
            "line": "\n".join(render.failover_line(step) for step in steps)}, 200


def act(inventory: Inventory, target: Any, action: str, service: str) -> Answer:
    """restart, start or stop as the CLI does them (fencing first, then the exactly-once guard)."""
    try:
        guard = Guard(inventory, [target])
        actions.fence(inventory, guard)
        docs = actions.service_action(guard, [target], action, service)
    except SulfurError as exc:
        return {"ok": False, "line": str(exc)}, 409
    return {"ok": all(d.get("ok") for d in docs), "line": render.restart_lines(docs), "result": docs}, 200


def backup(inventory: Inventory, name: str) -> Answer:
    """`invoke backup --host NAME`: a snapshot now, copied to this machine; the CLI's lines."""
    try:
        docs = dataflows.backup(inventory, name, False, lambda host, line: None)
    except SulfurError as exc:
        return {"ok": False, "line": str(exc)}, 409
    return {"ok": all(d.get("ok") for d in docs), "line": render_data.backup_lines(docs)}, 200
