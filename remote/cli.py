"""What every task of tasks.py shares: the flags' help, the one handler that turns a SulfurError into
one line and an exit status, choosing hosts, the guard before a start, and printing what came back.

tasks.py stays a list of tasks (flags in, one library call, one renderer out); this is the glue they
have in common, so that adding a task adds its own lines only.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from invoke import Exit

from .errors import SulfurError
from .fanout import DEFAULT_PARALLEL
from .inventory import Host, Inventory, load
from .lazy import Lazy

if TYPE_CHECKING:
    from .botguard import Guard


actions, devstack, render = Lazy("remote.actions"), Lazy("remote.devstack"), Lazy("remote.render")

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


def help_for(*names: str) -> Dict[str, str]:
    """Invoke refuses help for a parameter a task does not have: each task names its own."""
    return {name: HELP[name] for name in names}


USAGE = {  # for `invoke add-host --help`, which invoke hands over as NAME (the positional argument comes first)
    "add-host": "usage: invoke add-host NAME --hostname H [--port P] [--user U] [--termux] [--group G] "
                "[--accept-new]; every flag: invoke --help add-host",
    "remove-host": "usage: invoke remove-host NAME (invoke --help remove-host)",
}


def one_line_error(body: Callable[..., Any]) -> Callable[..., Any]:
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


def hosts_of(host: str | None, all_: bool, dev: bool = False) -> List[Host]:
    return select(host, all_, dev)[1]


def select(host: str | None, all_: bool, dev: bool = False) -> Tuple[Inventory, List[Host]]:
    """(the inventory, the hosts --host/--all name). With ``dev``, no --host means this machine's
    running stack: the one `invoke dev` runs, while it runs (devstack.select; and say so), else the local host."""
    inventory = load()
    targets = devstack.select(inventory, host, all_) if dev else inventory.select(host, all_)
    if targets and targets[0].dev_settings is not None:
        print(render.dev_stack_note(targets[0]), file=sys.stderr, flush=True)
    return inventory, targets


def guarded(inventory: Inventory, targets: List[Host], takeover: bool, env_file: Any = None,
            act: bool = True) -> Guard:
    """Ask the hosts what they run (in parallel, while the targets connect); fence the stale ones
    (``act``); refuse targets that would run the same bot as each other before anything starts."""
    from .botguard import Guard, refuse_conflicts

    guard = Guard(inventory, targets, takeover, env_file)
    actions.fence(inventory, guard, act, say=note)  # first: a stale host stood down is no conflict
    refuse_conflicts(guard)
    if takeover:
        print("TAKEOVER: a host that cannot be reached does not block starting the bot", file=sys.stderr, flush=True)
    return guard


def note(line: str) -> None:
    """A line about another matter than the task's own output (fencing): stderr, escaped (a host's words)."""
    print(render.escape(line), file=sys.stderr, flush=True)


def reporter(target: Host, stream: Any) -> Callable[[str], None]:
    """A host's progress lines ("pi: switching to ..."), one write per line: hosts report from parallel
    threads. With --json they go to stderr, so that stdout is the JSON alone."""
    def report(line: str) -> None:
        stream.write(render.progress_line(target.name, line))
        stream.flush()

    return report


def finish(docs: List[Dict[str, Any]], text: str, as_json: bool) -> None:
    print(render.as_json(docs) if as_json else text)  # the renderers escaped every host string
    if not all(d.get("ok") for d in docs):
        raise Exit(code=1)


def asked_for_help(name: str, task_name: str) -> bool:
    """True, once the usage is printed, when NAME is really --help or -h."""
    if name in ("--help", "-h"):
        print(USAGE[task_name])
    return name in ("--help", "-h")


def say(line: str) -> None:
    print(render.escape(line), flush=True)


def ask(question: str) -> bool:
    """One answer from stdin; no answer (end of input) is no."""
    sys.stdout.write(render.escape(question))
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def line(stream: Any, text: str) -> None:
    """A progress line, flushed: the user watches it as it happens."""
    print(text, file=stream, flush=True)


