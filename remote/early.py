"""A one-host `port-status` starts its ssh while the rest of the task is still being read.

From `invoke port-status --host pi` to the first byte for the host, Python read the tasks, invoke
parsed the command line and the inventory was loaded: about 40 ms of a 0.3 s run, while the SSH
handshake that follows is about 0.13 s of waiting on the network. tasks.py calls ``port_status`` as
it is read: when the command line is a port-status of exactly one host (read here strictly; anything
else is left alone), that host's ssh starts at once (openssh.start_ahead), and the task itself takes
the running process when it gets there. The task decides everything as before: a process it does not
take (another command line, a task that failed before) is killed at exit, and the host's command
ends unanswered on its stdin's end. The command is read-only; nothing is changed on the host.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

#: port-status's flags, invoke's short forms included: each one's long name, and whether it takes a value
FLAGS = {"--host": ("--host", True), "-h": ("--host", True), "--all": ("--all", False), "-a": ("--all", False),
         "--json": ("--json", False), "-j": ("--json", False), "--port": ("--port", True), "-p": ("--port", True),
         "--parallel": ("--parallel", True), "-r": ("--parallel", True)}


def hosts_named(argv: List[str]) -> Optional[Tuple[Optional[str], bool]]:
    """(--host, --all) of ``argv`` when it is `invoke port-status` with its own flags only, else None."""
    if len(argv) < 2 or argv[1] != "port-status":
        return None
    given: Dict[str, str] = {}
    words = iter(argv[2:])
    for word in words:
        name, equals, value = word.partition("=")
        if name not in FLAGS or (equals and not FLAGS[name][1]):
            return None
        long, takes = FLAGS[name]
        if takes and not equals:
            value = next(words, None)
            if value is None:
                return None
        if long in given or (long in ("--port", "--parallel") and not value.isdigit()):
            return None  # invoke refuses these: no host is reached for a command line it will not run
        given[long] = value
    return given.get("--host"), "--all" in given


def port_status(argv: List[str]) -> None:
    """Start the one host's ssh of `invoke port-status` now, when ``argv`` is one (see the module)."""
    named = hosts_named(argv)
    if named is None:
        return
    from . import agentcalls, devstack, openssh
    from .inventory import load

    try:
        targets = devstack.select(load(), *named)
        if len(targets) == 1 and not targets[0].is_local:
            openssh.start_ahead(targets[0], agentcalls.host_command(targets[0], agentcalls.LOOKOUT))
    except Exception:  # a guess only: the task reports any problem itself, in its own words, later
        return
    except KeyboardInterrupt:  # while tasks.py is read: a quiet end, as Ctrl+C anywhere later
        raise SystemExit(130) from None
