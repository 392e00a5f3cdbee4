"""The operations, each written once for every transport: a runner (local or SSH) plus a host.

The agent travels inside the command itself (zlib + base64 behind `python -c`): one exec round trip,
nothing written on the host, no dependency on /tmp, /usr/bin/env or the agent being installed.
"""

from __future__ import annotations

import base64
import functools
import shlex
import zlib
from pathlib import Path
from typing import Any, Dict, Optional

from .connections import HostError, Runner, json_result, run
from .inventory import Host

AGENT = Path(__file__).with_name("agent.py")
AGENT_TIMEOUT = 60.0


@functools.lru_cache(maxsize=1)
def _bootstrap() -> str:
    payload = base64.b64encode(zlib.compress(AGENT.read_bytes(), 9)).decode()
    return "import base64,zlib;exec(zlib.decompress(base64.b64decode('%s')))" % payload


def agent_command(host: Host, *args: object) -> str:
    """The shell command that runs the agent with the host's own interpreter (never via env)."""
    # -S: the agent is stdlib-only, so skip site-packages (faster start, nothing of the host leaks in)
    return " ".join(shlex.quote(str(a)) for a in (host.python, "-S", "-c", _bootstrap(), *args))


def call_agent(runner: Runner, host: Host, *args: object, timeout: float = AGENT_TIMEOUT) -> Dict[str, Any]:
    """Run one agent operation; its JSON document, or HostError with the reason in one line."""
    result = run(runner, agent_command(host, *args), timeout)
    try:
        return json_result(result, "agent")
    except HostError:
        if result.exited == 127 or "not found" in result.stderr:
            raise HostError("%s not found on the host: set `python:` for it in the inventory" % host.python) from None
        raise


def port_status(runner: Runner, host: Host, port: Optional[int] = None) -> Dict[str, Any]:
    return call_agent(runner, host, "probe", port or host.dashboard_port, host.app_dir)


def free_port(runner: Runner, host: Host, port: Optional[int] = None, force: bool = False,
              grace: float = 3.0) -> Dict[str, Any]:
    args = ["free", port or host.dashboard_port, host.app_dir, "--grace", grace]
    return call_agent(runner, host, *args, *(["--force"] if force else []),
                      timeout=AGENT_TIMEOUT + 2 * grace)


def doctor(runner: Runner, host: Host) -> Dict[str, Any]:
    doc = call_agent(runner, host, "doctor", host.dashboard_port, host.app_dir)
    doc["reachable"] = True
    doc["auth"] = not host.is_local
    if doc.get("platform") and doc["platform"] != host.platform:
        doc["warning"] = "inventory says platform %s, the host is %s" % (host.platform, doc["platform"])
    return doc
