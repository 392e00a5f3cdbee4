"""`invoke run -- CMD ARGS...`: a one-off command on each host (a migration, a script, a look around).

It runs on the host from the current release, with its venv first on PATH and the bot's environment,
as a deploy hook does (remote/host/releases/oneoff.py); no stdin and no terminal there. Its output
comes back as it is written, each line prefixed by the host's name (stderr's lines on stderr), and
each host answers with the command's exit status.

The words come from the raw argv, after the first ``--``: Invoke hands a task what follows ``--``
joined with spaces, which would lose every quote ("a b" and a b would be the same). They are exec'd
as given on the host, unless ``shell``, which hands them to `sh -c` joined by spaces.

A run changes what it likes on a host, so it is fenced and holds the host's operator lock, as a
deploy does; with ``lock`` off (read-only commands while a deploy runs) it only reports fencing.
Ctrl+C stops every host's command (its whole process group) and still collects their answers.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import IO, Any, Callable, Dict, List

from remote.host.releases.oneoff import LOCK_WAIT, MAX_TIMEOUT

from . import ctlcalls, render
from .actions import contact
from .connections import Runner
from .errors import UsageError
from .fanout import DEFAULT_PARALLEL, on_hosts_until
from .inventory import Host, Inventory
from .release import operator

#: exit status of `invoke run` stopped by Ctrl+C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130


def command_words(argv: List[str]) -> List[str]:
    """The command's words as typed: what follows the first ``--`` of the raw argv (as Invoke splits it),
    or UsageError when there is none."""
    words = argv[argv.index("--") + 1:] if "--" in argv else []
    if not words:
        raise UsageError("name the command after --: invoke run --host H -- CMD ARGS... "
                         "(a shell line: invoke run --shell -- 'CMD | CMD')")
    if any("\0" in word for word in words):
        raise UsageError("a word of the command has a NUL character, which no command line can carry")
    return words


def printer(host: Host, out: IO[str], err: IO[str], raw: bool = False) -> Callable[[str], None]:
    """A host's output lines ("out TEXT" / "err TEXT" from the host) to ``out`` or ``err``, prefixed by
    its name, control characters escaped (a host's words on this terminal; ``raw``: as they are), one
    write per line."""
    prefix = render.escape(host.name) + ": "

    def report(line: str) -> None:
        label, _, text = line.partition(" ")
        stream = err if label == "err" else out
        stream.write(prefix + text + "\n" if raw else render.progress_line(host.name, text))
        stream.flush()

    return report


def run(inventory: Inventory, targets: List[Host], words: List[str], shell: bool = False, timeout: float = 300.0,
        lock: bool = True, say: Callable[[str], None] = print, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr,
        parallel: int = DEFAULT_PARALLEL, stop: threading.Event | None = None, raw: bool = False
        ) -> List[Dict[str, Any]]:
    """``words`` on each target; one answer per host (exit status, seconds; ``stopped`` after Ctrl+C)."""
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise UsageError("--timeout must be over 0 and at most %g seconds (a day), not %g" % (MAX_TIMEOUT, timeout))
    contact(inventory, targets, say, act=lock)()
    stop = stop or threading.Event()
    options: Dict[str, Any] = {"argv": words, "shell": shell, "timeout": timeout, "lock": lock, "by": operator(),
                               "lock_timeout": LOCK_WAIT}

    def one(runner: Runner, host: Host) -> Dict[str, Any]:
        return ctlcalls.call_ctl(runner, host, "run", options, timeout=timeout + LOCK_WAIT + 60,
                                 progress=printer(host, out, err, raw), stop=stop)

    docs = on_hosts_until(targets, one, stop, parallel)
    if stop.is_set():
        for doc in docs:
            if not doc.get("ok") and doc.get("exit") is None:  # not one that had ended by itself
                doc["stopped"] = True
    return docs


def exit_status(docs: List[Dict[str, Any]]) -> int:
    """0 when every host's command succeeded, INTERRUPTED after Ctrl+C, else 1 (one failed or timed out)."""
    if any(d.get("stopped") for d in docs):
        return INTERRUPTED
    return 0 if all(d.get("ok") for d in docs) else 1
