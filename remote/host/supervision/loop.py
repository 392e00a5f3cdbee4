"""The supervisor's loop: holds the dashboard's listening socket, runs the dashboard and the bot.

The loop only dispatches, as gunicorn's arbiter does: signals arrive through a self-pipe and go to
``handle_<name>`` methods, notify datagrams (READY=1, WATCHDOG=1, ...) and control requests (the inbox)
go to the service's policy, and long jobs run off the loop (jobs.py). What differs between the two
services lives in their policies: DashboardPolicy (handover, warm spare, the held socket) and BotPolicy
(role, start budget, spacing, watchdog); the loop never asks which service it is dealing with. A
policy sees only the Context (policy.py). docs/architecture.md draws the parts.

Why it holds the socket: restarting the dashboard then never closes the port.
"""

import os
import select
import shlex
import signal
import sys
import time

from remote.host import CODE_DIR
from remote.host.common import history
from remote.host.common.files import Layout, read_env_file, write_json
from remote.host.common.system import detect_platform, pidfile_line
from remote.host.supervision import election, upkeep
from remote.host.supervision.botpolicy import BotPolicy
from remote.host.supervision.dashpolicy import DashboardPolicy
from remote.host.supervision.inbox import ACTIONS, Inbox, reply
from remote.host.supervision.jobs import Jobs
from remote.host.supervision.notify import NotifySocket
from remote.host.supervision.policy import Context
from remote.host.supervision.schedule import BackupSchedule
from remote.host.supervision.selfpipe import SelfPipe
from remote.host.supervision.service import RestartPolicy, Service, group_alive

TICK = 0.5
#: bump when a running supervisor must be replaced for a release's changes to reach it (a supervisor
#: outlives deploys: they hand the dashboard over, they do not restart the supervisor)
VERSION = 8  # 8: the bot's lease on etcd (election.py) must reach running supervisors
DEFAULTS = {"host": "127.0.0.1", "port": 5000, "bot_command": None, "alert_webhook": None, "wake_lock": False,
            "max_failures": 5, "backoff": 1.0, "backoff_cap": 30.0, "stable_after": 60.0, "grace": 5.0,
            "ready_timeout": 30.0, "bind_retries": 5, "bind_backoff": 1.0, "reload": False, "stream": False,
            "spare": True, "standby": False, "watchdog_sec": 0, "bot_starts_per_day": 50, "shard_count": 1,
            "shards": None, "bot_token_env": None, "shared_paths": [], "backup_every": None, "backup_keep": 10,
            "backup_max": 1 << 30, "coordination": None, "place": 0}
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP)


class Supervisor:
    def __init__(self, config, clock=time.monotonic):
        self.cfg = dict(DEFAULTS, **config)
        self.clock = clock
        self.paths = Layout(self.cfg["app_dir"])
        self.code_dir = os.path.abspath(self.cfg.get("code_dir") or CODE_DIR)
        self.python = self.cfg.get("python") or sys.executable
        self.pipe = SelfPipe()          # signals and finished jobs wake the loop through it
        self.jobs = Jobs(wake=self.pipe.wake, clock=clock)
        self.ctx = Context(self.cfg, self.paths, clock, self.jobs, self.python, self.write_state, self._drain_notify,
                           self._refresh_environments)
        self.log = self.ctx.log
        self.services, self.policies = {}, {}
        self.stop_waiters = []
        self.started_at, self.state = time.time(), "starting"
        self.inbox = Inbox(self.paths.commands)
        self.wake_locked = False        # Termux: termux-wake-lock was taken (doctor reports it)
        self.address = self.port = None

    # ----------------------------------------------------------------------------------- set-up
    def _refresh_environments(self):
        """shared/.env as it is now (a deploy with --env-file changes it under a running supervisor):
        each policy says what its service gets of it."""
        base, dotenv = self.ctx.base_environment(), read_env_file(os.path.join(self.paths.shared, ".env"))
        for name, policy in self.policies.items():
            self.services[name].env = policy.environment(base, dotenv)

    def _make_services(self):
        restart_policy = RestartPolicy.from_config(self.cfg)
        dashboard = Service("dashboard", [self.python, "-m", "dashboard"], {}, self.code_dir,
                            self.paths.log("dashboard"), restart_policy, self.clock)
        self.services["dashboard"] = dashboard
        self.policies["dashboard"] = DashboardPolicy(self.ctx, dashboard, self.python, self.code_dir)
        if self.cfg["bot_command"]:
            bot = Service("bot", shlex.split(self.cfg["bot_command"]), {}, self.code_dir, self.paths.log("bot"),
                          restart_policy, self.clock)
            self.services["bot"], self.policies["bot"] = bot, BotPolicy(self.ctx, bot)
        self._refresh_environments()  # the bot's environment names its unit (a standby one's too)

    def setup(self):
        self.paths.make()
        self._lock_file = upkeep.lock(self.paths)  # held while this process lives
        self.pipe.catch(SIGNALS)  # before the pidfile names us: SIGUSR1's default action would kill us
        with open(self.paths.pid("supervisor"), "w") as handle:
            handle.write(pidfile_line(os.getpid()))
        write_json(self.paths.config, self.cfg)
        self.wake_locked = upkeep.wants_wake_lock(self.cfg) and upkeep.wake_lock()
        self.ctx.notify = NotifySocket(self.paths.run)
        self.ctx.listener, orphan = upkeep.hold_socket(self.cfg, self.paths, self.ctx.notify, self.log)
        self.address, self.port = self.ctx.listener.address, self.ctx.listener.port  # known once it is closed
        self.log("holding %s (bind attempts %d)" % (self.address, self.ctx.listener.attempts))
        if detect_platform() == "termux":
            self.cfg["spare"] = False  # Android kills apps' processes beyond a small budget
        self._make_services()
        if orphan is not None:  # it serves until the first dashboard of ours is ready
            self.services["dashboard"].running(orphan)
        self.history = history.Sampler(self.paths)  # run/history.bin: 24 h of figures, every 10 s
        self.backups = BackupSchedule(self.ctx, self.code_dir, self.clock)
        self.ctx.election = election.for_supervisor(self.cfg, self.paths, self.pipe.wake)
        self.upkeep = upkeep.Upkeep(self.paths, {n: s.log_path for n, s in self.services.items()},
                                    self.cfg["stream"], self.clock)

    # ----------------------------------------------------------------------------------- services
    def start(self, svc, waiter=None):
        """Start a service if its policy lets it; how it counts as started is the policy's too."""
        policy = self.policies[svc.name]
        if not policy.may_start(waiter):
            return
        self._refresh_environments()
        try:
            proc = policy.spawn()
        except OSError as exc:
            self.ctx.exited(svc, 127, ["cannot start %s: %s" % (shlex.join(svc.argv), exc)])
            reply(waiter, False, "cannot start %s: %s" % (svc.name, exc))
            return
        self.log("%s: started pid %d" % (svc.name, proc.pid))
        policy.started(proc, waiter)
        self.write_state()

    def restart(self, svc, waiter=None):
        if self.policies[svc.name].restart(waiter):  # joined a handover, or waits for the old bot to go
            return
        svc.restarts += 1
        self.start(svc, waiter)

    def stop_service(self, svc, grace=None):
        self.ctx.answer(svc.take_waiters(), False, "%s was stopped before it started" % svc.name)
        svc.deferred = False
        self.policies[svc.name].stopping()
        old = svc.detach()
        if old is not None:
            self.ctx.retire(old, grace)
        svc.stopped()

    def shutdown(self):
        if self.ctx.stopping:
            return
        self.ctx.stopping, self.state = True, "stopping"
        self.log("stopping: SIGTERM to every service")
        for name, policy in self.policies.items():
            policy.shutdown()
            self.stop_service(self.services[name])
        self.write_state()

    def handle(self, action, service, waiter, grace=None):
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
                self.stop_service(svc, grace)
                reply(answer, True)
            elif action == "start" and svc.proc is not None:
                svc.failures = 0  # acknowledged: what fails from now on is this start's to answer for
                reply(answer, True, pid=svc.proc.pid)
            else:
                svc.failures = 0  # an operator's start or restart gives a failed service a fresh count
                (self.restart if svc.proc is not None else self.start)(svc, answer)
        self.write_state()

    def write_state(self):
        state = {
            "supervisor": {"pid": os.getpid(), "version": VERSION, "started_at": self.started_at,
                           "address": self.address, "port": self.port, "code_dir": self.code_dir, "state": self.state,
                           "wake_lock": self.wake_locked},
            "services": {name: dict(svc.describe(), **self.policies[name].describe())
                         for name, svc in self.services.items()},
            "updated_at": time.time(),
        }
        for policy in self.policies.values():
            state.update(policy.supervisor_state())
        write_json(self.paths.state, state)

    # ----------------------------------------------------------------------------------- each tick
    def _drain_notify(self):
        for pid, lines, fds in self.ctx.notify.messages():
            for fd in fds:  # only an orphaned dashboard may hand a socket over, and only in setup
                os.close(fd)
            for policy in self.policies.values():  # each takes only what its own processes sent
                if policy.heard(pid, lines):
                    break

    def reap(self):
        # a process's group too: a launcher's child that outlives it still gets its KILL at the deadline
        self.ctx.retiring = [(proc, deadline) for proc, deadline in self.ctx.retiring
                             if proc.poll() is None or group_alive(proc)]
        for name, policy in self.policies.items():
            policy.reap()
            svc = self.services[name]
            if svc.proc is not None and svc.proc.poll() is not None and not self.ctx.stopping:
                self.ctx.exited(svc, svc.proc.returncode)

    def timers(self):
        now = self.clock()
        for proc, deadline in self.ctx.retiring:
            if now >= deadline and (proc.poll() is None or group_alive(proc)):
                self.log("pid %d ignored SIGTERM for %.0f s: SIGKILL" % (proc.pid, self.cfg["grace"]))
                proc.kill()
        for name, policy in self.policies.items():
            svc = self.services[name]
            if svc.due() and not self.ctx.stopping:
                svc.restarts += 0 if svc.deferred else 1
                svc.deferred = False
                self.start(svc)
            due = policy.tick(now)  # (waiter,): its policy wants it restarted now
            if due is not None and not self.ctx.stopping:
                self.restart(svc, due[0])

    # ----------------------------------------------------------------------------------- signals
    def handle_sigterm(self):
        self.shutdown()

    handle_sigint = handle_sigterm

    def handle_sighup(self):
        if not self.ctx.stopping:
            self.restart(self.services["dashboard"])

    def handle_sigusr1(self):
        pass  # a control request: the inbox is read on every tick, right after the signals

    def handle_sigchld(self):
        pass  # a child exited: reap() runs on every tick

    def _dispatch_signals(self):
        for name in self.pipe.take():
            getattr(self, "handle_" + name)()

    # ----------------------------------------------------------------------------------- the loop
    def _timeout(self):
        """How long a turn may wait: a tick, less when the bot's watchdog or a job's deadline is nearer."""
        wait = 0.2 if self.cfg["stream"] else TICK
        for due in [p.wake_in() for p in self.policies.values()] + [self.jobs.due_in(), self.backups.wake_in()]:
            if due is not None:
                wait = max(0.01, min(wait, due + 0.01))
        return wait

    def loop(self):
        self.state = "running"
        for svc in self.services.values():
            self.start(svc)
        while True:
            select.select([self.pipe, self.ctx.notify], [], [], self._timeout())
            self._dispatch_signals()
            self._drain_notify()
            self.reap()
            if not self.ctx.stopping:
                for action, service, waiter, grace in self.inbox.take():
                    self.handle(action, service, waiter, grace)
            self.timers()
            self.jobs.collect()
            self.history.from_supervisor(self)
            self.upkeep.tick()
            self.backups.tick()
            if self.ctx.stopping and not self.ctx.retiring and not any(p.busy() for p in self.policies.values()):
                return

    def run(self):
        self.setup()
        self.log("supervising %s from %s" % (self.paths.app_dir, self.code_dir))
        try:
            self.loop()
        finally:
            self.finish()

    def finish(self):
        self.upkeep.log_cap.stop()
        if self.ctx.election is not None:
            self.ctx.election.stop()  # its lease stays: a new supervisor here keeps it (run/lease.json)
        self.ctx.listener.sock.close()
        self.state = "stopped"
        for name in list(self.services) + ["supervisor"]:
            try:
                os.unlink(self.paths.pid(name))
            except OSError:
                pass
        self.write_state()
        for waiter in self.stop_waiters:
            reply(waiter, True)
        self.jobs.collect()  # an alert that has gone out by now is logged as such
        self.log("stopped")
