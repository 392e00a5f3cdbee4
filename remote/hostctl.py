"""Host-side commands: restart, start, stop, status, logs, dev. One JSON document out (logs: text).

Run from a release (or the checkout) as `python -S -m remote.hostctl COMMAND ...`, locally or over
SSH, so a whole restart is one exec round trip and the same code serves every transport. Standard
library only, Python 3.8+.

The restart flow: take the host's operator lock; a running supervisor is asked to restart on its
held socket; without one, the port is probed and freed of our own stale dashboard (a foreign holder
stops the flow unless --force), the supervisor is started detached, and the dashboard's /healthz is
awaited from here, on the host.
"""

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from http.client import HTTPConnection

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)

from dashboard.logtail import LogFollower, last_lines  # noqa: E402
from remote import agent  # noqa: E402
from remote.hostfiles import Layout, error_tail, read_pid, write_json  # noqa: E402
from remote.supervisor import DEFAULTS  # noqa: E402

#: settings that only a new supervisor can apply (the socket, the commands it runs)
RESTART_KEYS = ("host", "port", "bot_command", "python", "code_dir", "alert_webhook", "wake_lock")


class Failure(Exception):
    """The command failed; the message is the one line the operator sees."""

    def __init__(self, message, log_tail=None):
        super().__init__(message)
        self.log_tail = log_tail or []


def operator_lock(paths, timeout, action):
    """One operator action at a time per host: a second one waits, then says who holds the lock."""
    os.makedirs(paths.run, exist_ok=True)
    handle = open(os.path.join(paths.run, "lock"), "a+")
    deadline = time.time() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.time() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise Failure("another operator action holds this host's lock (%s) for over %.0f s; "
                              "try again when it ends" % (holder, timeout)) from None
            time.sleep(0.1)
    handle.seek(0)
    handle.truncate()
    handle.write("pid %d, %s since %s" % (os.getpid(), action, time.strftime("%H:%M:%S")))
    handle.flush()
    return handle


def request(paths, action, service, timeout):
    """Ask the running supervisor (command file + SIGUSR1) and wait for its answer."""
    pid = read_pid(paths.pidfile)
    if not pid:
        raise Failure("the supervisor is not running")
    name = "%d-%d" % (os.getpid(), time.time_ns())
    write_json(os.path.join(paths.commands, name + ".request"), {"action": action, "service": service})
    os.kill(pid, signal.SIGUSR1)
    result = os.path.join(paths.commands, name + ".result")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(result) as handle:
                answer = json.load(handle)
            os.unlink(result)
            return answer
        except (OSError, ValueError):
            time.sleep(0.01)
    raise Failure("the supervisor (pid %d) did not answer %s %s within %.0f s" % (pid, action, service, timeout))


def read_state(paths):
    try:
        with open(paths.state) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def preflight(paths, port, force, grace):
    """Before a supervisor starts: the port must be free, TIME_WAIT, or held by our own stale process."""
    found = agent.probe(port, paths.app_dir)
    if found["state"] in ("free", "time_wait", "unknown"):
        return found["state"]
    foreign = [item for item in found["listeners"] if not item["managed"]]
    if foreign and not force:
        who = "; ".join(agent.who(item) if item["pid"] else "a process this user cannot see"
                        for item in foreign)
        raise Failure("port %d is held by %s: not ours, left alone (stop it, or use --force)" % (port, who))
    freed = agent.free(port, paths.app_dir, force=force, grace=grace)
    if not freed["ok"]:
        raise Failure("could not free port %d: %s" % (port, freed["error"]))
    return "freed " + ", ".join("pid %d" % s["pid"] for s in freed["stopped"])


def spawn_supervisor(paths, config):
    """Detached: new session, stdin /dev/null, output to logs/supervisor.log. A background child that
    kept the SSH channel's streams open would hang the operator's connection."""
    write_json(paths.config, config)
    with open(paths.log("supervisor"), "ab") as out:
        # from the configured code dir (app_dir/current): this hostctl may run from a release being installed
        supervisor = os.path.join(config["code_dir"], "remote", "supervisor.py")
        return subprocess.Popen([sys.executable, supervisor, "run", paths.config], cwd=paths.app_dir,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def health_pid(config):
    """The pid /healthz answers with, or None. http.client, not urllib: no ssl import on the way."""
    host = config["host"]
    conn = HTTPConnection({"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host),
                          config["port"], timeout=2)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return json.loads(resp.read()).get("pid") if resp.status == 200 else None
    finally:
        conn.close()


def wait_healthy(paths, config, timeout, not_pid=None, supervisor=None):
    """The dashboard's pid from state.json, once its /healthz answers with that pid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if supervisor is not None and supervisor.poll() is not None:
            raise Failure("the supervisor exited (%s)" % supervisor.returncode,
                          error_tail(paths.log("supervisor")) + error_tail(paths.log("dashboard")))
        dash = read_state(paths).get("services", {}).get("dashboard", {})
        if dash.get("state") == "failed":
            raise Failure("the dashboard failed to start", dash.get("last_error"))
        pid = dash.get("pid") if dash.get("state") == "running" else None
        if pid and pid != not_pid:
            try:
                if health_pid(config) == pid:
                    return pid
            except (OSError, ValueError):
                pass
        time.sleep(0.01)
    raise Failure("the dashboard was not healthy within %.0f s" % timeout, error_tail(paths.log("dashboard")))


def config_from(args):
    config = dict(DEFAULTS)
    for key in ("host", "port", "bot_command", "alert_webhook", "wake_lock", "max_failures", "reload"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    config["app_dir"] = Layout(args.app_dir).app_dir
    config["code_dir"] = os.path.abspath(os.path.expanduser(args.code_dir or CODE_DIR))
    venv = os.path.join(config["code_dir"], ".venv", "bin", "python")
    python = args.python or (venv if os.path.exists(venv) else sys.executable)
    config["python"] = os.path.abspath(os.path.expanduser(python)) if os.sep in python else python
    return config


def restart(args, start_only=False):
    paths, config = Layout(args.app_dir), config_from(args)
    paths.make()
    lock = operator_lock(paths, args.timeout, "start" if start_only else "restart")
    try:
        return restart_locked(paths, config, args.service, args.force, args.grace, args.timeout, start_only)
    finally:
        lock.close()


def restart_locked(paths, config, service="all", force=False, grace=3.0, timeout=20.0, start_only=False):
    """The restart flow, for a caller that holds the operator lock (restart, deploy, rollback)."""
    started = time.time()
    running = read_pid(paths.pidfile)
    try:
        with open(paths.config) as handle:
            old_config = json.load(handle)
    except (OSError, ValueError):
        old_config = {}
    changed = [k for k in RESTART_KEYS if old_config.get(k) != config.get(k)] if running else []
    if changed:
        # only a new supervisor can apply these; the port closes briefly, so say why
        request(paths, "stop", "all", timeout)
        deadline = time.time() + timeout
        while read_pid(paths.pidfile):
            if time.time() >= deadline:
                raise Failure("the supervisor (pid %d) did not stop within %.0f s" % (running, timeout),
                              error_tail(paths.log("supervisor")))
            time.sleep(0.05)
        running = None
    if running:
        old = read_state(paths).get("services", {}).get("dashboard", {}).get("pid")
        if start_only:
            return {"ok": True, "action": "already running", "pid": old, "port": config["port"],
                    "elapsed": time.time() - started}
        answer = request(paths, "restart", service, timeout)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "restart refused", error_tail(paths.log(service)
                          if service != "all" else paths.log("dashboard")))
        pid = old
        if service in ("dashboard", "all"):
            pid = wait_healthy(paths, config, timeout, not_pid=old)
        return {"ok": True, "action": "restarted", "pid": pid, "port": config["port"],
                "elapsed": time.time() - started}
    before = preflight(paths, config["port"], force, grace)
    supervisor = spawn_supervisor(paths, config)
    pid = wait_healthy(paths, config, timeout, supervisor=supervisor)
    action = "restarted the supervisor (%s changed)" % ", ".join(changed) if changed else "started"
    return {"ok": True, "action": action, "pid": pid, "port": config["port"], "port_before": before,
            "elapsed": time.time() - started}


def stop(args):
    paths = Layout(args.app_dir)
    lock = operator_lock(paths, args.timeout, "stop")
    try:
        pid = read_pid(paths.pidfile)
        if not pid:
            return {"ok": True, "action": "not running"}
        answer = request(paths, "stop", args.service, args.timeout)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "stop refused")
        deadline = time.time() + args.timeout
        while args.service == "all" and read_pid(paths.pidfile) and time.time() < deadline:
            time.sleep(0.05)
        return {"ok": True, "action": "stopped %s" % args.service}
    finally:
        lock.close()


def status(args):
    paths = Layout(args.app_dir)
    state, pid = read_state(paths), read_pid(paths.pidfile)
    services = state.get("services", {})
    if not pid:  # whatever state.json says, nothing runs without the supervisor
        for svc in services.values():
            if svc.get("state") != "failed":
                svc.update(state="stopped", pid=None)
    return {"ok": True, "supervisor": {"running": bool(pid), "pid": pid,
                                       "port": state.get("supervisor", {}).get("port")},
            "services": services, "now": time.time()}


def logs(args):
    path = Layout(args.app_dir).log(args.service)
    for line in last_lines(path, args.lines):
        print(line)
    sys.stdout.flush()
    if args.follow:
        follower = LogFollower(path)
        while True:
            for line in follower.poll():
                print(line, flush=True)
            time.sleep(0.25)


def dev(args):
    """The restart flow's checks, then the supervisor in the foreground, logs streamed, Ctrl+C stops all."""
    paths, config = Layout(args.app_dir), config_from(args)
    paths.make()
    if read_pid(paths.pidfile):
        raise Failure("a supervisor already runs for %s: invoke stop first" % paths.app_dir)
    before = preflight(paths, config["port"], args.force, args.grace)
    if before.startswith("freed"):
        print("supervisor | %s (our stale dashboard)" % before, flush=True)
    config["stream"] = True
    write_json(paths.config, config)
    os.execv(sys.executable, [sys.executable, os.path.join(config["code_dir"], "remote", "supervisor.py"), "run",
                              paths.config])


def parser():
    p = argparse.ArgumentParser(prog="python -m remote.hostctl")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("restart", "start", "stop", "status", "logs", "dev", "deploy", "rollback", "releases", "autostart"):
        c = sub.add_parser(name)
        c.add_argument("--app-dir", required=True)
        c.add_argument("--timeout", type=float, default=20.0)
        c.add_argument("--lock-timeout", type=float, default=120.0)
        c.add_argument("--by")
        if name == "deploy":
            c.add_argument("--stamp", required=True)
            c.add_argument("--commit")
            c.add_argument("--keep", type=int, default=5)
            c.add_argument("--shared", action="append")
            c.add_argument("--env-incoming")
        if name == "rollback":
            c.add_argument("--to")
        if name == "autostart":
            c.add_argument("--remove", action="store_true")
        if name in ("restart", "start", "dev", "deploy", "rollback"):
            c.add_argument("--code-dir")
            c.add_argument("--python")
            c.add_argument("--host")
            c.add_argument("--port", type=int)
            c.add_argument("--bot-command")
            c.add_argument("--alert-webhook")
            c.add_argument("--wake-lock", action="store_true", default=None)
            c.add_argument("--max-failures", type=int)
            c.add_argument("--force", action="store_true")
            c.add_argument("--grace", type=float, default=3.0)
            c.add_argument("--reload", action="store_true", default=None)
        if name in ("restart", "stop", "logs"):
            c.add_argument("--service", default="all" if name != "logs" else "dashboard")
        if name == "logs":
            c.add_argument("--lines", type=int, default=50)
            c.add_argument("--follow", action="store_true")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "logs":
        try:
            logs(args)
        except (KeyboardInterrupt, BrokenPipeError):
            pass
        return 0
    try:
        if args.command in ("restart", "start"):
            args.service = getattr(args, "service", "all")
            out = restart(args, start_only=args.command == "start")
        elif args.command == "stop":
            out = stop(args)
        elif args.command == "status":
            out = status(args)
        elif args.command in ("deploy", "rollback", "releases", "autostart"):
            from remote import hostrelease  # it builds on this module

            out = {"deploy": hostrelease.deploy, "rollback": hostrelease.rollback, "autostart": hostrelease.autostart,
                   "releases": hostrelease.list_releases}[args.command](args)
        else:
            dev(args)
            return 0
    except Failure as exc:
        out = {"ok": False, "error": str(exc), "log_tail": exc.log_tail}
    except Exception as exc:  # a bind error, a full disk: one line for the operator, never a traceback
        out = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "log_tail": []}
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    # run as remote.hostctl, not __main__: hostrelease imports this module, and two copies of it would
    # have two Failure classes
    from remote.hostctl import main as hostctl_main

    sys.exit(hostctl_main())
