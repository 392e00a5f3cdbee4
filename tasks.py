"""sulfur-ops: Invoke tasks for the Sulfur bot's hosts. Thin on purpose: flags in, remote/ does the work.

A task parses its flags, calls one library function and renders what it returns (remote/render.py);
a SulfurError the library raises ends it as one line through _one_line_error, the only handler here.

With neither --host nor --all a task acts on this machine ("local") through the very same code path.
Exit status: 0 every host succeeded, 1 some host failed, 2 bad inventory or bad arguments.
"""

import functools
import logging
import os
import sys
from pathlib import Path

from invoke import Exit, task

from remote import (
    actions,
    agentcalls,
    ctlcalls,
    dataflows,
    devstack,
    envcmd,
    fencing,
    onboard,
    release,
    render,
    render_data,
)
from remote import failover as moves
from remote import plan as plans
from remote.botguard import Guard, refuse_conflicts
from remote.connections import open_runner
from remote.errors import SulfurError, UsageError
from remote.fanout import DEFAULT_PARALLEL, on_hosts
from remote.inventory import inventory_path, load

ROOT = Path(__file__).resolve().parent

HELP = {
    "host": "host or group names, comma-separated (default: this machine)",
    "all": "every host of the inventory except local",
    "parallel": "hosts worked on at once (default %d)" % DEFAULT_PARALLEL,
    "json": "print JSON instead of a table",
    "port": "port to look at (default: the host's dashboard_port)",
    "force": "also act on a holder of the port that is not ours",
    "grace": "seconds between SIGTERM and SIGKILL (default 3)",
    "service": "dashboard, bot or all (default all)",
    "timeout": "seconds to wait for health (and, but for deploy and rollback, for the host's lock; default 20)",
    "wheels": "build wheels here and install them on the hosts with --no-index (hosts without internet)",
    "env_file": "upload this file as the hosts' shared/.env (mode 600); otherwise .env is never sent",
    "to": "release stamp to go back to (default: the newest healthy one before current)",
    "remove": "remove the autostart instead of installing it",
    "takeover": "start the bot even though an unreachable host was last seen running it",
    "plan": "show what a deploy would change on each host (files, venv, .env keys, hooks, disk); change nothing",
    "serial": "deploy N hosts at a time, standby hosts first; a batch with a failure stops the rest",
}


def _help(*names):
    """Invoke refuses help for a parameter a task does not have: each task names its own."""
    return {name: HELP[name] for name in names}


USAGE = {  # for `invoke add-host --help`, which invoke hands over as NAME (the positional argument comes first)
    "add-host": "usage: invoke add-host NAME --hostname H [--port P] [--user U] [--termux] [--group G] "
                "[--accept-new]; every flag: invoke --help add-host",
    "remove-host": "usage: invoke remove-host NAME (invoke --help remove-host)",
}


def _one_line_error(body):
    """Under every @task: a SulfurError ends the task as the user sees it, one line ("error: ...") and
    the exit status it carries (2 bad input, 1 a failure), never a traceback. The library raises, this
    is the one place that turns it into an exit, so a task body holds no try/except of its own."""
    @functools.wraps(body)  # invoke reads the task's flags from the signature __wrapped__ leads to
    def run(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except SulfurError as exc:
            raise Exit(render.error_line(exc), code=exc.exit_code) from None

    return run


def _hosts(host, all_, dev=False):
    return _select(host, all_, dev)[1]


def _select(host, all_, dev=False):
    """(the inventory, the hosts --host/--all name). With ``dev``, no --host means this machine's
    running stack: the one `invoke dev` runs, while it runs (devstack.select; and say so), else the local host."""
    inventory = load()
    targets = devstack.select(inventory, host, all_) if dev else inventory.select(host, all_)
    if targets and targets[0].dev_settings is not None:
        print(render.dev_stack_note(targets[0]), file=sys.stderr, flush=True)
    return inventory, targets


def _guarded(inventory, targets, takeover, env_file=None, act=True):
    """Ask the hosts what they run (in parallel, while the targets connect); fence the stale ones
    (``act``); refuse targets that would run the same bot as each other before anything starts."""
    guard = Guard(inventory, targets, takeover, env_file)
    actions.fence(inventory, guard, act, say=_note)  # first: a stale host stood down is no conflict
    refuse_conflicts(guard)
    if takeover:
        print("TAKEOVER: a host that cannot be reached does not block starting the bot", file=sys.stderr, flush=True)
    return guard


def _note(line):
    """A line about another matter than the task's own output (fencing): stderr, escaped (a host's words)."""
    print(render.escape(line), file=sys.stderr, flush=True)


def _reporter(target, stream):
    """A host's progress lines ("pi: switching to ..."), one write per line: hosts report from parallel
    threads. With --json they go to stderr, so that stdout is the JSON alone."""
    def report(line):
        stream.write(render.progress_line(target.name, line))
        stream.flush()

    return report


def _finish(docs, text, as_json):
    print(render.as_json(docs) if as_json else text)  # the renderers escaped every host string
    if not all(d.get("ok") for d in docs):
        raise Exit(code=1)


def _asked_for_help(name, task_name):
    """True, once the usage is printed, when NAME is really --help or -h."""
    if name in ("--help", "-h"):
        print(USAGE[task_name])
    return name in ("--help", "-h")


@task
@_one_line_error
def hosts(c):
    """List the inventory's hosts: name, address, user, platform, groups."""
    print(render.hosts_table(list(load().hosts.values())))


@task(name="add-host", help={
    "name": "the host's name in the inventory", "hostname": "its address or DNS name",
    "port": "SSH port (default 22; with --termux 8022)", "user": "SSH user (default: the inventory's)",
    "termux": "an Android phone running Termux: print its one-time setup first",
    "group": "also put it in this group", "accept_new": "trust the host's key without asking"})
@_one_line_error
def add_host(c, name, hostname=None, port=None, user=None, termux=False, group=None, accept_new=False):
    """Add a host: fetch its SSH key and ask to trust it, append it to inventory.yml, run doctor on it."""
    if _asked_for_help(name, "add-host"):
        return
    if not hostname:
        raise UsageError("add-host %s: give its address with --hostname" % name)
    values, path = onboard.entry(hostname, port, user, termux), inventory_path()
    added = onboard.add(path, name, values, group, accept_new, _say, _ask, _termux_setup if termux else None)
    if added.written:
        print("added %s to %s%s" % (name, path, " (group %s)" % group if group else ""))
    if added.key is None:
        print(render.not_reachable(name, added.problem, values))
        return
    docs = on_hosts([added.host], agentcalls.doctor)
    _finish(docs, render.doctor_report(docs), False)


def _termux_setup(host):
    """add-host --termux, before the phone is reached: its one-time setup, with the key this inventory connects with."""
    print(render.termux_setup(onboard.termux_setup(onboard.public_key(host.identity_file), host.port)))


@task(name="remove-host", help={"name": "the host to take out of the inventory"})
@_one_line_error
def remove_host(c, name):
    """Take a host out of inventory.yml (and its groups); refused while another host uses it as jump."""
    if _asked_for_help(name, "remove-host"):
        return
    path = inventory_path()
    groups = onboard.remove(path, name)
    print("removed %s from %s%s; its known_hosts line stays (ssh-keygen -R to remove it)"
          % (name, path, " and from group %s" % ", ".join(groups) if groups else ""))


def _say(line):
    print(render.escape(line), flush=True)


def _ask(question):
    """One answer from stdin; no answer (end of input) is no."""
    sys.stdout.write(render.escape(question))
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


@task(name="port-status", help=_help("host", "all", "parallel", "json", "port"))
@_one_line_error
def port_status(c, host=None, all=False, port=None, json=False, parallel=DEFAULT_PARALLEL):
    """Who holds the dashboard port on each host, via whichever tool that host has."""
    inventory, targets = _select(host, all, dev=True)
    report = actions.contact(inventory, targets, _note, act=False)
    docs = on_hosts(targets, functools.partial(agentcalls.port_status, port=port and int(port)), parallel)
    report()
    _finish(docs, render.port_table(docs), json)


@task(name="free-port", help=_help("host", "all", "parallel", "json", "port", "force", "grace"))
@_one_line_error
def free_port(c, host=None, all=False, port=None, force=False, grace=3.0, json=False,
              parallel=DEFAULT_PARALLEL):
    """Free the dashboard port: stop our stale dashboard; foreign holders only with --force."""
    inventory, targets = _select(host, all, dev=True)
    actions.contact(inventory, targets, _note)()
    operation = functools.partial(agentcalls.free_port, port=port and int(port), force=force, grace=float(grace))
    docs = on_hosts(targets, operation, parallel)
    _finish(docs, render.free_table(docs), json)


@task(help=_help("host", "all", "parallel", "json"))
@_one_line_error
def doctor(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Check each host: reachable, auth, platform, python, working port tools, app_dir, disk, bot epoch."""
    inventory, targets = _select(host, all)
    report = actions.contact(inventory, targets, _note, act=False)
    docs = on_hosts(targets, agentcalls.doctor, parallel)
    report()
    _finish(docs, "\n".join([render.doctor_report(docs)] + render_data.doctor_lines(docs)), json)


def _stack(host, all_, parallel, operation, as_json, text=render.restart_lines, dev=False):
    docs = on_hosts(_hosts(host, all_, dev), operation, parallel)
    _finish(docs, text(docs), as_json)


def _start_bot(host, all_, service, json, parallel, takeover, **options):
    """restart and start: the bot is checked against the other hosts first. Even with --service
    dashboard: a host whose supervisor is down (or must be replaced) starts its bot along with it."""
    inventory, targets = _select(host, all_, dev=True)
    guard = _guarded(inventory, targets, takeover)
    if host and len(targets) == 1 and host == targets[0].name:  # named on its own, not in a group
        actions.refuse_standby(guard, targets[0], service)
    action = "start" if options.pop("start_only", False) else "restart"
    docs = actions.service_action(guard, targets, action, service, parallel, **options)
    _finish(docs, render.restart_lines(docs), json)


@task(help=_help("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"))
@_one_line_error
def restart(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
            parallel=DEFAULT_PARALLEL):
    """Restart the dashboard (on the held socket) and the bot; start the stack if it is not running."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout))


@task(help=dict(_help("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"),
                reset_budget="forget the bot's starts of the last 24 h (after a spent start budget)"))
@_one_line_error
def start(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
          reset_budget=False, parallel=DEFAULT_PARALLEL):
    """Start the stack, or one service, where it is not running (a running one is left as it is)."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout),
               start_only=True, reset_budget=reset_budget)


@task(help=_help("host", "all", "parallel", "json", "service", "timeout"))
@_one_line_error
def stop(c, host=None, all=False, service="all", timeout=20.0, json=False, parallel=DEFAULT_PARALLEL):
    """Stop a service, or the whole stack (the port is released)."""
    inventory, targets = _select(host, all, dev=True)
    actions.contact(inventory, targets, _note)()
    docs = on_hosts(targets, functools.partial(ctlcalls.stop, service=service, timeout=float(timeout)), parallel)
    _finish(docs, render.restart_lines(docs), json)


@task(help=_help("host", "all", "parallel", "json"))
@_one_line_error
def status(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Services per host: HOST SERVICE STATE PID UPTIME RESTARTS LAST-EXIT BOT-ID DETAIL (failed: last lines)."""
    inventory, targets = _select(host, all, dev=True)
    docs = on_hosts(targets, ctlcalls.status, parallel)
    fencing.on_contact(inventory, {d["host"]: d for d in docs}, act=False, say=_note)  # reports, changes nothing
    _finish(docs, "\n".join([render.status_table(docs)] + render_data.status_notes(docs)), json)


def _line(stream, text):
    """A progress line, flushed: the user watches it as it happens."""
    print(text, file=stream, flush=True)


@task(help=_help("host", "all", "parallel", "json", "wheels", "env_file", "timeout", "takeover", "plan", "serial"))
@_one_line_error
def deploy(c, host=None, all=False, wheels=False, env_file=None, timeout=20.0, json=False, takeover=False,
           plan=False, serial=0, parallel=DEFAULT_PARALLEL):
    """Ship a new release to every host (or --host): switch atomically, verify, roll back on failure."""
    inventory, targets = _select(host, not host)  # deploy goes to every host unless told otherwise
    env_path = release.deploy_flags(targets, env_file, serial)
    guard = _guarded(inventory, targets, takeover, env_path, act=not plan)  # a plan says what a deploy would refuse
    if plan:
        docs = plans.plan_hosts(targets, env_path, guard.checks_for, parallel)
        return _finish(docs, render.plan_lines(docs), json)
    say = sys.stderr if json else sys.stdout  # progress; with --json, stdout is the JSON alone
    docs = release.ship(targets, wheels, env_path, float(timeout), guard.checks_for, int(serial), parallel,
                        packed=lambda package: _line(say, render.packed_line(package, wheels)),
                        batch=lambda number, total, hosts: _line(say, render.batch_line(number, total, hosts)),
                        reporter=lambda target: _reporter(target, say))
    _finish(docs, render.deploy_lines(docs), json)


@task(help=dict(_help("host", "all", "parallel", "json", "to", "timeout", "takeover"),
                force="also go back to a release whose deploy failed (--to)"))
@_one_line_error
def rollback(c, host=None, all=False, to=None, force=False, timeout=20.0, json=False, takeover=False,
             parallel=DEFAULT_PARALLEL):
    """Go back to the newest healthy release before current (or --to one) and restart on it."""
    to = ctlcalls.release_name(to)
    inventory, targets = _select(host, all or not host)
    guard = _guarded(inventory, targets, takeover)

    def op(runner, target):
        return ctlcalls.rollback(runner, target, to=to, timeout=float(timeout), by=release.operator(), force=force,
                                 checks=guard.checks_for(target),
                                 progress=_reporter(target, sys.stderr if json else sys.stdout))

    docs = on_hosts(targets, op, parallel)
    _finish(docs, render.rollback_lines(docs), json)


@task(help={"to": "the host to run the bot on", "from_": "the host to take it from (default: whichever runs it)",
            "takeover": "start it on --to even if the host running it cannot be reached",
            "settle": "seconds the bot must stay up on --to (default 5)", "json": "print JSON instead of lines",
            "timeout": "seconds to wait for each host (default 20)",
            "no_data": "do not carry the bot's data (shared_paths) along: for a bot whose data lives elsewhere"})
@_one_line_error
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
@_one_line_error
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


@task(help=_help("host", "all", "parallel", "json", "remove"))
@_one_line_error
def autostart(c, host=None, all=False, remove=False, json=False, parallel=DEFAULT_PARALLEL):
    """Start the stack at boot: a systemd user unit (Linux) or a Termux:Boot script (Termux)."""
    actions.contact(*_select(host, all), _note)()
    _stack(host, all, parallel, functools.partial(ctlcalls.autostart, remove=remove), json, render.autostart_lines)


@task(help=_help("host", "all", "parallel", "json"))
@_one_line_error
def releases(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """The releases on each host: stamp, commit, who deployed it, which is current."""
    inventory, targets = _select(host, all or not host)
    report = actions.contact(inventory, targets, _note, act=False)
    docs = on_hosts(targets, ctlcalls.releases, parallel)
    report()
    _finish(docs, render.releases_table(docs), json)


@task(help={"host": "host or group names (default: each bot's data owner, the holder of its epoch)",
            "all": "also copy each snapshot to the standbys of the same bot (backups/replica/ there)",
            "json": HELP["json"], "parallel": HELP["parallel"]})
@_one_line_error
def backup(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """A snapshot of the bot's data now (SQLite copied consistently), kept on the host and copied here."""
    docs = dataflows.backup(load(), host, all, render_data.progress, parallel)
    render_data.end_progress()
    _finish(docs, render_data.backup_lines(docs), json)


@task(help={"host": "host or group names (default: every host with shared_paths)", "json": HELP["json"],
            "parallel": HELP["parallel"]})
@_one_line_error
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
@_one_line_error
def restore(c, host, from_=None, file=None, yes=False, force=False, json=False):
    """Put a snapshot back: the bot stopped, the data before kept, all of it switched at once, the bot restarted."""
    doc = dataflows.restore(load(), host, from_, file, force, lambda question: yes or _ask(question), _note)
    _finish([doc], render_data.restore_lines(doc), json)


@task(help=_help("host", "all", "parallel", "json"))
@_one_line_error
def env(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """The keys of each host's shared/.env (never their values) and which service sees each."""
    inventory, targets = _select(host, all)
    docs = envcmd.listing(inventory, targets, parallel)
    _finish(docs, render_data.env_table(docs), json)


ENV_HELP = dict(_help("host", "all", "parallel", "json", "force"), key="a variable's name (repeat for more); "
                "never KEY=VALUE", no_restart="change the file only: the services keep the old values until "
                "their next start", force="change the bot's token on some of its hosts only")


@task(name="env-set", iterable=["key"], help=dict(ENV_HELP, multiline="one --key, its value all of stdin (a PEM key)"))
@_one_line_error
def env_set(c, key=None, host=None, all=False, no_restart=False, multiline=False, force=False, json=False,
            parallel=DEFAULT_PARALLEL):
    """Set variables in shared/.env: values from a hidden prompt or stdin; restarts what sees a change."""
    keys = envcmd.check_keys(key, multiline)
    inventory, targets = _select(host, all)
    docs = envcmd.change(inventory, targets, envcmd.read_values(keys, multiline), [], not no_restart, force, _note,
                         parallel)
    _finish(docs, render_data.env_lines(docs), json)


@task(name="env-unset", iterable=["key"], help=ENV_HELP)
@_one_line_error
def env_unset(c, key=None, host=None, all=False, no_restart=False, force=False, json=False, parallel=DEFAULT_PARALLEL):
    """Remove variables from shared/.env; restarts what sees a change."""
    inventory, targets = _select(host, all)
    docs = envcmd.change(inventory, targets, {}, envcmd.check_keys(key, False), not no_restart, force, _note, parallel)
    _finish(docs, render_data.env_lines(docs), json)


@task(help={"host": "one host or group (default: this machine)", "service": "dashboard, bot or supervisor",
            "lines": "lines to show (default 50)", "follow": "keep printing new lines until Ctrl+C",
            "raw": "print the log as it is: colours, and every other control character (not escaped)",
            "timeout": "without --follow: give a host that does not answer up after this many seconds (30)"})
@_one_line_error
def logs(c, host=None, service="dashboard", lines=50, follow=False, raw=False, timeout=30.0):
    """Print a service's log from each host, control characters escaped (--raw: as is); --follow streams it."""
    inventory, targets = _select(host, False, dev=True)
    if follow and len(targets) > 1:
        raise UsageError("--follow takes one host")
    actions.contact(inventory, targets, _note, act=False)()  # on stderr, before the log: a follow never ends by itself
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
@_one_line_error
def dev(c, port=None, reload=False, force=False, takeover=False):
    """This machine's stack in the foreground: dashboard (+ bot), logs streamed; Ctrl+C stops it all."""
    inventory, (local,) = _select(None, False)
    checks = None
    if local.bot_command:  # the dev bot too must not be a second copy of one a host runs
        checks = _guarded(inventory, [local], takeover, act=False).checks_for(local)  # dev: this machine's own
    argv = devstack.dev_argv(local, port and int(port), reload, force, checks)
    os.chdir(ROOT)
    # exec: Ctrl+C reaches the supervisor's whole process group, so nothing is left holding the port
    os.execv(argv[0], argv)
