"""This machine's `invoke dev` stack: its app dir, the settings it runs with, finding it while it runs.

`invoke dev` runs the stack in the foreground from this checkout with this interpreter, in an app dir
of its own (var/dev, or DASHBOARD_APP_DIR), so that it never disturbs the inventory's local host. A
task without --host acts on that stack while it runs; this module finds it and describes it as a Host
whose ``dev_settings`` are the very settings it was started with (ctlcalls.stack_settings sends them),
so that a restart hands the dashboard over instead of replacing the supervisor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from remote.host import CODE_DIR
from remote.host.common import wire
from remote.host.common.files import Layout

from .inventory import Host, Inventory


def dev_app_dir() -> str:
    """Where `invoke dev` keeps its stack: DASHBOARD_APP_DIR, else the dashboard's own dev default,
    the same place `python -m dashboard` uses on its own."""
    from dashboard.settings import DEV_APP_DIR

    return os.environ.get("DASHBOARD_APP_DIR") or str(DEV_APP_DIR)


def dev_settings(host: Host, port: Optional[int], reload: bool) -> Dict[str, Any]:
    """The settings `invoke dev` runs its stack with: this checkout, this interpreter, loopback."""
    from .ctlcalls import stack_settings  # here: `select` (every task) must not import the ctl side

    return dict(stack_settings(host), code_dir=CODE_DIR, python=sys.executable, port=port or host.dashboard_port,
                host="127.0.0.1", reload=bool(reload))


def running_dev(host: Host) -> Optional[Host]:
    """This machine's `invoke dev` stack as a host to act on, while it runs (else None): its app dir,
    and the very settings it runs with, so that a restart hands over instead of replacing it."""
    from remote.host.common.files import Layout, read_json
    from remote.host.common.system import is_alive, read_file, read_pidfile

    app_dir = dev_app_dir()
    paths = Layout(app_dir)
    if not host.is_local or paths.app_dir == Layout(host.app_dir).app_dir:
        return None
    try:  # ours only: files of this user, private, naming our own live supervisor of this app dir
        for st in (os.stat(paths.pidfile), os.stat(paths.config)):
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                return None
        record, config = read_pidfile(paths.pidfile), read_json(paths.config)
        cmdline = read_file("/proc/%d/cmdline" % record[0]).split("\0") if record else []
    except OSError:
        return None
    if not record or not is_alive(record[0], record[1]) or not config.get("stream") or not isinstance(
            config.get("port"), int) or "remote.host.supervisor" not in cmdline or paths.config not in cmdline:
        return None
    settings = dev_settings(host, config["port"], config.get("reload"))
    return dataclasses.replace(host, app_dir=paths.app_dir, dev_settings=settings, dashboard_port=config["port"],
                               dashboard_host=settings["host"])


def select(inventory: Inventory, names: Optional[str], every: bool) -> List[Host]:
    """``inventory.select(names, every)``, except that with neither, this machine means its running
    `invoke dev` stack while there is one (a Host with ``dev_settings``): in a second terminal beside
    `invoke dev`, that is the stack the user is looking at. ``--host local`` still names the inventory's."""
    targets = inventory.select(names, every)
    if names or every:
        return targets
    found = running_dev(targets[0])
    return targets if found is None else [found]


def dev_argv(host: Host, port: Optional[int], reload: bool, force: bool,
             checks: Optional[Dict[str, Any]] = None) -> List[str]:
    """`invoke dev`: ctl dev in the foreground, from this checkout, app dir var/dev.

    The terminal stays its stdin (Ctrl+C), so the request goes in a private file in the app dir's run/,
    the one place the ctl removes a request file from once read."""
    app_dir, settings = dev_app_dir(), dev_settings(host, port, reload)
    options: Dict[str, Any] = {"force": force}
    if checks is not None:
        options["checks"] = checks
    request = dict(wire.header("dev"), command="dev", app_dir=app_dir, options=options, settings=settings)
    run = Layout(app_dir).run
    os.makedirs(run, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="dev-request-", suffix=".json", dir=run)  # mode 600
    with os.fdopen(fd, "w") as handle:
        json.dump(request, handle)
    return [sys.executable, "-m", "remote.host.ctl", "dev", "--request", path]
