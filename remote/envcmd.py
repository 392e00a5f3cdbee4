"""`invoke env`, `env-set` and `env-unset`: a host's shared/.env changed key by key, without a deploy.

Values never come from argv (`ps` shows argv to every user of this machine): each one is read from a
hidden prompt on a terminal, else one line per key from stdin, or (``multiline``, one key) all of
stdin. They travel to the host inside the request on the command's stdin and come back nowhere:
answers carry key names only. A change of the bot's token is checked as any start is (the guard: a
token that already runs on another host is refused before anything is written), and changing it on
some hosts of a bot and not the others is refused unless every one is named or ``force``: the bot's
identity would split.
"""

from __future__ import annotations

import getpass
import sys
from typing import IO, Any, Callable, Dict, List

from remote.host.releases.envfile import KEY
from remote.host.supervision.bot import TOKEN_NAMES

from . import ctlcalls, fencing
from .actions import fence
from .botguard import Guard
from .connections import Runner
from .errors import UsageError
from .fanout import DEFAULT_PARALLEL, on_hosts
from .inventory import Host, Inventory
from .release import operator


def check_keys(keys: List[str], multiline: bool) -> List[str]:
    """The --key names, or UsageError (one line, before anything is read or asked)."""
    if not keys:
        raise UsageError("name a variable: --key NAME (its value is asked for, or read from stdin)")
    for key in keys:
        if "=" in key:
            raise UsageError("--key %s: give the name only; the value is read from a hidden prompt or stdin, "
                             "never from the command line, where other users of this machine can see it"
                             % key.split("=", 1)[0])
        if not KEY.fullmatch(key):
            raise UsageError("--key %r is not a variable name (letters, digits and _, not first a digit)" % key)
    if len(set(keys)) != len(keys):
        raise UsageError("a --key is given twice")
    if multiline and len(keys) != 1:
        raise UsageError("--multiline reads one value to the end of stdin: give exactly one --key")
    return keys


def read_values(keys: List[str], multiline: bool, stdin: IO[str] = sys.stdin,
                ask: Callable[[str], str] = getpass.getpass) -> Dict[str, str]:
    """Each key's value: a hidden prompt on a terminal, else a line of stdin each (all of it with
    ``multiline``). A value with a newline needs --multiline; a missing line is an error."""
    if multiline:
        value = stdin.read()
        return {keys[0]: value[:-1] if value.endswith("\n") else value}
    values = {}
    for key in keys:
        if stdin.isatty():
            values[key] = ask("%s (hidden): " % key)
            continue
        line = stdin.readline()
        if not line:
            raise UsageError("stdin ended before the value of %s: give one line per --key (or --multiline)" % key)
        values[key] = line[:-1] if line.endswith("\n") else line
    return values


def token_names(host: Host) -> List[str]:
    return [host.bot_token_env] if host.bot_token_env else list(TOKEN_NAMES)


def _split_refused(inventory: Inventory, targets: List[Host], keys: List[str], guard: Guard, force: bool) -> None:
    """A token changed on some hosts of a bot but not on the others: refused (unless ``force``)."""
    if force:
        return
    named = {t.name for t in targets}
    answers = guard.answers()
    for target in targets:
        if not set(token_names(target)) & set(keys):
            continue
        bot_id = fencing.bot_of(answers.get(target.name) or {})
        others = sorted(name for name, doc in answers.items()
                        if name not in named and bot_id and fencing.bot_of(doc) == bot_id)
        if others:
            raise UsageError("%s's bot token is also on %s: changing it on %s alone would split the bot "
                             "in two; name every host of the bot (--host %s) or --force"
                             % (target.name, ", ".join(others), target.name, ",".join(sorted(named | set(others)))))


def listing(inventory: Inventory, targets: List[Host], parallel: int = DEFAULT_PARALLEL) -> List[Dict[str, Any]]:
    return on_hosts(targets, lambda runner, host: ctlcalls.call_ctl(runner, host, "env"), parallel)


def change(inventory: Inventory, targets: List[Host], values: Dict[str, str], unset: List[str], restart: bool,
           force: bool, say: Callable[[str], None], parallel: int = DEFAULT_PARALLEL,
           timeout: float = 20.0) -> List[Dict[str, Any]]:
    """Set ``values`` and remove ``unset`` on each target (fenced first, guarded for a token change)."""
    if not targets:
        raise UsageError("no hosts: --host NAME or --all")
    keys = list(values) + list(unset)
    guard = Guard(inventory, targets, with_targets=True)
    fence(inventory, guard, True, say=say)
    _split_refused(inventory, targets, keys, guard, force)

    def one(runner: Runner, host: Host) -> Dict[str, Any]:
        options: Dict[str, Any] = {"set": values, "unset": list(unset), "restart": restart, "by": operator(),
                                   "timeout": timeout}
        if set(token_names(host)) & set(keys):
            options["checks"] = guard.checks_for(host)  # the new token must not run elsewhere
        return ctlcalls.call_ctl(runner, host, "env", options, settings=True, timeout=timeout * 3 + 60)

    docs = on_hosts(targets, one, parallel)
    fencing.learn(inventory, docs)
    return docs

