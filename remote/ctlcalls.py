"""The operations that run the host's ctl: restart, start, stop, status, logs, rollback, releases, autostart.

Each is one exec of `python -S -m remote.host.ctl COMMAND` from the host's current release
(app_dir/current), or, for a local host without a release, from this checkout with this Python: the
same host-side code for every transport. Options and settings travel in the request on stdin.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
from typing import Any, Callable, Dict, Optional

from invoke.exceptions import CommandTimedOut

from remote.host import CODE_DIR
from remote.host.common import wire
from remote.host.common.paths import stamp_problem
from remote.host.releases import hooks

from . import agentcalls
from .connections import RequestStream, Runner, call
from .errors import HostError, UsageError
from .inventory import Host
from .render import TerminalStream

NO_RELEASE = 3  # exit status of the shell guard below


def shell_path(path: str) -> str:
    """Quote a path for sh, leaving a leading ~/ to the host's shell (quotes would stop the expansion)."""
    if path == "~" or path.startswith("~/"):
        return "~/" + shlex.quote(path[2:]) if len(path) > 2 else "~"
    return shlex.quote(path)


def code_location(host: Host) -> Dict[str, Optional[str]]:
    """Where the stack's code runs from: the release, or this checkout for a local dev host."""
    release = "%s/current" % host.app_dir.rstrip("/")
    if host.is_local and not os.path.exists(os.path.expanduser(release)):
        return {"code_dir": CODE_DIR, "python": sys.executable, "dashboard_python": sys.executable}
    return {"code_dir": release, "python": host.python, "dashboard_python": None}


def stack_settings(host: Host) -> Dict[str, Any]:
    """The inventory's settings for the supervisor (contract.StackSettings); for `invoke dev`'s running
    stack, the ones it was started with (devstack.running_dev), so that acting on it never replaces it."""
    if host.dev_settings is not None:
        return dict(host.dev_settings)
    where = code_location(host)
    return {"code_dir": where["code_dir"], "python": where["dashboard_python"], "host": host.dashboard_host,
            "port": host.dashboard_port, "bot_command": host.bot_command, "alert_webhook": host.alert_webhook,
            "wake_lock": host.wake_lock, "name": host.name, "standby": host.standby,
            "watchdog_sec": host.watchdog_sec, "boot_wait": host.boot_wait, "bot_notify": host.bot_notify,
            "bot_ready_timeout": float(host.bot_ready_timeout),
            "bot_starts_per_day": host.bot_starts_per_day,
            "shard_count": host.shard_count, "shards": host.shards, "bot_token_env": host.bot_token_env,
            "shared_paths": list(host.shared_paths), "backup_every": host.backup_every or None,
            "backup_keep": host.backup_keep, "backup_max": host.backup_max,
            "coordination": host.coordination.request() if host.coordination else None, "place": host.place}


def ctl_request(host: Host, command: str, options: Optional[Dict[str, Any]] = None,
                settings: bool = False) -> Dict[str, Any]:
    request = dict(wire.header(command), command=command, app_dir=host.app_dir, options=options or {})
    if settings:
        request["settings"] = stack_settings(host)
    return request


def ctl_command(host: Host, command: str, code_dir: Optional[str] = None, python: Optional[str] = None,
                fallback: Optional[str] = None) -> str:
    """The shell command for one ctl call from the current release (or ``code_dir``); without one,
    ``fallback`` runs instead, else the "no release" answer."""
    where = code_location(host)
    code_dir = code_dir or where["code_dir"]
    missing = json.dumps({"ok": False, "protocol": wire.PROTOCOL, "log_tail": [], "kind": "no_release",
                          "error": "no release on this host (%s is missing): run invoke deploy first" % code_dir})
    otherwise = "exec %s" % fallback if fallback else "echo %s; exit %d" % (shlex.quote(missing), NO_RELEASE)
    return "cd %s 2>/dev/null || { %s; }; exec %s -S -m remote.host.ctl %s" % (
        shell_path(code_dir), otherwise, shlex.quote(python or where["python"]), command)


def call_ctl(runner: Runner, host: Host, command: str, options: Optional[Dict[str, Any]] = None,
             settings: bool = False, timeout: float = 60.0, code_dir: Optional[str] = None,
             prefix: str = "", progress: Optional[Callable[[str], None]] = None,
             python: Optional[str] = None, stop: Optional[threading.Event] = None) -> Dict[str, Any]:
    """One ctl command; its checked answer. ``prefix`` runs first in the same exec (deploy unpacks);
    ``stop`` tells the command to stop once set (connections.RequestStream)."""
    line = prefix + ctl_command(host, command, code_dir, python)
    return call(runner, host, line, ctl_request(host, command, options, settings), "ctl", timeout, progress, stop)


def restart(runner: Runner, host: Host, service: str = "all", force: bool = False, timeout: float = 20.0,
            start_only: bool = False, checks: Optional[Dict[str, Any]] = None,
            reset_budget: bool = False) -> Dict[str, Any]:
    options: Dict[str, Any] = {"timeout": timeout, "force": force, "service": service}
    if checks is not None:
        options["checks"] = checks
    if reset_budget:
        options["reset_budget"] = True
    doc = call_ctl(runner, host, "start" if start_only else "restart", options, settings=True,
                   timeout=timeout * 3 + 30)
    if doc.get("ok"):
        where = host.dashboard_host
        if where in ("0.0.0.0", "::") and not host.is_local:
            where = host.hostname
        doc["url"] = "http://%s:%s" % ("[%s]" % where if ":" in where else where, host.dashboard_port)
    return doc


def stop(runner: Runner, host: Host, service: str = "all", timeout: float = 20.0) -> Dict[str, Any]:
    return call_ctl(runner, host, "stop", {"service": service, "timeout": timeout}, timeout=timeout * 2 + 30)


def status(runner: Runner, host: Host, token_env: Optional[str] = None, timeout: float = 60.0) -> Dict[str, Any]:
    return call_ctl(runner, host, "status", {"token_env": token_env or host.bot_token_env}, timeout=timeout)


def role(runner: Runner, host: Host, role: str, checks: Optional[Dict[str, Any]] = None, settle: float = 5.0,
         timeout: float = 20.0) -> Dict[str, Any]:
    """Record the bot's role on the host and stop (standby) or start (active) it there."""
    options: Dict[str, Any] = {"role": role, "settle": settle, "timeout": timeout}
    if checks is not None:
        options["checks"] = checks
    return call_ctl(runner, host, "role", options, settings=True, timeout=timeout * 3 + settle + 60)


def lease(runner: Runner, host: Host, from_host: Optional[str], record: Dict[str, Any],
          timeout: float = 20.0) -> Dict[str, Any]:
    """failover --to in a coordinated inventory: the host takes the bot's etcd lease from ``from_host``
    with the failover's epoch ``record`` (refused when an election moved it meanwhile)."""
    return call_ctl(runner, host, "lease", {"from_host": from_host, "record": record, "timeout": timeout},
                    settings=True, timeout=timeout * 2 + 30)


def epoch(runner: Runner, host: Host, record: Optional[Dict[str, Any]], expect: Optional[int] = None,
          timeout: float = 20.0) -> Dict[str, Any]:
    """Hand the host the bot's epoch as this machine knows it (roles.settle there): it keeps it, or
    stands down for it, or (``expect``) refuses because the bot was moved meanwhile. No ``record``:
    a check only (a bot held by boot_wait may start)."""
    options: Dict[str, Any] = {"record": record, "timeout": timeout}
    if expect is not None:
        options["expect"] = expect
    return call_ctl(runner, host, "epoch", options, settings=True, timeout=timeout * 2 + 60)


def release_name(to: Optional[str]) -> Optional[str]:
    """`rollback --to`: a release's name as hosts make them (its stamp), else UsageError before any host
    is asked (a path such as ../x, a trailing newline); None stays None (the newest healthy one)."""
    problem = None if to is None else stamp_problem(to)
    if problem:
        raise UsageError("--to %s: name one that invoke releases lists" % problem)
    return to


def rollback(runner: Runner, host: Host, to: Optional[str] = None, timeout: float = 20.0,
             by: Optional[str] = None, force: bool = False, checks: Optional[Dict[str, Any]] = None,
             progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    release_name(to)
    options: Dict[str, Any] = {"to": to, "timeout": timeout, "by": by, "force": force}
    if checks is not None:
        options["checks"] = checks
    spec = hooks.normalize(host.hooks)
    if any(h["on_rollback"] for h in spec.values()):  # only then: a release from before hooks refuses them
        options.update(hooks=spec, hook_timeout=float(host.hook_timeout))
    return call_ctl(runner, host, "rollback", options, settings=True,
                    timeout=timeout * 3 + 60 + 2 * host.hook_timeout, progress=progress)


def releases(runner: Runner, host: Host) -> Dict[str, Any]:
    return call_ctl(runner, host, "releases")


def autostart(runner: Runner, host: Host, remove: bool = False) -> Dict[str, Any]:
    return call_ctl(runner, host, "autostart", {"remove": remove}, settings=True)  # settings: boot_wait


def logs(runner: Runner, host: Host, service: str, lines: int, follow: bool, raw: bool = False,
         timeout: Optional[float] = 30.0) -> int:
    """The log's text to this terminal, control characters shown as escapes (``\\x1b``) unless ``raw``
    (stderr always); with ``follow``, until Ctrl+C (stdin stays open until then, and the host side
    stops when it ends). Without ``follow``, a host whose command never ends is given up after
    ``timeout`` seconds."""
    request = ctl_request(host, "logs", {"service": service, "lines": lines, "follow": follow})
    out = sys.stdout if raw else TerminalStream(sys.stdout)
    try:
        # no release (a first deploy that failed): the agent, which needs none, prints the last lines
        command = ctl_command(host, "logs", fallback=agentcalls.agent_command(host))
        result = runner.run(command, warn=True, in_stream=RequestStream(request, hold=follow),
                            out_stream=out, err_stream=TerminalStream(sys.stderr),
                            timeout=None if follow else timeout)
    except CommandTimedOut:
        raise HostError("%s: the logs did not come within %s s: is the host overloaded? (--timeout to wait "
                        "longer)" % (host.name, "%g" % timeout)) from None
    return result.exited  # not 0: no release, a bad request (its one-line answer was printed)
