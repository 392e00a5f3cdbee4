"""Run one operation on many hosts at once, each in its own SSH connection, results in inventory order.

A host that is down, refuses auth or times out costs its own timeout and yields one row with its
error; it never delays or hides the others.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List

from .connections import Runner, open_runner
from .errors import HostError
from .inventory import Host

DEFAULT_PARALLEL = 16
Operation = Callable[[Runner, Host], Dict[str, Any]]


def on_host(host: Host, operation: Operation) -> Dict[str, Any]:
    """``operation`` on one host; any failure becomes {"ok": False, "error": one line}."""
    try:
        with open_runner(host) as runner:
            doc = operation(runner, host)
    except HostError as exc:
        doc = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug must not hide the other hosts' results
        doc = {"ok": False, "error": "internal error: %s: %s" % (type(exc).__name__, exc)}
    return dict({"host": host.name}, **doc)


def on_hosts(hosts: List[Host], operation: Operation,
             parallel: int = DEFAULT_PARALLEL) -> List[Dict[str, Any]]:
    if len(hosts) == 1:
        return [on_host(hosts[0], operation)]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(lambda h: on_host(h, operation), hosts))
