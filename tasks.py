"""sulfur-ops: Invoke tasks for the Sulfur bot's hosts. Thin on purpose: flags in, remote/ does the work.

With neither --host nor --all a task acts on this machine ("local") through the very same code path.
Exit status: 0 every host succeeded, 1 some host failed, 2 bad inventory or bad arguments.
"""

import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from remote import actions, agentcalls, ctlcalls, devstack, onboard, release, render  # noqa: E402
from remote import failover as moves  # noqa: E402
from remote import plan as plans  # noqa: E402
from remote.botguard import Guard, refuse_conflicts  # noqa: E402
from remote.connections import open_runner  # noqa: E402
from remote.errors import SulfurError, UsageError  # noqa: E402
from remote.fanout import DEFAULT_PARALLEL, in_batches, on_hosts  # noqa: E402
from remote.inventory import inventory_path, load  # noqa: E402

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


def _fail(exc):
    """A SulfurError as the user sees it: one line, and the exit status it carries."""
    return Exit("error: %s" % exc, code=exc.exit_code)


def _hosts(host, all_, dev=False):
    return _select(host, all_, dev)[1]


def _select(host, all_, dev=False):
    """(the inventory, the hosts --host/--all name). With ``dev``, no --host means this machine's
    running stack: the one `invoke dev` runs, while it runs (and say so), else the local host."""
    try:
        inventory = load()
        targets = inventory.select(host, all_)
    except SulfurError as exc:
        raise _fail(exc) from None
    if dev and not host and not all_:
        found = devstack.running_dev(targets[0])
        if found is not None:
            print("this machine: acting on the running dev stack of invoke dev (app dir %s); --host local is "
                  "the inventory's local host" % found.app_dir, file=sys.stderr, flush=True)
            return inventory, [found]
    return inventory, targets


def _guarded(inventory, targets, takeover, env_file=None):
    """Ask the other hosts what they run (in parallel, while the targets connect); refuse targets
    that would run the same bot as each other before anything starts."""
    guard = Guard(inventory, targets, takeover, env_file)
    try:
        refuse_conflicts(guard)
    except SulfurError as exc:
        raise _fail(exc) from None
    if takeover:
        print("TAKEOVER: a host that cannot be reached does not block starting the bot", file=sys.stderr, flush=True)
    return guard


def _reporter(target, stream):
    """A host's progress lines ("pi: switching to ..."), one write per line: hosts report from parallel
    threads. With --json they go to stderr, so that stdout is the JSON alone."""
    def report(line):
        stream.write(render.for_terminal("%s: %s\n" % (target.name, line)))
        stream.flush()

    return report


def _finish(docs, text, as_json):
    print(render.as_json(docs) if as_json else render.for_terminal(text))
    if not all(d.get("ok") for d in docs):
        raise Exit(code=1)


@task
def hosts(c):
    """List the inventory's hosts: name, address, user, platform, groups."""
    try:
        inventory = load()
    except SulfurError as exc:
        raise _fail(exc) from None
    print(render.hosts_table(list(inventory.hosts.values())))


@task(name="add-host", help={
    "name": "the host's name in the inventory", "hostname": "its address or DNS name",
    "port": "SSH port (default 22; with --termux 8022)", "user": "SSH user (default: the inventory's)",
    "termux": "an Android phone running Termux: print its one-time setup first",
    "group": "also put it in this group", "accept_new": "trust the host's key without asking"})
def add_host(c, name, hostname=None, port=None, user=None, termux=False, group=None, accept_new=False):
    """Add a host: fetch its SSH key and ask to trust it, append it to inventory.yml, run doctor on it."""
    if name in ("--help", "-h"):  # invoke hands it over as NAME: the positional argument comes first
        print("usage: invoke add-host NAME --hostname H [--port P] [--user U] [--termux] [--group G] "
              "[--accept-new]; every flag: invoke --help add-host")
        return
    if not hostname:
        raise _fail(UsageError("add-host %s: give its address with --hostname" % name))
    values = {"hostname": hostname}
    if port or termux:
        values["port"] = int(port or 8022)
    if user:
        values["user"] = user
    if termux:
        values.update(platform="termux", python="python")
    path = inventory_path()

    def setup(host):  # the phone's one-time setup, with the key this inventory connects with
        lines = onboard.termux_setup(onboard.public_key(host.identity_file), host.port)
        print("Once, on the phone, in Termux (paste these):\n" + "\n".join("    " + line for line in lines))

    try:
        added = onboard.add(path, name, values, group, accept_new, _say, _ask, setup if termux else None)
    except SulfurError as exc:
        raise _fail(exc) from None
    if added.written:
        print("added %s to %s%s" % (name, path, " (group %s)" % group if group else ""))
    if added.key is None:
        print(render.for_terminal("warning: %s is not reachable yet: %s. Once it is up, run invoke add-host %s "
                                  "--hostname %s%s again to check and trust its key" % (
                                      name, added.problem, name, hostname,
                                      " --port %s" % values["port"] if "port" in values else "")))
        return
    docs = on_hosts([added.host], agentcalls.doctor)
    _finish(docs, render.doctor_report(docs), False)


@task(name="remove-host", help={"name": "the host to take out of the inventory"})
def remove_host(c, name):
    """Take a host out of inventory.yml (and its groups); refused while another host uses it as jump."""
    if name in ("--help", "-h"):
        print("usage: invoke remove-host NAME (invoke --help remove-host)")
        return
    path = inventory_path()
    try:
        groups = onboard.remove(path, name)
    except SulfurError as exc:
        raise _fail(exc) from None
    print("removed %s from %s%s; its known_hosts line stays (ssh-keygen -R to remove it)"
          % (name, path, " and from group %s" % ", ".join(groups) if groups else ""))


def _say(line):
    print(render.for_terminal(line), flush=True)


def _ask(question):
    """One answer from stdin; no answer (end of input) is no."""
    sys.stdout.write(question)
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


@task(name="port-status", help=_help("host", "all", "parallel", "json", "port"))
def port_status(c, host=None, all=False, port=None, json=False, parallel=DEFAULT_PARALLEL):
    """Who holds the dashboard port on each host, via whichever tool that host has."""
    targets = _hosts(host, all, dev=True)
    docs = on_hosts(targets, functools.partial(agentcalls.port_status, port=port and int(port)), parallel)
    _finish(docs, render.port_table(docs), json)


@task(name="free-port", help=_help("host", "all", "parallel", "json", "port", "force", "grace"))
def free_port(c, host=None, all=False, port=None, force=False, grace=3.0, json=False,
              parallel=DEFAULT_PARALLEL):
    """Free the dashboard port: stop our stale dashboard; foreign holders only with --force."""
    targets = _hosts(host, all, dev=True)
    operation = functools.partial(agentcalls.free_port, port=port and int(port), force=force, grace=float(grace))
    docs = on_hosts(targets, operation, parallel)
    _finish(docs, render.free_table(docs), json)


@task(help=_help("host", "all", "parallel", "json"))
def doctor(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Check each host: reachable, auth, platform, python, working port tools, app_dir, disk."""
    targets = _hosts(host, all)
    docs = on_hosts(targets, agentcalls.doctor, parallel)
    _finish(docs, render.doctor_report(docs), json)


def _stack(host, all_, parallel, operation, as_json, text=render.restart_lines, dev=False):
    docs = on_hosts(_hosts(host, all_, dev), operation, parallel)
    _finish(docs, text(docs), as_json)


def _start_bot(host, all_, service, json, parallel, takeover, **options):
    """restart and start: the bot is checked against the other hosts first. Even with --service
    dashboard: a host whose supervisor is down (or must be replaced) starts its bot along with it."""
    inventory, targets = _select(host, all_, dev=True)
    guard = _guarded(inventory, targets, takeover)
    action = "start" if options.pop("start_only", False) else "restart"
    docs = actions.service_action(guard, targets, action, service, parallel, **options)
    _finish(docs, render.restart_lines(docs), json)


@task(help=_help("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"))
def restart(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
            parallel=DEFAULT_PARALLEL):
    """Restart the dashboard (on the held socket) and the bot; start the stack if it is not running."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout))


@task(help=dict(_help("host", "all", "parallel", "json", "service", "force", "timeout", "takeover"),
                reset_budget="forget the bot's starts of the last 24 h (after a spent start budget)"))
def start(c, host=None, all=False, service="all", force=False, timeout=20.0, json=False, takeover=False,
          reset_budget=False, parallel=DEFAULT_PARALLEL):
    """Start the stack, or one service, where it is not running (a running one is left as it is)."""
    _start_bot(host, all, service, json, parallel, takeover, force=force, timeout=float(timeout),
               start_only=True, reset_budget=reset_budget)


@task(help=_help("host", "all", "parallel", "json", "service", "timeout"))
def stop(c, host=None, all=False, service="all", timeout=20.0, json=False, parallel=DEFAULT_PARALLEL):
    """Stop a service, or the whole stack (the port is released)."""
    _stack(host, all, parallel, functools.partial(ctlcalls.stop, service=service, timeout=float(timeout)), json,
           dev=True)


@task(help=_help("host", "all", "parallel", "json"))
def status(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """Services per host: HOST SERVICE STATE PID UPTIME RESTARTS LAST-EXIT BOT-ID DETAIL (failed: last lines)."""
    _stack(host, all, parallel, ctlcalls.status, json, render.status_table, dev=True)


@task(help=_help("host", "all", "parallel", "json", "wheels", "env_file", "timeout", "takeover", "plan", "serial"))
def deploy(c, host=None, all=False, wheels=False, env_file=None, timeout=20.0, json=False, takeover=False,
           plan=False, serial=0, parallel=DEFAULT_PARALLEL):
    """Ship a new release to every host (or --host): switch atomically, verify, roll back on failure."""
    inventory, targets = _select(host, not host)  # deploy goes to every host unless told otherwise
    if not targets:
        raise _fail(UsageError("no hosts to deploy to: add some to the inventory, or use --host local"))
    env_path = Path(env_file).expanduser() if env_file else None
    if env_path is not None and not env_path.is_file():
        raise _fail(UsageError("--env-file %s is not a readable file" % env_path))
    if int(serial) < 0:
        raise _fail(UsageError("--serial %s: give the number of hosts per batch (1 or more)" % serial))
    guard = _guarded(inventory, targets, takeover, env_path)  # a plan too: it says what the deploy would refuse
    if plan:
        return _plan(targets, env_path, json, parallel, guard)
    say = sys.stderr if json else sys.stdout  # progress; with --json, stdout is the JSON alone
    workdir = Path(tempfile.mkdtemp(prefix="sulfur-deploy-"))
    try:
        packages = {}
        for target in targets:  # one package per bot source, shared by the hosts that name it
            if target.source not in packages:
                try:
                    packages[target.source] = release.pack(target.source, wheels, workdir)
                except SulfurError as exc:
                    raise _fail(exc) from None
                pkg = packages[target.source]
                print("packing: %.1f MB%s%s" % (pkg.size / 2**20, ", commit %s" % pkg.commit[:12] if pkg.commit
                                               else "", ", with wheels" if wheels else ""), file=say, flush=True)

        def one(runner, target):
            doc = release.deploy_host(runner, target, packages[target.source], _reporter(target, say), env_path,
                                      float(timeout), guard.checks_for(target))
            if doc.get("ok"):
                doc["timings"]["pack"] = packages[target.source].seconds
            return doc

        def batch(number, total, hosts):
            print("batch %d of %d: %s" % (number, total, ", ".join(h.name for h in hosts)), file=say, flush=True)

        if int(serial):
            docs = in_batches(release.deploy_order(targets), one, int(serial), parallel, batch)
        else:
            docs = on_hosts(targets, one, parallel)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _finish(docs, render.deploy_lines(docs), json)


def _plan(targets, env_path, as_json, parallel, guard):
    """deploy --plan: the contents listed once per bot source, each host asked what would change
    (and whether its bot would pass the exactly-once check, with ``guard``'s answers)."""
    contents = {}
    for target in targets:
        if target.source not in contents:
            try:
                contents[target.source] = release.contents(target.source)
            except SulfurError as exc:
                raise _fail(exc) from None
    docs = on_hosts(targets, lambda runner, t: plans.plan_host(runner, t, contents[t.source], env_path,
                                                               guard.checks_for(t)), parallel)
    _finish(docs, render.plan_lines(docs), as_json)


@task(help=dict(_help("host", "all", "parallel", "json", "to", "timeout", "takeover"),
                force="also go back to a release whose deploy failed (--to)"))
def rollback(c, host=None, all=False, to=None, force=False, timeout=20.0, json=False, takeover=False,
             parallel=DEFAULT_PARALLEL):
    """Go back to the newest healthy release before current (or --to one) and restart on it."""
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
            "timeout": "seconds to wait for each host (default 20)"})
def failover(c, to, from_=None, takeover=False, settle=5.0, timeout=20.0, json=False):
    """Move the bot: stop it where it runs, start it on --to, confirm it stays up; undo if it does not."""
    inventory, _ = _select(None, False)

    def report(step):
        if not json:
            print(render.for_terminal(render.failover_line(step)), flush=True)

    try:
        steps = moves.failover(inventory, to, from_, takeover, float(settle), float(timeout), report)
    except SulfurError as exc:
        raise _fail(exc) from None
    if json:
        print(render.as_json(steps))
    if not all(step["ok"] for step in steps):
        raise Exit(code=1)


@task(help={"port": "loopback port of the page (default 5050)", "no_browser": "print the link, open no browser"})
def fleet(c, port=5050, no_browser=False):
    """Every host on one live page here: states, 24 h charts, restart/stop/start; Ctrl+C stops it."""
    from remote.fleet.server import Fleet

    inventory, _ = _select(None, False)
    page = Fleet(inventory, int(port))
    try:
        page.start()
        print("fleet: %d hosts, page at %s   (Ctrl+C stops)" % (len(page.hosts), page.url()), flush=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(page.url())
        page.wait()
    except KeyboardInterrupt:
        pass
    except SulfurError as exc:
        raise _fail(exc) from None


@task(help=_help("host", "all", "parallel", "json", "remove"))
def autostart(c, host=None, all=False, remove=False, json=False, parallel=DEFAULT_PARALLEL):
    """Start the stack at boot: a systemd user unit (Linux) or a Termux:Boot script (Termux)."""
    _stack(host, all, parallel, functools.partial(ctlcalls.autostart, remove=remove), json, render.autostart_lines)


@task(help=_help("host", "all", "parallel", "json"))
def releases(c, host=None, all=False, json=False, parallel=DEFAULT_PARALLEL):
    """The releases on each host: stamp, commit, who deployed it, which is current."""
    _stack(host, all or not host, parallel, ctlcalls.releases, json, render.releases_table)


@task(help={"host": "one host or group (default: this machine)", "service": "dashboard, bot or supervisor",
            "lines": "lines to show (default 50)", "follow": "keep printing new lines until Ctrl+C",
            "raw": "keep colours and other control characters (only when printing to a terminal)"})
def logs(c, host=None, service="dashboard", lines=50, follow=False, raw=False):
    """Print a service's log from each host; --follow keeps streaming it."""
    targets = _hosts(host, False, dev=True)
    if follow and len(targets) > 1:
        raise _fail(UsageError("--follow takes one host"))
    failed = False
    for target in targets:
        if len(targets) > 1:
            print("==> %s <==" % target.name)
        try:
            with open_runner(target) as runner:
                failed |= ctlcalls.logs(runner, target, service, int(lines), follow, raw and sys.stdout.isatty()) != 0
        except SulfurError as exc:
            raise _fail(exc) from None
    if failed:
        raise Exit(code=1)


@task(help={"port": "dashboard port (default: the local host's dashboard_port)",
            "reload": "restart the dashboard on the held socket when its code changes",
            "force": "replace a foreign holder of the port", "takeover": HELP["takeover"]})
def dev(c, port=None, reload=False, force=False, takeover=False):
    """This machine's stack in the foreground: dashboard (+ bot), logs streamed; Ctrl+C stops it all."""
    inventory, (local,) = _select(None, False)
    checks = None
    if local.bot_command:  # the dev bot too must not be a second copy of one a host runs
        guard = _guarded(inventory, [local], takeover)
        checks = guard.checks_for(local)
    argv = devstack.dev_argv(local, port and int(port), reload, force, checks)
    os.chdir(ROOT)
    # exec: Ctrl+C reaches the supervisor's whole process group, so nothing is left holding the port
    os.execv(argv[0], argv)
