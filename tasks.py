"""sulfur-ops: Invoke tasks for the Sulfur bot's hosts. Thin on purpose: flags in, remote/ does the work.

A task parses its flags, calls one library function and renders what it returns (remote/render.py);
a SulfurError the library raises ends it as one line through remote/cli.one_line_error, the one handler.

With neither --host nor --all a task acts on this machine ("local") through the very same code path.
Exit status: 0 every host succeeded, 1 some host failed, 2 bad inventory or bad arguments.
"""

import atexit
import functools
import gc
import logging
import os
import sys
from pathlib import Path

from invoke import Exit, task

from remote import early
from remote.cli import (
    HELP,
    ask,
    asked_for_help,
    finish,
    guarded,
    help_for,
    hosts_of,
    line,
    note,
    one_line_error,
    reporter,
    say,
    select,
)
from remote.connections import open_runner
from remote.errors import UsageError
from remote.fanout import DEFAULT_PARALLEL, on_hosts
from remote.inventory import inventory_path, load
from remote.lazy import Lazy

ROOT = Path(__file__).resolve().parent
# a task imports what it uses when it runs (remote.lazy.Lazy): a one-host port-status never reads deploy's modules
actions, agentcalls, ctlcalls, dataflows, devstack, envcmd, fencing, onboard, release, render, render_data, runcmd = (
    Lazy("remote." + name) for name in ("actions", "agentcalls", "ctlcalls", "dataflows", "devstack", "envcmd",
                                        "fencing", "onboard", "release", "render", "render_data", "runcmd"))
moves, plans = Lazy("remote.failover"), Lazy("remote.plan")
# at exit, the collector's last pass over every object cost 20 ms of a 0.35 s one-host port-status;
# the process ends, so nothing it would free matters (files and connections are closed by then)
atexit.register(gc.freeze)
early.port_status(sys.argv)  # a one-host port-status's ssh starts while invoke reads the rest (remote/early.py)

@task
@one_line_error
def hosts(c):
    """List the inventory's hosts: name, address, user, platform, groups."""
    print(render.hosts_table(list(load().hosts.values())))


@task(name="add-host", help={
    "name": "the host's name in the inventory", "hostname": "its address or DNS name",
    "port": "SSH port (default 22; with --termux 8022)", "user": "SSH user (default: the inventory's)",
    "termux": "an Android phone running Termux: print its one-time setup first",
    "group": "also put it in this group", "accept_new": "trust the host's key without asking"})
@one_line_error
def add_host(c, name, hostname=None, port=None, user=None, termux=False, group=None, accept_new=False):
    """Add a host: fetch its SSH key and ask to trust it, append it to inventory.yml, run doctor on it."""
    if asked_for_help(name, "add-host"):
        return
    if not hostname:
        raise UsageError("add-host %s: give its address with --hostname" % name)
    values, path = onboard.entry(hostname, port, user, termux), inventory_path()
    added = onboard.add(path, name, values, group, accept_new, say, ask, _termux_setup if termux else None)
    if added.written:
        print("added %s to %s%s" % (name, path, " (group %s)" % group if group else ""))
    if added.key is None:
        print(render.not_reachable(name, added.problem, values))
        return
    docs = on_hosts([added.host], agentcalls.doctor)
    finish(docs, render.doctor_report(docs), False)


def _termux_setup(host):
    """add-host --termux, before the phone is reached: its one-time setup, with the key this inventory connects with."""
    print(render.termux_setup(onboard.termux_setup(onboard.public_key(host.identity_file), host.port)))


@task(name="remove-host", help={"name": "the host to take out of the inventory"})
@one_line_error
def remove_host(c, name):
    """Take a host out of inventory.yml (and its groups); refused while another host uses it as jump."""
    if asked_for_help(name, "remove-host"):
        return
    path = inventory_path()
    groups = onboard.remove(path, name)
    print("removed %s from %s%s; its known_hosts line stays (ssh-keygen -R to remove it)"
          % (name, path, " and from group %s" % ", ".join(groups) if groups else ""))


@task(name="port-status", help=help_for("host", "all", "parallel", "json", "port"))
@one_line_error
def port_status(c, host=None, all=False, port=None, json=False, parallel=DEFAULT_PARALLEL):
    """Who holds the dashboard port on each host, via whichever tool that host has."""
    inventory, targets = select(host, all, dev=True)
    report = actions.contact(inventory, targets, note, act=False)
    docs = on_hosts(targets, functools.partial(agentcalls.port_status, port=port and int(port)), parallel, quick=True)
    report()
    finish(docs, render.port_table(docs), json)


@task(name="free-port", help=help_for("host", "all", "parallel", "json", "port", "force", "grace"))
@one_line_error
def free_port(c, host=None, all=False, port=None, force=False, grace=3.0, json=False,
              parallel=DEFAULT_PARALLEL):
    """Free the dashboard port: stop our stale dashboard; foreign holders only with --force."""
    inventory, targets = select(host, all, dev=True)
    actions.contact(inventory, targets, note)()
    operation = functools.partial(agentcalls.free_port, port=port and int(port), force=force, grace=float(grace))
    docs = on_hosts(targets, operation, parallel)
    finish(docs, render.free_table(docs), json)


@task(help=help_for("host", "all", "parallel", "json"))
@one_line_error
def doctor(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Check each host: reachable, auth, platform, python, working port tools, app_dir, disk, bot epoch."""
    inventory, targets = select(host, all)
    report = actions.contact(inventory, targets, note, act=False)
    docs = on_hosts(targets, agentcalls.doctor, parallel)
    report()
    finish(docs, "\n".join([render.doctor_report(docs)] + render_data.doctor_lines(docs)), json)


def _stack(host, all_, parallel, operation, as_json, text=None, dev=False):
    docs = on_hosts(hosts_of(host, all_, dev), operation, parallel)
    finish(docs, (text or render.restart_lines)(docs), as_json)


def _start_bot(host, all_, service, json, parallel, takeover, **options):
    """restart and start: the bot is checked against the other hosts first. Even with --service
    dashboard: a host whose supervisor is down (or must be replaced) starts its bot along with it."""
    inventory, targets = select(host, all_, dev=True)
    guard = guarded(inventory, targets, takeover)
    if host and len(targets) == 1 and host == targets[0].name:  # named on its own, not in a group
        actions.refuse_standby(guard, targets[0], service)
    action = "start" if options.pop("start_only", False) else "restart"
    docs = actions.service_action(guard, targets, action, service, parallel, **options)
    finish(docs, render.restart_lines(docs), json)


@task(help=help_for("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"))
@one_line_error
def restart(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
            parallel=DEFAULT_PARALLEL):
    """Restart the dashboard (on the held socket) and the bot; start the stack if it is not running."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout))


@task(help=dict(help_for("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"),
                reset_budget="forget the bot's starts of the last 24 h (after a spent start budget)"))
@one_line_error
def start(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
          reset_budget=False, parallel=DEFAULT_PARALLEL):
    """Start the stack, or one service, where it is not running (a running one is left as it is)."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout),
               start_only=True, reset_budget=reset_budget)


@task(help=help_for("host", "all", "parallel", "json", "service", "timeout"))
@one_line_error
def stop(c, host=None, all=False, service="all", timeout=20.0, json=False, parallel=DEFAULT_PARALLEL):
    """Stop a service, or the whole stack (the port is released)."""
    inventory, targets = select(host, all, dev=True)
    actions.contact(inventory, targets, note)()
    docs = on_hosts(targets, functools.partial(ctlcalls.stop, service=service, timeout=float(timeout)), parallel)
    finish(docs, render.restart_lines(docs), json)


@task(help=help_for("host", "all", "parallel", "json"))
@one_line_error
def status(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Services per host: HOST SERVICE STATE PID UPTIME RESTARTS LAST-EXIT BOT-ID DETAIL (failed: last lines)."""
    inventory, targets = select(host, all, dev=True)
    docs = on_hosts(targets, ctlcalls.status, parallel)
    fencing.on_contact(inventory, {d["host"]: d for d in docs}, act=False, say=note)  # reports, changes nothing
    finish(docs, "\n".join([render.status_table(docs)] + render_data.status_notes(docs)), json)


@task(help=help_for("host", "all", "parallel", "json", "wheels", "env_file", "timeout", "takeover", "plan", "serial"))
@one_line_error
def deploy(c, host=None, all=False, wheels=False, env_file=None, timeout=20.0, json=False, takeover=False,
           plan=False, serial=0, parallel=DEFAULT_PARALLEL):
    """Ship a new release to every host (or --host): switch atomically, verify, roll back on failure."""
    inventory, targets = select(host, not host)  # deploy goes to every host unless told otherwise
    env_path = release.deploy_flags(targets, env_file, serial)
    guard = guarded(inventory, targets, takeover, env_path, act=not plan)  # a plan says what a deploy would refuse
    if plan:
        docs = plans.plan_hosts(targets, env_path, guard.checks_for, parallel)
        return finish(docs, render.plan_lines(docs), json)
    say = sys.stderr if json else sys.stdout  # progress; with --json, stdout is the JSON alone
    docs = release.ship(targets, wheels, env_path, float(timeout), guard.checks_for, int(serial), parallel,
                        packed=lambda package: line(say, render.packed_line(package, wheels)),
                        batch=lambda number, total, hosts: line(say, render.batch_line(number, total, hosts)),
                        reporter=lambda target: reporter(target, say))
    finish(docs, render.deploy_lines(docs), json)


@task(help=dict(help_for("host", "all", "parallel", "json", "to", "timeout", "takeover"),
                force="also go back to a release whose deploy failed (--to)"))
@one_line_error
def rollback(c, host=None, all=False, to=None, force=False, timeout=20.0, json=False, takeover=False,
             parallel=DEFAULT_PARALLEL):
    """Go back to the newest healthy release before current (or --to one) and restart on it."""
    to = ctlcalls.release_name(to)
    inventory, targets = select(host, all or not host)
    guard = guarded(inventory, targets, takeover)

    def op(runner, target):
        return ctlcalls.rollback(runner, target, to=to, timeout=float(timeout), by=release.operator(), force=force,
                                 checks=guard.checks_for(target),
                                 progress=reporter(target, sys.stderr if json else sys.stdout))

    docs = on_hosts(targets, op, parallel)
    finish(docs, render.rollback_lines(docs), json)


@task(help={"to": "the host to run the bot on", "from_": "the host to take it from (default: whichever runs it)",
            "takeover": "start it on --to even if the host running it cannot be reached",
            "settle": "seconds the bot must stay up on --to (default 5)", "json": "print JSON instead of lines",
            "timeout": "seconds to wait for each host (default 20)",
            "no_data": "do not carry the bot's data (shared_paths) along: for a bot whose data lives elsewhere"})
@one_line_error
def failover(c, to, from_=None, takeover=False, settle=5.0, timeout=20.0, json=False, no_data=False):
    """Move the bot: stop it where it runs, start it on --to, confirm it stays up; undo if it does not."""
    def report(step):
        if not json:
            render_data.end_progress()
            print(render.failover_line(step), flush=True)

    steps = moves.failover(load(), to, from_, takeover, float(settle), float(timeout), report, data=not no_data,
                           progress=functools.partial(render_data.progress, to))
    if json:
        print(render.as_json(steps))
    if not all(step["ok"] for step in steps):
        raise Exit(code=1)


@task(help={"port": "loopback port of the page (default 5050)",
            "no_browser": "print the sign-in file; open no browser"})
@one_line_error
def fleet(c, port=5050, no_browser=False):
    """Every host on one live page here: states, 24 h charts, restart/stop/start; Ctrl+C stops it."""
    from remote.fleet.server import Fleet

    page = Fleet(load(), int(port))
    logging.getLogger("sulfur").addHandler(render.log_handler(sys.stderr))  # a link's warnings, escaped
    try:
        page.start()
        opener = page.sign_in_file().as_uri()  # the token is in the file, never on a command line (ps)
        print(render.fleet_line(len(page.hosts), page.url(), opener), flush=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(opener)
        page.wait()
    except KeyboardInterrupt:
        pass


@task(help=help_for("host", "all", "parallel", "json", "remove"))
@one_line_error
def autostart(c, host=None, all=False, remove=False, json=False, parallel=DEFAULT_PARALLEL):
    """Start the stack at boot: a systemd user unit (Linux) or a Termux:Boot script (Termux)."""
    actions.contact(*select(host, all), note)()
    _stack(host, all, parallel, functools.partial(ctlcalls.autostart, remove=remove), json, render.autostart_lines)


@task(help=help_for("host", "all", "parallel", "json"))
@one_line_error
def releases(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """The releases on each host: stamp, commit, who deployed it, which is current."""
    inventory, targets = select(host, all or not host)
    report = actions.contact(inventory, targets, note, act=False)
    docs = on_hosts(targets, ctlcalls.releases, parallel)
    report()
    finish(docs, render.releases_table(docs), json)


@task(help={"host": "host or group names (default: each bot's data owner, the holder of its epoch)",
            "all": "also copy each snapshot to the standbys of the same bot (backups/replica/ there)",
            "json": HELP["json"], "parallel": HELP["parallel"]})
@one_line_error
def backup(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """A snapshot of the bot's data now (SQLite copied consistently), kept on the host and copied here."""
    docs = dataflows.backup(load(), host, all, render_data.progress, parallel)
    render_data.end_progress()
    finish(docs, render_data.backup_lines(docs), json)


@task(help={"host": "host or group names (default: every host with shared_paths)", "json": HELP["json"],
            "parallel": HELP["parallel"]})
@one_line_error
def backups(c, host=None, json=False, parallel=DEFAULT_PARALLEL):
    """Every snapshot of the bot's data: on the hosts, their replicas, and this machine's copies."""
    listing = dataflows.listing(load(), host, parallel)
    print(render.as_json(listing["rows"]) if json else render_data.backups_table(listing))
    if listing["errors"]:
        raise Exit(code=1)


@task(help={"host": "the host whose data is replaced", "from_": "a STAMP that invoke backups lists "
            "(default: the newest of the host's own data)", "file": "a snapshot archive on this machine",
            "yes": "do not ask (for scripts)", "force": "restore a snapshot of other data (another data id)",
            "json": HELP["json"]})
@one_line_error
def restore(c, host, from_=None, file=None, yes=False, force=False, json=False):
    """Put a snapshot back: the bot stopped, the data before kept, all of it switched at once, the bot restarted."""
    doc = dataflows.restore(load(), host, from_, file, force, lambda question: yes or ask(question), note)
    finish([doc], render_data.restore_lines(doc), json)


@task(help=help_for("host", "all", "parallel", "json"))
@one_line_error
def env(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """The keys of each host's shared/.env (never their values) and which service sees each."""
    inventory, targets = select(host, all)
    docs = envcmd.listing(inventory, targets, parallel)
    finish(docs, render_data.env_table(docs), json)


ENV_HELP = dict(help_for("host", "all", "parallel", "json", "force"), key="a variable's name (repeat for more); "
                "never KEY=VALUE", no_restart="change the file only: the services keep the old values until "
                "their next start", force="change the bot's token on some of its hosts only")


@task(name="env-set", iterable=["key"], help=dict(ENV_HELP, multiline="one --key, its value all of stdin (a PEM key)"))
@one_line_error
def env_set(c, key=None, host=None, all=False, no_restart=False, multiline=False, force=False, json=False,
            parallel=DEFAULT_PARALLEL):
    """Set variables in shared/.env: values from a hidden prompt or stdin; restarts what sees a change."""
    keys = envcmd.check_keys(key, multiline)
    inventory, targets = select(host, all)
    docs = envcmd.change(inventory, targets, envcmd.read_values(keys, multiline), [], not no_restart, force, note,
                         parallel)
    finish(docs, render_data.env_lines(docs), json)


@task(name="env-unset", iterable=["key"], help=ENV_HELP)
@one_line_error
def env_unset(c, key=None, host=None, all=False, no_restart=False, force=False, json=False, parallel=DEFAULT_PARALLEL):
    """Remove variables from shared/.env; restarts what sees a change."""
    inventory, targets = select(host, all)
    docs = envcmd.change(inventory, targets, {}, envcmd.check_keys(key, False), not no_restart, force, note, parallel)
    finish(docs, render_data.env_lines(docs), json)


@task(help=dict(help_for("host", "all", "parallel", "json"), timeout="seconds each host's command may run "
                "(default 300); then it is stopped", shell="hand the words to sh -c on the host (pipes, $VARS)",
                no_lock="do not take the host's lock: a read-only command while a deploy runs (nor fence)",
                raw="print the output as it is: colours, and every other control character (not escaped)"))
@one_line_error
def run(c, host=None, all=False, timeout=300.0, shell=False, no_lock=False, raw=False, json=False,
        parallel=DEFAULT_PARALLEL):
    """A one-off command on each host: invoke run [--host H | --all] -- CMD ARGS... (no stdin, no terminal there)."""
    words = runcmd.command_words(sys.argv)  # as typed: invoke's own copy of them is joined with spaces
    inventory, targets = select(host, all)
    docs = runcmd.run(inventory, targets, words, shell, float(timeout), not no_lock, note,
                      sys.stderr if json else sys.stdout, sys.stderr, parallel, raw=raw)
    print(render.as_json(docs) if json else render_data.run_lines(docs), flush=True)
    if runcmd.exit_status(docs):
        raise Exit(code=runcmd.exit_status(docs))


@task(help={"host": "one host or group (default: this machine)", "service": "dashboard, bot or supervisor",
            "lines": "lines to show (default 50)", "follow": "keep printing new lines until Ctrl+C",
            "raw": "print the log as it is: colours, and every other control character (not escaped)",
            "timeout": "without --follow: give a host that does not answer up after this many seconds (30)"})
@one_line_error
def logs(c, host=None, service="dashboard", lines=50, follow=False, raw=False, timeout=30.0):
    """Print a service's log from each host, control characters escaped (--raw: as is); --follow streams it."""
    inventory, targets = select(host, False, dev=True)
    if follow and len(targets) > 1:
        raise UsageError("--follow takes one host")
    actions.contact(inventory, targets, note, act=False)()  # on stderr, before the log: a follow never ends by itself
    failed = False
    for target in targets:
        if len(targets) > 1:
            print(render.log_header(target.name))
        with open_runner(target) as runner:
            failed |= ctlcalls.logs(runner, target, service, int(lines), follow, raw, float(timeout)) != 0
    if failed:
        raise Exit(code=1)


@task(help={"port": "dashboard port (default: the local host's dashboard_port)",
            "reload": "restart the dashboard on the held socket when its code changes",
            "force": "replace a foreign holder of the port", "takeover": HELP["takeover"]})
@one_line_error
def dev(c, port=None, reload=False, force=False, takeover=False):
    """This machine's stack in the foreground: dashboard (+ bot), logs streamed; Ctrl+C stops it all."""
    inventory, (local,) = select(None, False)
    checks = None
    if local.bot_command:  # the dev bot too must not be a second copy of one a host runs
        checks = guarded(inventory, [local], takeover, act=False).checks_for(local)  # dev: this machine's own
    argv = devstack.dev_argv(local, port and int(port), reload, force, checks)
    os.chdir(ROOT)
    # exec: Ctrl+C reaches the supervisor's whole process group, so nothing is left holding the port
    os.execv(argv[0], argv)
