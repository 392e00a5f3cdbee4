"""Operator side of the supervised stack: restart, start, stop, status, logs on any runner.

Each operation is one exec of `python -S -m remote.hostctl ...` from the host's current release
(app_dir/current), or, for a local host without a release, from this checkout with this Python:
the same host-side code for every transport.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .connections import Runner, json_result, run
from .inventory import Host

ROOT = Path(__file__).resolve().parent.parent
NO_RELEASE = 3  # exit status of the shell guard below


def shell_path(path: str) -> str:
    """Quote a path for sh, leaving a leading ~/ to the host's shell (quotes would stop the expansion)."""
    if path == "~" or path.startswith("~/"):
        return "~/" + shlex.quote(path[2:]) if len(path) > 2 else "~"
    return shlex.quote(path)


def code_location(host: Host) -> Dict[str, Optional[str]]:
    """Where the stack's code runs from: the release, or this checkout for a local dev host."""
    release = "%s/current" % host.app_dir.rstrip("/")
    if host.is_local and not Path(os.path.expanduser(release)).exists():
        return {"code_dir": str(ROOT), "python": sys.executable, "dashboard_python": sys.executable}
    return {"code_dir": release, "python": host.python, "dashboard_python": None}


def hostctl_args(host: Host, command: str, *args: object, settings: bool = False) -> str:
    """`python -S -m remote.hostctl COMMAND ...` with the inventory's settings for this host."""
    where = code_location(host)
    argv: List[object] = [command, "--app-dir", host.app_dir]
    if settings:
        argv += ["--code-dir", where["code_dir"], "--port", host.dashboard_port, "--host", host.dashboard_host]
        if where["dashboard_python"]:
            argv += ["--python", where["dashboard_python"]]
        for flag, value in (("--bot-command", host.bot_command), ("--alert-webhook", host.alert_webhook)):
            if value:
                argv += [flag, value]
        if host.wake_lock:
            argv.append("--wake-lock")
    argv += list(args)
    return "%s -S -m remote.hostctl %s" % (shlex.quote(where["python"]), " ".join(shlex.quote(str(a)) for a in argv))


def hostctl_command(host: Host, command: str, *args: object, settings: bool = False,
                    code_dir: Optional[str] = None) -> str:
    """The shell command for one hostctl call from the current release (or ``code_dir``)."""
    where = code_dir or code_location(host)["code_dir"]
    missing = json.dumps({"ok": False, "error": "no release on this host (%s is missing): run invoke deploy first"
                          % where})
    return "cd %s 2>/dev/null || { echo %s; exit %d; }; exec %s" % (
        shell_path(where), shlex.quote(missing), NO_RELEASE, hostctl_args(host, command, *args, settings=settings))


def call(runner: Runner, host: Host, command: str, *args: object, timeout: float = 60.0,
         settings: bool = False, code_dir: Optional[str] = None) -> Dict[str, Any]:
    result = run(runner, hostctl_command(host, command, *args, settings=settings, code_dir=code_dir), timeout)
    return json_result(result, "hostctl")


def restart(runner: Runner, host: Host, service: str = "all", force: bool = False, timeout: float = 20.0,
            start_only: bool = False) -> Dict[str, Any]:
    args: List[object] = ["--timeout", timeout]
    if not start_only:
        args += ["--service", service]
    if force:
        args.append("--force")
    doc = call(runner, host, "start" if start_only else "restart", *args, timeout=timeout * 3 + 30, settings=True)
    if doc.get("ok"):
        where = host.dashboard_host
        if where in ("0.0.0.0", "::") and not host.is_local:
            where = host.hostname
        doc["url"] = "http://%s:%s" % ("[%s]" % where if ":" in where else where, host.dashboard_port)
    return doc


def stop(runner: Runner, host: Host, service: str = "all", timeout: float = 20.0) -> Dict[str, Any]:
    return call(runner, host, "stop", "--service", service, "--timeout", timeout, timeout=timeout * 2 + 30)


def status(runner: Runner, host: Host) -> Dict[str, Any]:
    return call(runner, host, "status")


def logs_command(host: Host, service: str, lines: int, follow: bool) -> str:
    args: List[object] = ["--service", service, "--lines", lines] + (["--follow"] if follow else [])
    return hostctl_command(host, "logs", *args)


def dev_argv(host: Host, port: Optional[int], reload: bool, force: bool) -> List[str]:
    """`invoke dev`: hostctl dev in the foreground, from this checkout, app dir var/dev."""
    from dashboard.settings import DEV_APP_DIR

    app_dir = os.environ.get("DASHBOARD_APP_DIR") or str(DEV_APP_DIR)
    argv = [sys.executable, "-m", "remote.hostctl", "dev", "--app-dir", app_dir, "--code-dir", str(ROOT),
            "--python", sys.executable, "--port", str(port or host.dashboard_port), "--host", "127.0.0.1"]
    if host.bot_command:
        argv += ["--bot-command", host.bot_command]
    if reload:
        argv.append("--reload")
    if force:
        argv.append("--force")
    return argv
