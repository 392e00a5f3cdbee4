"""The supervised stack on this host: the operator lock, the restart flow, stop, status, dev.

The restart flow: take the host's operator lock; a running supervisor is asked to restart on its
held socket; without one, the port is probed and freed of our own stale dashboard (a foreign holder
stops the flow unless ``force``), the supervisor is started detached, and the dashboard's /healthz is
awaited from here, on the host. Every wait is bounded and measured on the monotonic clock.
"""

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time

from remote.host import CODE_DIR
from remote.host.common import backupstate, epochs, names
from remote.host.common.contract import StackSettings
from remote.host.common.errors import Failure
from remote.host.common.files import Layout, error_tail, read_env_file, read_json, write_json
from remote.host.common.system import is_alive, read_pid, read_pidfile
from remote.host.probes import holders
from remote.host.supervision import bot, guard, leasectl, orphans
from remote.host.supervision.inbox import ask
from remote.host.supervision.loop import DEFAULTS, VERSION

#: settings that only a new supervisor can apply (the socket, the commands it runs)
RESTART_KEYS = ("host", "port", "bot_command", "python", "code_dir", "alert_webhook", "wake_lock", "standby",
                "watchdog_sec", "bot_starts_per_day", "shard_count", "shards", "bot_token_env", "coordination",
                "place")
#: settings an operator may send: the keys of the document that describes them
SETTINGS = tuple(StackSettings.__annotations__)
#: what `python -m dashboard` imports from its venv
DASHBOARD_PACKAGES = ("flask", "flask_socketio", "simple_websocket", "werkzeug")
_FIND = ("import importlib.util as u,sys\nm=[n for n in sys.argv[1:] if u.find_spec(n) is None]\n"
         "print(' '.join(m));sys.exit(1 if m else 0)")


@contextlib.contextmanager
def operator_lock(paths, timeout, action):
    """One operator action at a time per host: a second one waits, then says who holds the lock."""
    os.makedirs(paths.run, exist_ok=True)
    with open(paths.operator_lock, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise Failure("another operator action holds this host's lock (%s) for over %.0f s; "
                                  "try again when it ends" % (holder, timeout)) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write("pid %d, %s since %s" % (os.getpid(), action, time.strftime("%H:%M:%S")))
        handle.flush()
        yield


def read_state(paths):
    return read_json(paths.state)


def service_state(paths, name):
    return read_state(paths).get("services", {}).get(name, {})


def stack_config(app_dir, settings):
    """The supervisor's settings: its defaults, what the operator sent, the code and interpreter to use."""
    config = dict(DEFAULTS)
    config.update({k: v for k, v in (settings or {}).items() if k in SETTINGS and v is not None})
    config["app_dir"] = Layout(app_dir).app_dir
    config["code_dir"] = os.path.abspath(os.path.expanduser(config.get("code_dir") or CODE_DIR))
    venv = os.path.join(config["code_dir"], ".venv")
    # a release's .venv, even a broken one (check_dashboard_python says so); the checkout may have none
    python = config.get("python") or (os.path.join(venv, "bin", "python") if os.path.lexists(venv) else sys.executable)
    config["python"] = os.path.abspath(os.path.expanduser(python)) if os.sep in python else python
    return config


def check_dashboard_python(config, timeout=3.0):
    """Before a supervisor starts: can the dashboard's interpreter import what the dashboard needs?
    Without this a removed venv shows as three identical tracebacks and a 15 s give-up."""
    python, fix = config["python"], "run invoke deploy --host %s" % (config.get("name") or "HOST")
    try:
        out = subprocess.run([python, "-c", _FIND] + list(DASHBOARD_PACKAGES), cwd=config["code_dir"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except OSError as exc:
        raise Failure("the dashboard's interpreter %s cannot run (%s): its venv is gone; %s"
                      % (python, exc.strerror, fix)) from None
    except subprocess.TimeoutExpired:
        raise Failure("the dashboard's interpreter %s did not answer within %.0f s" % (python, timeout)) from None
    if out.returncode != 0:
        missing = out.stdout.split() or [(out.stderr.strip().splitlines() or ["?"])[-1]]
        raise Failure("the dashboard's interpreter %s lacks %s: its venv is missing or broken; %s"
                      % (python, ", ".join(missing), fix))


def preflight(paths, port, force, grace):
    """Before a supervisor starts: the port must be free, TIME_WAIT, or held by our own stale process."""
    found = holders.probe(port, paths.app_dir)
    if found["state"] in ("free", "time_wait", "unknown"):
        return found["state"]
    foreign = [item for item in found["listeners"] if not item["managed"]]
    other = sorted({holders.stack_of(item) for item in foreign} - {None})
    if other and not force:  # our own kind, for another app dir: say which, and how to reach it
        roles = holders.labels(other[0])
        order = {"supervisor": 0, "dashboard": 1, "spare": 2}
        held = sorted(("%s pid %d" % (roles.get(item["pid"], "process"), item["pid"]) for item in foreign
                       if item["pid"]), key=lambda text: (order.get(text.split()[0], 3), text))
        raise Failure("port %d is held by the sulfur-ops stack of another app dir, %s (%s), not this host's %s: "
                      "act on it through the inventory host whose app_dir that is (the dev stack of invoke dev: "
                      "any task without --host), or stop it first" % (port, other[0], ", ".join(held), paths.app_dir))
    if foreign and not force:
        who = "; ".join(holders.who(item) if item["pid"] else "a process this user cannot see" for item in foreign)
        raise Failure("port %d is held by %s: not ours, left alone (stop it, or use --force)" % (port, who))
    freed = holders.free(port, paths.app_dir, force=force, grace=grace)
    if not freed["ok"]:
        raise Failure("could not free port %d: %s" % (port, freed["error"]))
    return "freed " + ", ".join("pid %d" % s["pid"] for s in freed["stopped"])


def supervisor_argv(config):
    return [sys.executable, "-S", "-m", "remote.host.supervisor", "run", Layout(config["app_dir"]).config]


def spawn_supervisor(paths, config):
    """Detached: new session, stdin /dev/null, output to logs/supervisor.log. A background child that
    kept the SSH channel's streams open would hang the operator's connection. It runs the code of the
    configured code dir (app_dir/current): this ctl may run from a release still being installed."""
    write_json(paths.config, config)
    with open(paths.log("supervisor"), "ab") as out:
        return subprocess.Popen(supervisor_argv(config), cwd=config["code_dir"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)


def health_pid(config):
    """The pid /healthz answers with, or None. http.client, not urllib: fewer imports on the way."""
    from http.client import HTTPConnection  # here: only the commands that start something need it
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor is not None and supervisor.poll() is not None:
            raise Failure("the supervisor exited (%s)" % supervisor.returncode,
                          error_tail(paths.log("supervisor")) + error_tail(paths.log("dashboard")))
        dash = service_state(paths, "dashboard")
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


def wait_bot_up(paths, settle, timeout, config=None, not_pid=None):
    """The bot's pid once it has started; None when this host is standby. A bot that speaks sd_notify
    (bot.speaks_notify) has started at READY=1 with the same pid alive bot.READY_HOLD s later, and has
    failed when it is not READY within bot_ready_timeout; any other one once it has stayed up (same
    pid) for ``settle`` s. ``not_pid``: the bot a restart replaces, whose state may still show.

    Its failures count from 0 since the start or restart that came before (both reset them), so any
    failure seen here is this start's. A start may wait its turn first (5 s between logins)."""
    notify = bot.speaks_notify(paths, config or {})
    ready_timeout = float((config or {}).get("bot_ready_timeout") or bot.READY_TIMEOUT)
    deadline = time.monotonic() + timeout + bot.MIN_SPACING + (ready_timeout + bot.READY_HOLD if notify else settle)
    pid = since = ready_at = None
    while time.monotonic() < deadline:
        svc, now = service_state(paths, "bot"), time.monotonic()
        if svc.get("state") == "standby":
            return None
        if svc.get("state") == "failed" or svc.get("failures"):
            raise Failure("the bot did not stay up (%s)" % (svc.get("reason") or "exit %s" % svc.get("last_exit")),
                          svc.get("last_error") or error_tail(paths.log("bot")))
        if svc.get("state") == "running" and svc.get("pid") and svc["pid"] != not_pid:
            if svc["pid"] != pid:
                pid, since, ready_at = svc["pid"], now, None
            if not notify and now - since >= settle:
                return pid
            if notify and svc.get("ready"):
                ready_at = ready_at or now
                if now - ready_at >= bot.READY_HOLD:
                    return pid
            elif notify and now - since >= ready_timeout:
                raise Failure("the bot (pid %d) did not say READY=1 within %.0f s of its start (bot_ready_timeout; "
                              "expected: it said it before here (%s), or bot_notify: true; a bot that no longer "
                              "says it: bot_notify: false)" % (pid, ready_timeout, paths.bot_notify),
                              error_tail(paths.log("bot")))
        time.sleep(0.05)
    if notify:
        raise Failure("the bot did not start and say READY=1 in time", error_tail(paths.log("bot")))
    raise Failure("the bot did not stay up for %.0f s" % settle, error_tail(paths.log("bot")))


def wait_supervisor_gone(paths, timeout, pid):
    deadline = time.monotonic() + timeout
    while read_pid(paths.pidfile):
        if time.monotonic() >= deadline:
            raise Failure("the supervisor (pid %d) did not stop within %.0f s" % (pid, timeout),
                          error_tail(paths.log("supervisor")))
        time.sleep(0.05)


def restart(app_dir, settings, service="all", force=False, grace=3.0, timeout=20.0, start_only=False,
            checks=None, reset_budget=False):
    """``invoke restart`` / ``start`` on this host, under the operator lock. ``checks``: what the other
    hosts run (guard.check); ``reset_budget``: forget the bot's starts of the last 24 h first."""
    paths = Layout(app_dir)
    paths.make()
    with operator_lock(paths, timeout, "start" if start_only else "restart"):
        config = stack_config(app_dir, settings)
        # a new supervisor starts the bot too, whatever service was named
        spawns = not read_pid(paths.pidfile) or replacing(paths, config)
        notes = guard.check(paths, config, checks) if service in ("bot", "all") or spawns else None
        resumed = leasectl.resume(paths, config, "invoke %s" % ("start" if start_only else "restart")) \
            if service in ("bot", "all") else None
        notes = (notes or []) + [resumed] if resumed else notes
        if reset_budget:
            bot.reset_budget(paths.bot_starts, config["bot_starts_per_day"])
        result = dict(restart_locked(paths, config, service, force, grace, timeout, start_only),
                      epoch=epochs.read(paths.bot_epoch))  # the operator remembers it (a first start's epoch 1)
        return dict(result, notes=notes) if notes else result


def replacing(paths, config):
    """Why the running supervisor must make way for a new one: the settings only a new one applies
    that changed, and "supervisor code" when it came with an older release ([]: it stays)."""
    old_config = read_json(paths.config)
    changed = [k for k in RESTART_KEYS if old_config.get(k) != config.get(k)]
    if read_state(paths).get("supervisor", {}).get("version") != VERSION:
        changed.append("supervisor code")  # its fixes reach the host only so
    return changed


def restart_locked(paths, config, service="all", force=False, grace=3.0, timeout=20.0, start_only=False):
    """The restart flow, for a caller that holds the operator lock (restart, deploy, rollback)."""
    started = time.monotonic()
    epochs.write_boot_wait(paths, config.get("boot_wait"))  # read by every supervisor at its start, not a restart key
    running = read_pid(paths.pidfile)
    changed = replacing(paths, config) if running else []
    if changed and read_json(paths.config).get("stream"):
        raise Failure("the dev stack (invoke dev) runs with other settings (%s): stop it with Ctrl+C in its "
                      "terminal and start invoke dev again to apply them" % ", ".join(changed))
    if changed:
        # only a new supervisor can apply these; the port closes briefly, so say why
        ask(paths, "stop", "all", timeout)
        wait_supervisor_gone(paths, timeout, running)
        running = None
    done = {"ok": True, "port": config["port"]}
    if running:
        old = service_state(paths, "dashboard").get("pid")
        if start_only and service == "all":
            return dict(done, action="already running", pid=old, elapsed=time.monotonic() - started)
        if start_only:
            answer = ask(paths, "start", service, timeout)
            if not answer.get("ok"):
                raise Failure(answer.get("error") or "start refused", error_tail(paths.log(service)))
            return dict(done, action="%s %s" % (service, answer.get("state") or "running"),
                        pid=old if service == "bot" else answer.get("pid"), elapsed=time.monotonic() - started)
        answer = ask(paths, "restart", service, timeout)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "restart refused",
                          error_tail(paths.log(service if service != "all" else "dashboard")))
        asked = time.monotonic()
        pid = wait_healthy(paths, config, timeout, not_pid=old) if service in ("dashboard", "all") else old
        return dict(done, action="restarted", pid=pid, elapsed=time.monotonic() - started,
                    timings=_timings(started, asked))
    check_dashboard_python(config)
    # an orphaned dashboard hands its socket to the new supervisor: the port is not to be freed of it
    orphan = orphans.recorded(paths, "dashboard")
    before = "kept open by the orphaned dashboard pid %d" % orphan.pid if orphan else preflight(
        paths, config["port"], force, grace)
    supervisor = spawn_supervisor(paths, config)
    asked = time.monotonic()
    pid = wait_healthy(paths, config, timeout, not_pid=orphan and orphan.pid, supervisor=supervisor)
    action = "restarted the supervisor (%s changed)" % ", ".join(changed) if changed else "started"
    if orphan:
        action = "started a new supervisor (the last one had died; its dashboard handed the port over)"
    return dict(done, action=action, pid=pid, port_before=before, elapsed=time.monotonic() - started,
                timings=_timings(started, asked))


def _timings(started, asked):
    """restart: until the supervisor took the request (or was spawned); health: until the new
    dashboard answered its health check."""
    return {"restart": asked - started, "health": time.monotonic() - asked}


def stop(app_dir, service="all", timeout=20.0):
    paths = Layout(app_dir)
    with operator_lock(paths, timeout, "stop"):
        pid = read_pid(paths.pidfile)
        if not pid:  # a supervisor that was killed leaves its processes serving: stop means them too
            left = _stop_orphans(paths, service)
            return {"ok": True, "action": "stopped what a dead supervisor left: %s" % ", ".join(left) if left
                    else "not running"}
        config = read_json(paths.config)  # the running supervisor's settings: its lease, if it holds one
        by = "invoke stop on %s" % config.get("name")
        holds = service in ("bot", "all") and leasectl.pause_here(paths, config, by)
        answer = ask(paths, "stop", service, timeout)
        if not answer.get("ok"):
            raise Failure(answer.get("error") or "stop refused")
        paused = leasectl.pause(paths, config, by) if holds else None
        if service == "all":
            wait_supervisor_gone(paths, timeout, pid)
        return dict({"ok": True, "action": "stopped %s" % service}, **({"notes": [paused]} if paused else {}))


def _stop_orphans(paths, service, grace=5.0):
    """The processes of ours that outlived their supervisor (status says "orphaned"): the recorded
    bot and dashboard of ``service``, and the dashboard's warm spares; what was stopped, in words."""
    services = tuple(reversed(names.SERVICES)) if service == "all" else (service,)  # the bot first
    return ["%s pid %d" % ("spare dashboard" if name == "spare" else name, pid)
            for name, pid, _ in orphans.stop_left(paths, grace, services, service in ("all", "dashboard"))]


def status(app_dir, token_env=None):
    """What runs here, truthfully: a dead supervisor is "dead" (with when it was last seen), and a
    process of ours that outlived it is "orphaned", never "stopped"."""
    paths = Layout(app_dir)
    state, pid = read_state(paths), read_pid(paths.pidfile)
    services, recorded = state.get("services", {}), state.get("supervisor", {})
    supervisor = {"running": bool(pid), "pid": pid, "port": recorded.get("port"),
                  "state": "running" if pid else "stopped",
                  "started_at": recorded.get("started_at") if pid else None}
    if not pid:
        left = read_pidfile(paths.pidfile)
        if left and not is_alive(left[0], left[1]):  # it died without cleaning up: killed
            supervisor.update(state="dead", last_pid=left[0], last_seen=_mtime(paths.pidfile))
        for name, svc in services.items():
            orphan = orphans.recorded(paths, name)
            if orphan is not None:
                svc.update(state="orphaned", pid=orphan.pid)
            elif svc.get("state") != "failed":
                svc.update(state="stopped", pid=None)
    dotenv = read_env_file(guard.env_path(paths))  # read once: the bot's token and the dashboard's
    bot_state = {"env_bot_id": bot.bot_id(bot.token(dotenv, token_env)), "running": guard.running(paths),
                 "role": bot.recorded_role(paths), "epoch": epochs.read(paths.bot_epoch)}
    return {"ok": True, "supervisor": supervisor, "services": services, "bot": bot_state, "now": time.time(),
            "backups": backupstate.summary(paths),
            "dashboard_token": bool(dotenv.get("DASHBOARD_TOKEN"))}  # set or not, never its value


def _mtime(path):
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def dev(app_dir, settings, force=False, grace=3.0, checks=None):
    """The restart flow's checks, then the supervisor in the foreground, logs streamed, Ctrl+C stops all."""
    paths, config = Layout(app_dir), stack_config(app_dir, settings)
    paths.make()
    if read_pid(paths.pidfile):
        raise Failure("a supervisor already runs for %s: invoke stop first" % paths.app_dir)
    for note in guard.check(paths, config, checks) or []:
        print("supervisor | %s" % note, flush=True)
    check_dashboard_python(config)
    before = preflight(paths, config["port"], force, grace)
    if before.startswith("freed"):
        print("supervisor | %s (our stale dashboard)" % before, flush=True)
    config["stream"] = True
    write_json(paths.config, config)
    os.chdir(config["code_dir"])
    argv = supervisor_argv(config)
    os.execv(argv[0], argv)
