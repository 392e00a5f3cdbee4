"""sulfur-ops: Invoke tasks for the Sulfur bot's hosts. Thin on purpose: flags in, remote/ does the work.

With neither --host nor --all a task acts on this machine ("local") through the very same code path.
Exit status: 0 every host succeeded, 1 some host failed, 2 bad inventory or bad arguments.
"""

import functools
import os
import sys
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from remote import flows, render  # noqa: E402
from remote.fanout import DEFAULT_PARALLEL, on_hosts  # noqa: E402
from remote.inventory import InventoryError, load  # noqa: E402

TARGET_HELP = {
    "host": "host or group names, comma-separated (default: this machine)",
    "all": "every host of the inventory except local",
    "parallel": "hosts worked on at once (default %d)" % DEFAULT_PARALLEL,
    "json": "print JSON instead of a table",
    "port": "port to look at (default: the host's dashboard_port)",
}


def _hosts(host, all_):
    try:
        inventory = load()
        return inventory.select(host, all_)
    except InventoryError as exc:
        raise Exit("error: %s" % exc, code=2) from None


def _finish(docs, text, as_json):
    print(render.as_json(docs) if as_json else text)
    if not all(d.get("ok") for d in docs):
        raise Exit(code=1)


@task
def hosts(c):
    """List the inventory's hosts: name, address, user, platform, groups."""
    try:
        inventory = load()
    except InventoryError as exc:
        raise Exit("error: %s" % exc, code=2) from None
    print(render.hosts_table(list(inventory.hosts.values())))


@task(name="port-status", help=TARGET_HELP)
def port_status(c, host=None, all=False, port=None, json=False, parallel=DEFAULT_PARALLEL):
    """Who holds the dashboard port on each host, via whichever tool that host has."""
    targets = _hosts(host, all)
    docs = on_hosts(targets, functools.partial(flows.port_status, port=port and int(port)), parallel)
    _finish(docs, render.port_table(docs), json)


@task(name="free-port", help=dict(TARGET_HELP, force="also stop holders that are not ours",
                                  grace="seconds between SIGTERM and SIGKILL (default 3)"))
def free_port(c, host=None, all=False, port=None, force=False, grace=3.0, json=False,
              parallel=DEFAULT_PARALLEL):
    """Free the dashboard port: stop our stale dashboard; foreign holders only with --force."""
    targets = _hosts(host, all)
    operation = functools.partial(flows.free_port, port=port and int(port), force=force, grace=float(grace))
    docs = on_hosts(targets, operation, parallel)
    _finish(docs, render.free_table(docs), json)


@task(help={k: v for k, v in TARGET_HELP.items() if k != "port"})
def doctor(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Check each host: reachable, auth, platform, python, working port tools, app_dir, disk."""
    targets = _hosts(host, all)
    docs = on_hosts(targets, flows.doctor, parallel)
    _finish(docs, render.doctor_report(docs), json)


@task(help={"port": "dashboard port (default 5000)", "host": "address to bind (default 127.0.0.1)"})
def dev(c, port=5000, host="127.0.0.1"):
    """Run this machine's dashboard in the foreground (Ctrl+C stops it)."""
    env = dict(os.environ, DASHBOARD_PORT=str(port), DASHBOARD_HOST=host)
    print(f"dashboard: http://{host}:{port}  (Ctrl+C to stop)", flush=True)
    os.chdir(ROOT)
    # exec, not a child: Ctrl+C reaches the dashboard itself and no orphan is left holding the port
    os.execve(sys.executable, [sys.executable, "-m", "dashboard"], env)
