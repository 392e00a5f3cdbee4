"""The host's supervisor: holds the dashboard's listening socket, runs the dashboard and the bot.

Standard library only, Python 3.8+, Linux and Termux. One event loop, one thread: signals arrive
through a self-pipe, READY=1 through the notify socket (the sender's pid from SCM_CREDENTIALS),
control requests as files under run/commands/ plus SIGUSR1 (file permissions are the access control;
no socket path length limits; a lost signal only delays a request to the next tick).

Why it holds the socket: restarting the dashboard then never closes the port. A restart starts the new
dashboard on the held socket (LISTEN_FDS), waits for its READY=1, and only then SIGTERMs the old one,
which stops accepting and drains. Connections that arrive meanwhile queue on the one socket and are
served by whichever process accepts them: none is refused or reset.
"""

import fcntl
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)

from dashboard.listener import create_listener, spawn_on_socket  # noqa: E402  (stdlib-only modules)
from dashboard.logtail import LogFollower  # noqa: E402
from remote import agent  # noqa: E402
from remote.hostfiles import Layout, error_tail, pidfile_line, read_env_file, read_pid, rotate, write_json  # noqa: E402

TICK = 0.5
DEFAULTS = {"host": "127.0.0.1", "port": 5000, "bot_command": None, "alert_webhook": None, "wake_lock": False,
            "max_failures": 5, "backoff": 1.0, "backoff_cap": 30.0, "stable_after": 60.0, "grace": 5.0,
            "ready_timeout": 30.0, "bind_retries": 5, "bind_backoff": 1.0, "reload": False, "stream": False,
            "standby": True}


class Service:
    def __init__(self, name, argv, env, cwd, log_path, uses_socket):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path, self.uses_socket = log_path, uses_socket
        self.proc = None
        self.state, self.started, self.restarts, self.failures = "stopped", None, 0, 0
        self.last_exit, self.last_error, self.next_start, self.alerted = None, [], None, False

    def describe(self):
        return {"state": self.state, "pid": self.proc.pid if self.proc else None, "started_at": self.started,
                "restarts": self.restarts, "failures": self.failures, "last_exit": self.last_exit,
                "last_error": self.last_error, "log": self.log_path}


class Supervisor:
    def __init__(self, config):
        self.cfg = dict(DEFAULTS, **config)
        self.paths = Layout(self.cfg["app_dir"])
        self.code_dir = os.path.abspath(self.cfg.get("code_dir") or CODE_DIR)
        self.python = self.cfg.get("python") or sys.executable
        self.services, self.pending, self.retiring = {}, None, []
        self.standby, self.standby_at = None, None  # the warm spare dashboard: {"proc", "key", "armed"}
        self.stopping, self.stop_waiters, self.started = False, [], time.time()
        self.state = "starting"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signals = []
        self._followers = {}

    # ----------------------------------------------------------------------------------- logging
    def log(self, message):
        line = "%s supervisor[%d] %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
        if self.cfg["stream"]:
            print("supervisor | " + line, flush=True)
            with open(self.paths.log("supervisor"), "a") as handle:
                handle.write(line + "\n")
        else:
            print(line, flush=True)  # detached: stdout is logs/supervisor.log

    # ----------------------------------------------------------------------------------- set-up
    def _lock(self):
        self._lock_file = open(self.paths.lock, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit("supervisor: already running for %s (pid %s)" % (
                self.paths.app_dir, read_pid(self.paths.pidfile))) from None

    def _environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
        env.update(read_env_file(os.path.join(self.paths.shared, ".env")))
        venv_bin = os.path.dirname(self.python)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _services(self):
        env = self._environment()
        dash_env = dict(env, DASHBOARD_APP_DIR=self.paths.app_dir, DASHBOARD_PORT=str(self.cfg["port"]),
                        DASHBOARD_HOST=self.cfg["host"], NOTIFY_SOCKET=self.notify_name)
        self.services["dashboard"] = Service("dashboard", [self.python, "-m", "dashboard"], dash_env,
                                             self.code_dir, self.paths.log("dashboard"), True)
        if self.cfg["bot_command"]:
            self.services["bot"] = Service("bot", shlex.split(self.cfg["bot_command"]), env, self.code_dir,
                                           self.paths.log("bot"), False)

    def _notify_socket(self):
        path = os.path.join(self.paths.run, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if len(path) < 100:
            if os.path.exists(path):
                os.unlink(path)
            sock.bind(path)
            self.notify_name = path
        else:  # sun_path holds 108 bytes; a deep app_dir gets an abstract name instead
            name = "sulfur-%d-%d" % (os.getuid(), abs(hash(self.paths.app_dir)) % 10 ** 12)
            sock.bind("\0" + name)
            self.notify_name = "@" + name
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.notify = sock

    def _signal(self, signum, frame):
        self._signals.append(signum)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def setup(self):
        self.paths.make()
        self._lock()
        with open(self.paths.pidfile, "w") as handle:
            handle.write(pidfile_line(os.getpid()))
        write_json(self.paths.config, self.cfg)
        if self.cfg["wake_lock"] and agent.which("termux-wake-lock"):
            subprocess.run([agent.which("termux-wake-lock")], timeout=10, check=False)
        self._notify_socket()
        self.listener = create_listener(self.cfg["host"], self.cfg["port"], False, self.cfg["bind_retries"],
                                        self.cfg["bind_backoff"], log=self.log, holder=agent.describe_holder)
        self.address, self.port = self.listener.address, self.listener.port
        self.log("holding %s (bind attempts %d)" % (self.address, self.listener.attempts))
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(signum, self._signal)
        self._services()
        if agent.detect_platform() == "termux":
            self.cfg["standby"] = False  # Android kills apps' processes beyond a small budget
        self._mtimes = self._code_mtimes() if self.cfg["reload"] else None

    # ----------------------------------------------------------------------------------- children
    def _spawn(self, svc, extra_env=None):
        if svc.uses_socket and not extra_env:
            rotate(svc.log_path)
        out = open(svc.log_path, "ab")
        try:
            if svc.uses_socket:
                env = dict(svc.env, **(extra_env or {}))
                return spawn_on_socket(svc.argv, self.listener.sock, env, cwd=svc.cwd, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=not self.cfg["stream"])
            return subprocess.Popen(svc.argv, env=svc.env, cwd=svc.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=not self.cfg["stream"])
        finally:
            out.close()

    def start(self, svc, waiter=None):
        """Start a service; the dashboard by handover: it counts as started on its READY=1."""
        try:
            proc = self._take_standby() if svc.uses_socket else None
            proc = proc or self._spawn(svc)
        except OSError as exc:
            self._exited(svc, None, 127, "cannot start %s: %s" % (shlex.join(svc.argv), exc))
            self._answer(waiter, False, "cannot start %s: %s" % (svc.name, exc))
            return
        self.log("%s: started pid %d" % (svc.name, proc.pid))
        if svc.uses_socket:
            self.pending = {"svc": svc, "proc": proc, "deadline": time.time() + self.cfg["ready_timeout"],
                            "waiters": [waiter] if waiter else [], "started": time.time()}
            if svc.proc is None:
                svc.state = "starting"
        else:
            self._running(svc, proc)
            self._answer(waiter, True, None, pid=proc.pid)
        self.write_state()

    def _running(self, svc, proc):
        if svc.state == "failed" or svc.alerted:
            self.alert("%s recovered on %s (pid %d)" % (svc.name, socket.gethostname(), proc.pid))
            svc.alerted = False
        svc.proc, svc.state, svc.started, svc.next_start = proc, "running", time.time(), None
        with open(os.path.join(self.paths.run, svc.name + ".pid"), "w") as handle:
            handle.write(pidfile_line(proc.pid))

    def _ready(self, pid):
        pending = self.pending
        if not pending or pending["proc"].pid != pid:
            return
        svc, old = pending["svc"], pending["svc"].proc
        self.pending = None
        self._running(svc, pending["proc"])
        self.log("%s: pid %d ready in %.2f s" % (svc.name, pid, time.time() - pending["started"]))
        for waiter in pending["waiters"]:  # answered first: the old one may be the dashboard that asked
            self._answer(waiter, True, None, pid=pid)
        if old is not None and old.poll() is None:
            self._retire(old)
        if self.cfg["standby"] and self.standby is None:
            self.standby_at = time.time() + 0.1
        self.write_state()

    # ----------------------------------------------------------------------------------- standby
    def _code_key(self):
        """What a standby has loaded: the release it resolves to, its interpreter, the code's mtimes."""
        return (os.path.realpath(self.code_dir), os.path.realpath(self.python), sorted(self._code_mtimes().items()))

    def _spawn_standby(self):
        self.standby_at = None
        if self.stopping or self.standby is not None or not self.cfg["standby"]:
            return
        proc = self._spawn(self.services["dashboard"], {"DASHBOARD_STANDBY": "1"})
        self.standby = {"proc": proc, "key": self._code_key(), "armed": False}
        self.log("dashboard: standby pid %d" % proc.pid)

    def _take_standby(self):
        """The armed standby, woken (SIGUSR2), if it still has the code a new dashboard would load.
        A stale or unarmed one is retired: a cold start is always right, a stale spare never."""
        spare = self.standby
        if spare is None:
            return None
        deadline = time.time() + 0.5
        while not spare["armed"] and spare["proc"].poll() is None and time.time() < deadline:
            # still starting: it blocks SIGUSR2 within milliseconds, and a spare half through its imports
            # beats a cold start; a signal it gets mid-import waits for it
            select.select([self.notify], [], [], 0.05)
            self._drain_notify()
        self.standby = None
        if spare["armed"] and spare["proc"].poll() is None and spare["key"] == self._code_key():
            spare["proc"].send_signal(signal.SIGUSR2)
            self.log("dashboard: standby pid %d takes over" % spare["proc"].pid)
            return spare["proc"]
        if spare["proc"].poll() is None:
            self._retire(spare["proc"])
        return None

    def _retire(self, proc):
        """SIGTERM an old process; SIGKILL it if it is still there after the grace period."""
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        self.retiring.append((proc, time.time() + self.cfg["grace"]))

    def restart(self, svc, waiter=None):
        if svc.uses_socket:
            if self.pending:  # a handover is under way: this request is answered with it
                if waiter:
                    self.pending["waiters"].append(waiter)
                return
            svc.restarts += 1
            self.start(svc, waiter)
        else:
            old = svc.proc
            svc.proc = None
            if old is not None and old.poll() is None:
                self._retire(old)
            svc.restarts += 1
            self.start(svc, waiter)

    def stop_service(self, svc):
        if svc.proc is not None and svc.proc.poll() is None:
            self._retire(svc.proc)
        svc.proc, svc.state, svc.next_start = None, "stopped", None

    def _exited(self, svc, proc, code, message=None):
        """A service's current process ended without being asked: back off, or give up."""
        uptime = time.time() - svc.started if svc.started else 0
        if uptime >= self.cfg["stable_after"]:
            svc.failures = 0
        svc.failures += 1
        svc.proc, svc.last_exit = None, code
        svc.last_error = [message] if message else error_tail(svc.log_path)
        if svc.failures >= self.cfg["max_failures"]:
            svc.state, svc.next_start = "failed", None
            self.log("%s: exited %s; %d failures in a row: marked failed" % (svc.name, code, svc.failures))
            if not svc.alerted:
                self.alert("%s failed on %s after %d tries (exit %s): %s" % (
                    svc.name, socket.gethostname(), svc.failures, code, " | ".join(svc.last_error[-3:])))
                svc.alerted = True
        else:
            delay = min(self.cfg["backoff"] * 2 ** (svc.failures - 1), self.cfg["backoff_cap"])
            svc.state, svc.next_start = "backoff", time.time() + delay
            self.log("%s: exited %s; restart %d in %.1f s" % (svc.name, code, svc.failures, delay))
        self.write_state()

    def reap(self):
        if self.standby and self.standby["proc"].poll() is not None:
            proc = self.standby["proc"]
            self.log("dashboard: standby pid %d exited %s" % (proc.pid, proc.returncode))
            self.standby = None  # a new one comes with the next ready dashboard, never in a loop
        for proc, _ in list(self.retiring):
            if proc.poll() is not None:
                self.retiring = [r for r in self.retiring if r[0] is not proc]
        pending = self.pending
        if pending and pending["proc"].poll() is not None:
            self.pending = None
            svc, code = pending["svc"], pending["proc"].returncode
            error = "%s exited %s before it was ready: %s" % (svc.name, code, " | ".join(error_tail(svc.log_path)))
            for waiter in pending["waiters"]:
                self._answer(waiter, False, error)
            if svc.proc is None and not self.stopping:
                svc.started = pending["started"]
                self._exited(svc, pending["proc"], code)
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is not None and not self.stopping:
                self._exited(svc, svc.proc, svc.proc.returncode)

    def timers(self):
        now = time.time()
        if self.standby_at and now >= self.standby_at:
            self._spawn_standby()
        if self.pending and now >= self.pending["deadline"]:
            self.log("%s: no READY=1 within %.0f s: stopped" % (self.pending["svc"].name, self.cfg["ready_timeout"]))
            self.pending["proc"].kill()
        for proc, deadline in self.retiring:
            if now >= deadline and proc.poll() is None:
                self.log("pid %d ignored SIGTERM for %.0f s: SIGKILL" % (proc.pid, self.cfg["grace"]))
                proc.kill()
        for svc in self.services.values():
            if svc.state == "backoff" and svc.next_start and now >= svc.next_start and not self.stopping:
                svc.restarts += 1
                self.start(svc)
        if self._mtimes is not None:
            mtimes = self._code_mtimes()
            if mtimes != self._mtimes:
                self._mtimes = mtimes
                self.log("dashboard code changed: restarting it on the held socket")
                self.restart(self.services["dashboard"])

    def _code_mtimes(self):
        found = {}
        for root, _, files in os.walk(os.path.join(self.code_dir, "dashboard")):
            for name in files:
                if name.endswith((".py", ".html", ".js", ".css")):
                    try:
                        found[os.path.join(root, name)] = os.stat(os.path.join(root, name)).st_mtime_ns
                    except OSError:
                        pass
        return found

    # ----------------------------------------------------------------------------------- control
    def commands(self):
        """Requests under run/commands: {"action": restart|stop|start, "service": NAME|all}."""
        for name in sorted(os.listdir(self.paths.commands)):
            if not name.endswith(".request"):
                continue
            path = os.path.join(self.paths.commands, name)
            try:
                with open(path) as handle:
                    request = json.load(handle)
                os.unlink(path)
            except (OSError, ValueError):
                continue
            waiter = os.path.join(self.paths.commands, name[:-8] + ".result")
            self.handle(request.get("action"), request.get("service", "all"), waiter)

    def handle(self, action, service, waiter):
        names = list(self.services) if service == "all" else [service]
        unknown = [n for n in names if n not in self.services]
        if unknown or action not in ("restart", "stop", "start"):
            self._answer(waiter, False, "unknown service or action: %s %s (services: %s)"
                         % (action, service, ", ".join(self.services)))
            return
        if action == "stop" and service == "all":
            self.stop_waiters.append(waiter)
            self.shutdown()
            return
        for i, name in enumerate(names):
            svc = self.services[name]
            answer = waiter if i == len(names) - 1 else None
            if action == "stop":
                self.stop_service(svc)
                self._answer(answer, True, None)
            elif action == "start" and svc.proc is not None:
                self._answer(answer, True, None, pid=svc.proc.pid)
            else:
                svc.failures = 0  # an operator's start or restart gives a failed service a fresh count
                (self.restart if svc.proc is not None else self.start)(svc, answer)
        self.write_state()

    def _answer(self, waiter, ok, error, **extra):
        if waiter:
            write_json(waiter, dict({"ok": ok, "error": error}, **extra))

    def alert(self, text):
        """Discord webhook ({"content": ...}); in a thread, 5 s timeout, once: never blocks supervision."""
        url = self.cfg["alert_webhook"]
        self.log("alert: " + text)
        if not url:
            return

        def post():
            import urllib.request  # only here: it pulls in ssl, which every start would pay for

            body = json.dumps({"content": text[:1900]}).encode()
            request = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                         "User-Agent": "sulfur-supervisor"})
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except Exception as exc:  # an unreachable webhook must never stop supervision
                self.log("alert not delivered: %s" % exc)

        threading.Thread(target=post, daemon=True).start()

    # ----------------------------------------------------------------------------------- state
    def write_state(self):
        write_json(self.paths.state, {
            "supervisor": {"pid": os.getpid(), "started_at": self.started, "address": self.address,
                           "port": self.port, "code_dir": self.code_dir, "state": self.state},
            "services": {name: svc.describe() for name, svc in self.services.items()},
            "standby_pid": self.standby["proc"].pid if self.standby and self.standby["armed"] else None,
            "updated_at": time.time(),
        })

    def shutdown(self):
        if self.stopping:
            return
        self.stopping, self.state = True, "stopping"
        self.log("stopping: SIGTERM to every service")
        if self.pending:
            self._retire(self.pending["proc"])
        if self.standby:
            self._retire(self.standby["proc"])
            self.standby = None
        for svc in self.services.values():
            self.stop_service(svc)
        self.write_state()

    def _drain_notify(self):
        while True:
            try:
                data, ancillary, _, _ = self.notify.recvmsg(4096, socket.CMSG_SPACE(12), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            lines = data.split(b"\n")
            if b"READY=1" in lines and pid:
                self._ready(pid)
            elif b"STANDBY=1" in lines and self.standby and self.standby["proc"].pid == pid:
                self.standby["armed"] = True
                self.write_state()

    def _stream_logs(self):
        for svc in self.services.values():
            follower = self._followers.setdefault(svc.name, LogFollower(svc.log_path))
            for line in follower.poll():
                print("%-9s | %s" % (svc.name, line), flush=True)

    def loop(self):
        self.state = "running"
        for svc in self.services.values():
            self.start(svc)
        last_rotate = time.time()
        while True:
            select.select([self._wake_r, self.notify], [], [], 0.2 if self.cfg["stream"] else TICK)
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except OSError:  # drained (EAGAIN)
                pass
            signals, self._signals = self._signals, []
            if signal.SIGTERM in signals or signal.SIGINT in signals:
                self.shutdown()
            if signal.SIGHUP in signals and not self.stopping:
                self.restart(self.services["dashboard"])
            self._drain_notify()
            self.reap()
            if not self.stopping:
                self.commands()
            self.timers()
            if self.cfg["stream"]:
                self._stream_logs()
            if time.time() - last_rotate > 30:
                last_rotate = time.time()
                for svc in self.services.values():
                    rotate(svc.log_path, copy=True)
            if self.stopping and not self.retiring and not self.pending:
                return

    def run(self):
        self.setup()
        self.log("supervising %s from %s" % (self.paths.app_dir, self.code_dir))
        try:
            self.loop()
        finally:
            self.finish()

    def finish(self):
        self.listener.sock.close()
        self.state = "stopped"
        for name in list(self.services) + ["supervisor"]:
            try:
                os.unlink(os.path.join(self.paths.run, name + ".pid"))
            except OSError:
                pass
        self.write_state()
        for waiter in self.stop_waiters:
            self._answer(waiter, True, None)
        self.log("stopped")


def main(argv=None):
    """supervisor.py run CONFIG_JSON: supervise in the foreground (detaching is hostctl's job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: supervisor.py run CONFIG_JSON", file=sys.stderr)
        return 2
    with open(args[1]) as handle:
        config = json.load(handle)
    try:
        Supervisor(config).run()
    except SystemExit as exc:
        if exc.code and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
            return 1
        raise
    except Exception as exc:  # BindError and friends: one line in the log, a failed start for hostctl
        print("supervisor: %s" % exc, file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
