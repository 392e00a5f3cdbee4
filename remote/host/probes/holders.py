"""Who holds a port, which of those processes are ours, and how ours are stopped: the library behind
port-status, free-port, the dashboard's bind retries and a new supervisor's orphan handling.

Which tool answers "who holds the port" is ports.py's job (ss, lsof, netstat, fuser, /proc, a
connect or bind probe); this module decides what is ours, what may be stopped, and how. It travels
inside the agent's command (agent.py), so it is standard library only.
"""

import json
import os
import signal
import time

from remote.host.common import names
from remote.host.common.system import (
    environ,
    is_alive,
    is_dashboard,
    live_pidfile_pids,
    parent_pid,
    pids,
    process_info,
    process_start,
    read_pidfile,
    read_pidfiles,
    which,
)
from remote.host.probes.ports import METHODS, MethodFailed

# ----------------------------------------------------------------------------------------- probe


def available(name):
    return name in ("proc", "socket") or bool(which(name))


def probe(port, app_dir=None, methods=None):
    """Who holds ``port`` here: the port-status document (less the host name)."""
    tried, result = [], None
    for name, func in METHODS:
        if (methods and name not in methods) or not available(name):
            continue
        try:
            listeners, time_wait = func(port)
        except (MethodFailed, ValueError, IndexError) as exc:
            tried.append({"method": name, "ok": False, "detail": str(exc)[:200]})
            continue
        tried.append({"method": name, "ok": True, "detail": ""})
        result = (name, listeners, time_wait)
        break
    if result is None:
        return {"ok": True, "error": None, "port": port, "state": "unknown", "listeners": [],
                "time_wait": None, "method": None, "tried": tried}
    name, listeners, time_wait = result
    _attribute_hidden(listeners, port, app_dir)
    ours = labels(app_dir) if app_dir else {}
    for item in listeners:
        item.update(_owner(item["pid"], app_dir))
        if item["managed"] and item["pid"] in ours:
            item["role"] = ours[item["pid"]]
    state = "listening" if listeners else ("time_wait" if time_wait else "free")
    return {"ok": True, "error": None, "port": port, "state": state, "listeners": listeners,
            "time_wait": time_wait, "method": name, "tried": tried}


def _attribute_hidden(listeners, port, app_dir):
    """Where no tool may name a listener's owner (Android), it may still be ours: a process from a
    pidfile under app_dir/run, or a `-m dashboard` process of this app_dir (an orphan of an older
    run), whose DASHBOARD_PORT is this port. Our own processes stay visible in /proc there."""
    hidden = [item for item in listeners if not item["pid"]]
    if not hidden or not app_dir:
        return
    recorded = live_pidfile_pids(app_dir)
    for pid in recorded + [p for p in pids() if p not in recorded]:
        env = environ(pid)
        if env is None:
            continue
        info = process_info(pid)
        dashboard = is_dashboard(info["cmdline"])
        if env.get("DASHBOARD_PORT", "5000" if dashboard else None) != str(port):
            continue  # the bot's and the supervisor's pidfiles name no port
        if pid in recorded or (dashboard and is_managed(pid, info, app_dir)):
            for item in hidden:
                item["pid"], item["via"] = pid, "pidfile" if pid in recorded else "our process list"
            return


def labels(app_dir):
    """pid -> what it is in our stack (supervisor, dashboard, bot, spare): all of them hold the
    dashboard's socket, and port-status labels them by this."""
    run = os.path.join(os.path.expanduser(app_dir), "run")
    found = {}
    for name in names.PROCESSES:
        record = read_pidfile(os.path.join(run, name + ".pid"))
        if record and is_alive(record[0], record[1]):
            found[record[0]] = name
    try:
        with open(os.path.join(run, "state.json")) as handle:
            spare = json.load(handle).get("spare_pid")
    except (OSError, ValueError, AttributeError):
        spare = None
    if isinstance(spare, int) and spare not in found:
        found[spare] = "spare"
    return found


def _owner(pid, app_dir):
    info = process_info(pid) if pid else {"process": None, "cmdline": None, "user": None}
    return {"process": info["process"], "cmdline": info["cmdline"], "user": info["user"],
            "managed": bool(pid) and is_managed(pid, info, app_dir)}


def is_managed(pid, info, app_dir):
    """Our dashboard for this app_dir: a pidfile under run/ whose start time and command match, or
    a `-m dashboard` process whose DASHBOARD_APP_DIR or working directory is this app_dir."""
    if not app_dir:
        return False
    for recorded, start, command in read_pidfiles(app_dir):
        if recorded == pid and start == info.get("start"):
            return command is None or command == (info.get("cmdline") or "")
    app_dir = os.path.realpath(os.path.expanduser(app_dir))
    if not is_dashboard(info.get("cmdline")):
        return False
    env = environ(pid)
    if env is None:
        return False
    if "DASHBOARD_APP_DIR" in env:
        return os.path.realpath(os.path.expanduser(env["DASHBOARD_APP_DIR"])) == app_dir
    try:
        cwd = os.path.realpath(os.readlink("/proc/%d/cwd" % pid))
    except OSError:
        return False
    return cwd == app_dir or cwd.startswith(app_dir + os.sep)


def stack_of(item):
    """The app dir of the sulfur-ops stack a listener belongs to (its supervisor names its config,
    a dashboard its DASHBOARD_APP_DIR), or None when it is not one of ours at all."""
    argv = (item.get("cmdline") or "").split()
    if "remote.host.supervisor" in argv and argv[-1].endswith("/run/supervisor.json"):
        return os.path.dirname(os.path.dirname(argv[-1]))
    if item.get("pid") and is_dashboard(item.get("cmdline")):
        return (environ(item["pid"]) or {}).get("DASHBOARD_APP_DIR")
    return None


def who(item, width=None):
    """'pid 812 (python -m http.server, user bot)': a holder as every message names it."""
    command = item.get("cmdline") or item.get("process") or "?"
    if width and len(command) > width:
        command = command[:width - 3] + "..."
    return "pid %s (%s, user %s)" % (item["pid"], command, item.get("user"))


def describe_holder(port):
    """Who holds ``port``, in one short phrase, or None when no tool can name a pid."""
    names = [who(item, 80) for item in probe(port)["listeners"] if item["pid"]]
    return ", ".join(names) or None


# ------------------------------------------------------------------------------------------ free


def protected_pids():
    """pid 1, this agent and every parent of it (the SSH session, sshd): never signalled."""
    protected, pid = {1, 0}, os.getpid()
    while pid > 1 and pid not in protected:
        protected.add(pid)
        try:
            pid = parent_pid(pid)
        except (OSError, ValueError, IndexError):
            break
    return protected


def stop_process(pid, grace, start=None):
    """SIGTERM, wait up to ``grace`` s, SIGKILL, confirm gone. Returns the signal that ended it.

    ``start`` (from process_start) pins the process: if the pid now names another process, the
    one we meant is gone and nothing is sent.
    """
    def alive():
        return is_alive(pid, start) if start is not None else _exists(pid)

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive():
            return "gone"
        os.kill(pid, sig)  # PermissionError propagates: another user's process
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return sig.name
            time.sleep(0.05)
    raise MethodFailed("pid %d survived SIGKILL" % pid)


def _exists(pid):
    try:
        process_start(pid)
        return True
    except (OSError, ValueError, IndexError):
        return False


def free(port, app_dir=None, force=False, grace=3.0):
    """Stop what holds ``port`` if it is ours (or ``force``), then wait until nothing listens."""
    before = probe(port, app_dir)
    result = dict(before, stopped=[], refused=[])
    if before["state"] == "unknown":
        result.update(ok=False, error="cannot tell who holds port %d: every method failed" % port)
        return result
    never = protected_pids()
    for item in before["listeners"]:
        pid, holder = item["pid"], who(item) if item["pid"] else None
        if not pid:  # ss/lsof name no owner: another user's process, or Android hiding everything
            result["refused"].append(dict(item, reason=(
                "port %d is held by a process this user cannot see (another user's, or hidden by Android):"
                " free it with sudo or as its owner" % port)))
        elif pid in never:
            result["refused"].append(dict(item, reason="pid %d is this agent or its parent" % pid))
        elif not item["managed"] and not force:
            result["refused"].append(dict(item, reason="foreign holder %s: left alone (use --force)" % holder))
        else:
            try:
                how = stop_process(pid, grace, process_info(pid)["start"])
                result["stopped"].append(dict(item, signal=how))
            except PermissionError:
                result["refused"].append(dict(item, reason="permission denied for %s: free it with sudo "
                                              "or by hand" % holder))
            except (OSError, MethodFailed) as exc:
                result["refused"].append(dict(item, reason="%s: %s" % (holder, exc)))
    after = before
    deadline = time.monotonic() + max(grace, 5.0)
    while result["stopped"] and time.monotonic() < deadline:
        after = probe(port, app_dir)
        if after["state"] != "listening":
            break
        time.sleep(0.1)
    result.update(state=after["state"], listeners=after["listeners"], time_wait=after["time_wait"],
                  method=after["method"], tried=after["tried"], listeners_before=before["listeners"])
    result["ok"] = not result["refused"] and after["state"] in ("free", "time_wait")
    if not result["ok"]:
        reasons = [r["reason"] for r in result["refused"]] or ["port %d still held" % port]
        result["error"] = "; ".join(reasons)
    return result


