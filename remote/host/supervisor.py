"""The host's supervisor: holds the dashboard's listening socket, runs the dashboard and the bot.

One event loop. Signals arrive through a self-pipe and are dispatched to ``handle_<name>`` methods,
READY=1 through the notify socket (the sender's pid from SCM_CREDENTIALS), control requests through
the inbox (remote/host/inbox.py). Alerts are posted from short-lived threads, never from the loop.
The parts: Service (a process and its restart policy), Handover and WarmSpare (how a new dashboard
takes the socket over), Inbox; docs/architecture.md draws them.

Why it holds the socket: restarting the dashboard then never closes the port.
"""

import fcntl
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time

from remote.host import CODE_DIR, alerts, history
from remote.host.agent import describe_holder
from remote.host.bot import Keeper
from remote.host.botduties import BotDuties
from remote.host.files import Layout, error_tail, read_env_file, rotate, write_json
from remote.host.handover import Handover, SpareDuties, code_mtimes
from remote.host.inbox import ACTIONS, Inbox, reply
from remote.host.listener import create_listener
from remote.host.logtail import LogFollower
from remote.host.notify import NotifySocket
from remote.host.service import RestartPolicy, Service
from remote.host.system import detect_platform, pidfile_line, read_pid, which

TICK = 0.5
#: bump when a running supervisor must be replaced for a release's changes to reach it (a supervisor
#: outlives deploys: they hand the dashboard over, they do not restart the supervisor)
VERSION = 4
DEFAULTS = {"host": "127.0.0.1", "port": 5000, "bot_command": None, "alert_webhook": None, "wake_lock": False,
            "max_failures": 5, "backoff": 1.0, "backoff_cap": 30.0, "stable_after": 60.0, "grace": 5.0,
            "ready_timeout": 30.0, "bind_retries": 5, "bind_backoff": 1.0, "reload": False, "stream": False,
            "spare": True, "standby": False, "watchdog_sec": 0, "bot_starts_per_day": 50, "shard_count": 1,
            "shards": None, "bot_token_env": None}
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP)


class Supervisor(BotDuties, SpareDuties):
    def __init__(self, config, clock=time.monotonic):
        self.cfg = dict(DEFAULTS, **config)
        self.clock = clock
        self.paths = Layout(self.cfg["app_dir"])
        self.code_dir = os.path.abspath(self.cfg.get("code_dir") or CODE_DIR)
        self.python = self.cfg.get("python") or sys.executable
        self.policy = RestartPolicy.from_config(self.cfg)
        self.services = {}
        self.keeper = None              # the bot's role, start budget and liveness (remote/host/bot.py)
        self.handover = None            # a new dashboard waiting for READY=1
        self.spare = None               # the warm spare dashboard
        self.spare_at = None            # when to start the next spare (monotonic)
        self.retiring = []              # [(proc, SIGKILL deadline)]
        self.stopping, self.stop_waiters = False, []
        self.started_at, self.state = time.time(), "starting"
        self.inbox = Inbox(self.paths.commands)
        self._lock_file = None          # holds the supervisor lock while open
        self.wake_locked = False        # Termux: termux-wake-lock was taken (doctor reports it)
        self.listener = self.notify = self.address = self.port = None
        self.mtimes = None              # --reload: the dashboard code's mtimes
        self._followers = {}
        self._signals = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ----------------------------------------------------------------------------------- set-up
    def log(self, message):
        line = "%s supervisor[%d] %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
        if self.cfg["stream"]:
            print("supervisor | " + line, flush=True)
            with open(self.paths.log("supervisor"), "a") as handle:
                handle.write(line + "\n")
        else:
            print(line, flush=True)  # detached: stdout is logs/supervisor.log

    def _environments(self):
        """(the dashboard's, the bot's): each service gets only what it needs of shared/.env. The bot
        gets all of it (its token); the dashboard only the DASHBOARD_* settings (its own token)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
        base["PATH"] = os.path.dirname(self.python) + os.pathsep + base.get("PATH", "/usr/bin:/bin")
        base["PYTHONUNBUFFERED"] = "1"
        dotenv = read_env_file(os.path.join(self.paths.shared, ".env"))
        dashboard = dict(base, **{k: v for k, v in dotenv.items() if k.startswith("DASHBOARD_")})
        dashboard.update(DASHBOARD_APP_DIR=self.paths.app_dir, DASHBOARD_PORT=str(self.cfg["port"]),
                         DASHBOARD_HOST=self.cfg["host"], NOTIFY_SOCKET=self.notify.name)
        bot = dict(base, **dotenv)
        if self.keeper:
            bot.update(self.keeper.environment(dotenv), NOTIFY_SOCKET=self.notify.name)
        return dashboard, bot

    def _refresh_environment(self, svc):
        """shared/.env as it is now: a deploy with --env-file changes it under a running supervisor."""
        dash_env, bot_env = self._environments()
        svc.env = dash_env if svc.uses_socket else bot_env

    def _make_services(self):
        if self.cfg["bot_command"]:  # first: the bot's environment names its unit (a standby one's too)
            self.keeper = Keeper(self.cfg, self.paths, self.clock)
        dash_env, bot_env = self._environments()
        self.services["dashboard"] = Service("dashboard", [self.python, "-m", "dashboard"], dash_env, self.code_dir,
                                             self.paths.log("dashboard"), True, self.policy, self.clock)
        if self.cfg["bot_command"]:
            self.services["bot"] = Service("bot", shlex.split(self.cfg["bot_command"]), bot_env, self.code_dir,
                                           self.paths.log("bot"), False, self.policy, self.clock)

    def _lock(self):
        """One supervisor per app_dir: the lock lives as long as this process."""
        self._lock_file = open(self.paths.supervisor_lock, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit("supervisor: already running for %s (pid %s)" % (
                self.paths.app_dir, read_pid(self.paths.pidfile))) from None

    def _write_pid(self, name, pid):
        with open(self.paths.pid(name), "w") as handle:
            handle.write(pidfile_line(pid))

    def _on_signal(self, signum, frame):
        self._signals.append(signum)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def setup(self):
        self.paths.make()
        self._lock()
        for signum in SIGNALS:  # before the pidfile names us: SIGUSR1's default action would kill us
            signal.signal(signum, self._on_signal)
        self._write_pid("supervisor", os.getpid())
        write_json(self.paths.config, self.cfg)
        if self.cfg["wake_lock"] and which("termux-wake-lock"):
            self.wake_locked = subprocess.run([which("termux-wake-lock")], timeout=10, check=False).returncode == 0
        self.notify = NotifySocket(self.paths.notify, self.paths.app_dir)
        orphan_dashboard = self._orphans()
        if self.listener is None:
            self.listener = create_listener(self.cfg["host"], self.cfg["port"], False, self.cfg["bind_retries"],
                                            self.cfg["bind_backoff"], log=self.log, holder=describe_holder)
        self.address, self.port = self.listener.address, self.listener.port  # still known once it is closed
        self.log("holding %s (bind attempts %d)" % (self.address, self.listener.attempts))
        self._make_services()
        if orphan_dashboard is not None:  # it serves until the first dashboard of ours is ready
            self.services["dashboard"].running(orphan_dashboard)
        if detect_platform() == "termux":
            self.cfg["spare"] = False  # Android kills apps' processes beyond a small budget
        self.mtimes = code_mtimes(self.code_dir) if self.cfg["reload"] else None
        self.history = history.Sampler(self.paths)  # run/history.bin: 24 h of figures, every 10 s

    # ----------------------------------------------------------------------------------- starting
    def start(self, svc, waiter=None):
        """Start a service; the dashboard by handover: it counts as started on its READY=1."""
        if not svc.uses_socket and not self._bot_may_start(svc, waiter):
            return
        self._refresh_environment(svc)
        try:
            proc = self._take_spare() if svc.uses_socket else None
            if proc is None:
                if svc.uses_socket:
                    rotate(svc.log_path)
                proc = svc.spawn(self.listener.sock, new_session=not self.cfg["stream"])
        except OSError as exc:
            self._exited(svc, 127, ["cannot start %s: %s" % (shlex.join(svc.argv), exc)])
            reply(waiter, False, "cannot start %s: %s" % (svc.name, exc))
            return
        self.log("%s: started pid %d" % (svc.name, proc.pid))
        if svc.uses_socket:
            self.handover = Handover(svc, proc, self.clock(), self.cfg["ready_timeout"], waiter)
            if svc.proc is None:
                svc.state = "starting"
        else:
            self.keeper.started()
            self._running(svc, proc)
            for each in svc.take_waiters(waiter):
                reply(each, True, pid=proc.pid)
        self.write_state()

    def _running(self, svc, proc, since=None):
        if svc.state == "failed" or svc.alerted:
            self.alert("%s recovered on %s (pid %d)" % (svc.name, socket.gethostname(), proc.pid))
            svc.alerted = False
        svc.running(proc, since)
        self._write_pid(svc.name, proc.pid)

    def _ready(self, pid):
        handover = self.handover
        if not handover or not handover.is_from(pid):
            return
        svc, old = handover.service, handover.service.proc
        self.handover = None
        self._running(svc, handover.proc)
        self.log("%s: pid %d ready in %.2f s" % (svc.name, pid, self.clock() - handover.started))
        for waiter in handover.waiters:  # answered first: the old one may be the dashboard that asked
            reply(waiter, True, pid=pid)
        if old is not None and old.poll() is None:
            self._retire(old)
        if self.cfg["spare"] and self.spare is None:
            self.spare_at = self.clock() + 0.1
        self.write_state()

    def restart(self, svc, waiter=None):
        if svc.uses_socket and self.handover:  # a handover is under way: this request is answered with it
            self.handover.join(waiter)
            return
        if not svc.uses_socket:
            old = svc.detach()
            if old is not None:  # never two bots at once: the new one starts once the old one is gone
                self._retire(old)
                self.keeper.pending, svc.state = (old, waiter), "stopping"
                return
        svc.restarts += 1
        self.start(svc, waiter)

    # ----------------------------------------------------------------------------------- stopping
    def _retire(self, proc, grace=None):
        """SIGTERM an old process; SIGKILL it if it is still there after the grace period."""
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        self.retiring.append((proc, self.clock() + (self.cfg["grace"] if grace is None else grace)))

    def stop_service(self, svc):
        for waiter in svc.take_waiters():
            reply(waiter, False, "%s was stopped before it started" % svc.name)
        svc.deferred = False
        if not svc.uses_socket and self.keeper.pending:
            self.keeper.pending = None
        old = svc.detach()
        if old is not None:
            self._retire(old)
        svc.stopped()

    def _exited(self, svc, code, last_error=None):
        """A service's current process ended without being asked: back off, or give up."""
        delay = svc.exited(code, last_error or error_tail(svc.log_path))
        if delay is None:
            self.log("%s: exited %s; %d failures in a row: marked failed" % (svc.name, code, svc.failures))
            if not svc.alerted:
                self.alert("%s failed on %s after %d tries (exit %s): %s" % (
                    svc.name, socket.gethostname(), svc.failures, code, " | ".join(svc.last_error[-3:])))
                svc.alerted = True
        else:
            self.log("%s: exited %s; restart %d in %.1f s" % (svc.name, code, svc.failures, delay))
        self.write_state()

    def shutdown(self):
        if self.stopping:
            return
        self.stopping, self.state = True, "stopping"
        self.log("stopping: SIGTERM to every service")
        if self.handover:
            self._retire(self.handover.proc)
        if self.spare:
            self._retire(self.spare.proc)
            self.spare = None
        for svc in self.services.values():
            self.stop_service(svc)
        self.write_state()

    # ----------------------------------------------------------------------------------- each tick
    def reap(self):
        if self.spare and not self.spare.alive:
            self.log("dashboard: spare pid %d exited %s" % (self.spare.proc.pid, self.spare.proc.returncode))
            self.spare = None  # a new one comes with the next ready dashboard, never in a loop
        self.retiring = [(proc, deadline) for proc, deadline in self.retiring if proc.poll() is None]
        handover = self.handover
        if handover and handover.proc.poll() is not None:
            self.handover = None
            svc, code = handover.service, handover.proc.returncode
            error = "%s exited %s before it was ready: %s" % (svc.name, code, " | ".join(error_tail(svc.log_path)))
            for waiter in handover.waiters:
                reply(waiter, False, error)
            if svc.proc is None and not self.stopping:
                svc.started = handover.started
                self._exited(svc, code)
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is not None and not self.stopping:
                self._exited(svc, svc.proc.returncode)

    def timers(self):
        now = self.clock()
        if self.spare_at and now >= self.spare_at:
            self._spawn_spare()
        if self.handover and self.handover.expired(now):
            self.log("%s: no READY=1 within %.0f s: stopped" % (self.handover.service.name, self.cfg["ready_timeout"]))
            self.handover.proc.kill()
        for proc, deadline in self.retiring:
            if now >= deadline and proc.poll() is None:
                self.log("pid %d ignored SIGTERM for %.0f s: SIGKILL" % (proc.pid, self.cfg["grace"]))
                proc.kill()
        for svc in self.services.values():
            if svc.due() and not self.stopping:
                svc.restarts += 0 if svc.deferred else 1
                svc.deferred = False
                self.start(svc)
        if self.keeper and not self.stopping:
            self._bot_timers(self.services["bot"])
        if self.mtimes is not None:
            mtimes = code_mtimes(self.code_dir)
            if mtimes != self.mtimes:
                self.mtimes = mtimes
                self.log("dashboard code changed: restarting it on the held socket")
                self.restart(self.services["dashboard"])

    def commands(self):
        for action, service, waiter in self.inbox.take():
            self.handle(action, service, waiter)

    def handle(self, action, service, waiter):
        """One control request: restart, stop or start a service (or all of them)."""
        names = list(self.services) if service == "all" else [service]
        if any(n not in self.services for n in names) or action not in ACTIONS:
            reply(waiter, False, "unknown service or action: %s %s (services: %s)"
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
                reply(answer, True)
            elif action == "start" and svc.proc is not None:
                svc.failures = 0  # acknowledged: what fails from now on is this start's to answer for
                reply(answer, True, pid=svc.proc.pid)
            else:
                svc.failures = 0  # an operator's start or restart gives a failed service a fresh count
                (self.restart if svc.proc is not None else self.start)(svc, answer)
        self.write_state()

    def alert(self, text):
        self.log("alert: " + text)
        alerts.post(self.cfg["alert_webhook"], text, self.log)

    def write_state(self):
        if self.keeper:
            self.keeper.status_written, self.keeper.live.status_changed = self.clock(), False
        write_json(self.paths.state, {
            "supervisor": {"pid": os.getpid(), "version": VERSION, "started_at": self.started_at,
                           "address": self.address, "port": self.port, "code_dir": self.code_dir, "state": self.state,
                           "wake_lock": self.wake_locked},
            "services": {name: dict(svc.describe(), **(self.keeper.describe(svc.proc is not None) if name == "bot"
                                                         else {}))
                         for name, svc in self.services.items()},
            "spare_pid": self.spare.proc.pid if self.spare and self.spare.armed else None,
            "updated_at": time.time(),
        })

    def _drain_notify(self, spare=None):
        spare = spare or self.spare
        for pid, lines, fds in self.notify.messages():
            for fd in fds:  # only an orphaned dashboard may hand a socket over, and only in setup
                os.close(fd)
            if pid and self._from_bot(pid):
                self.keeper.live.heard(lines)
            elif b"READY=1" in lines and pid:
                self._ready(pid)
            elif (b"SPARE=1" in lines or b"STANDBY=1" in lines) and spare and spare.proc.pid == pid:
                spare.armed = True
                self.write_state()

    def _stream_logs(self):
        for svc in self.services.values():
            follower = self._followers.setdefault(svc.name, LogFollower(svc.log_path))
            for line in follower.poll():
                print("%-9s | %s" % (svc.name, line), flush=True)

    # ----------------------------------------------------------------------------------- signals
    def handle_sigterm(self):
        self.shutdown()

    handle_sigint = handle_sigterm

    def handle_sighup(self):
        if not self.stopping:
            self.restart(self.services["dashboard"])

    def handle_sigusr1(self):
        pass  # a control request: the inbox is read on every tick, right after the signals

    def handle_sigchld(self):
        pass  # a child exited: reap() runs on every tick

    def _dispatch_signals(self):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:  # drained (EAGAIN)
            pass
        received, self._signals = self._signals, []
        for signum in dict.fromkeys(received):
            getattr(self, "handle_" + signal.Signals(signum).name.lower())()

    # ----------------------------------------------------------------------------------- the loop
    def loop(self):
        self.state = "running"
        for svc in self.services.values():
            self.start(svc)
        last_rotate = last_beat = self.clock()
        while True:
            wait = 0.2 if self.cfg["stream"] else TICK
            due = self.keeper.live.due_in() if self.keeper and self.services["bot"].proc else None
            select.select([self._wake_r, self.notify], [], [], max(0.01, min(wait, due + 0.01)) if due else wait)
            self._dispatch_signals()
            self._drain_notify()
            self.reap()
            if not self.stopping:
                self.commands()
            self.timers()
            self.history.from_supervisor(self)
            if self.cfg["stream"]:
                self._stream_logs()
            if self.clock() - last_beat > 5:  # `status` tells a dead supervisor by this heartbeat
                last_beat = self.clock()
                self._beat()
            if self.clock() - last_rotate > 30:
                last_rotate = self.clock()
                for svc in self.services.values():
                    rotate(svc.log_path, copy=True)
            if self.stopping and not self.retiring and not self.handover:
                return

    def _beat(self):
        try:
            os.utime(self.paths.pidfile)
        except OSError:
            pass

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
                os.unlink(self.paths.pid(name))
            except OSError:
                pass
        self.write_state()
        for waiter in self.stop_waiters:
            reply(waiter, True)
        self.log("stopped")


def main(argv=None):
    """supervisor run CONFIG_JSON: supervise in the foreground (detaching is the stack library's job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m remote.host.supervisor run CONFIG_JSON", file=sys.stderr)
        return 2
    os.umask(0o077)
    with open(args[1]) as handle:
        config = json.load(handle)
    if config.get("app_dir") and os.path.isdir(config["app_dir"]):
        os.chdir(config["app_dir"])  # not the release it was started from: that one may be pruned
    try:
        Supervisor(config).run()
    except SystemExit as exc:
        if exc.code and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
            return 1
        raise
    except Exception as exc:  # BindError and friends: one line in the log, a failed start for the operator
        print("supervisor: %s" % exc, file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
