"""Work off the supervisor's loop: a long job (a snapshot, an HTTP call, a slow tool) runs in a thread
or a child process, with a deadline, and the loop collects its outcome on a later turn.

Why: the loop answers signals, READY=1, the bot's watchdog and restarts every tick; one call that
blocks for 30 s (an unreachable host, a 50 MB copy) would stall all of them. A job gets its arguments,
returns a value or raises, and never touches the supervisor's state: its ``on_done`` runs later on the
loop's own thread, from ``collect()``, where changing state is safe.

A thread past its deadline cannot be stopped, only forgotten: its late result is dropped and its
outcome says ``timed_out``. Work that must really end at its deadline runs as a child process
(``process()``), which ``subprocess.run`` kills then. A finished job wakes the loop through ``wake``
(the supervisor's self-pipe), so an outcome is collected at once, not at the next tick.
"""

import collections
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from remote.host.common import wire

#: at most this much of a child process's output is kept (its tail): a flood costs no memory
OUTPUT_TAIL = 64 * 1024


class Outcome:
    """How a job ended: ``ok`` with ``value``, or not, with ``error`` (one line); ``timed_out`` when its
    deadline passed first. ``seconds`` is measured on the monotonic clock."""

    def __init__(self, name: str, ok: bool, value: Any = None, error: Optional[str] = None,
                 seconds: float = 0.0, timed_out: bool = False):
        self.name, self.ok, self.value, self.error = name, ok, value, error
        self.seconds, self.timed_out = seconds, timed_out

    def __repr__(self) -> str:
        return "Outcome(%r, ok=%r, error=%r, %.2f s%s)" % (
            self.name, self.ok, self.error, self.seconds, ", timed out" if self.timed_out else "")


class _Job:
    def __init__(self, ident: int, name: str, started: float, deadline: float,
                 on_done: Optional[Callable[[Outcome], None]]):
        self.ident, self.name, self.started, self.deadline, self.on_done = ident, name, started, deadline, on_done


class Jobs:
    """The jobs a loop has running; ``collect()`` on every turn hands it the finished ones."""

    def __init__(self, wake: Optional[Callable[[], None]] = None, clock: Callable[[], float] = time.monotonic,
                 limit: int = 8):
        self.wake, self.clock, self.limit = wake, clock, limit
        self._running: Dict[int, _Job] = {}
        self._finished: Deque = collections.deque()  # (ident, ok, value, error): appended by job threads
        self._ids = itertools.count(1)

    def thread(self, name: str, fn: Callable[..., Any], *args: Any, deadline: float,
               on_done: Optional[Callable[[Outcome], None]] = None) -> Optional[int]:
        """Run ``fn(*args)`` in a daemon thread; its outcome reaches ``on_done`` within ``deadline``
        seconds. Returns the job's id, or None when ``limit`` jobs already run (the caller decides
        whether to try again: a loop must not pile up threads behind a dead host)."""
        if len(self._running) >= self.limit:
            return None
        job = _Job(next(self._ids), name, self.clock(), self.clock() + deadline, on_done)
        self._running[job.ident] = job

        def body() -> None:
            try:
                result = (job.ident, True, fn(*args), None)
            except Exception as exc:  # the job's failure is its outcome, never the loop's
                result = (job.ident, False, None, ("%s: %s" % (type(exc).__name__, exc)).splitlines()[0])
            self._finished.append(result)
            if self.wake:
                self.wake()

        threading.Thread(target=body, name="job-" + name, daemon=True).start()
        return job.ident

    def process(self, name: str, argv: Sequence[str], deadline: float, stdin: Optional[bytes] = None,
                env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                on_done: Optional[Callable[[Outcome], None]] = None) -> Optional[int]:
        """Run ``argv`` as a child process, killed at ``deadline``. The outcome's value is
        ``(returncode, the tail of its output)``: ok means it ran to its end, the caller judges the status."""
        return self.thread(name, run_process, list(argv), deadline, stdin, env, cwd, deadline=deadline + 5,
                           on_done=on_done)

    def collect(self) -> List[Outcome]:
        """The outcomes of the jobs that finished or passed their deadline since the last call, each
        also handed to its ``on_done`` (here, on the caller's thread)."""
        outcomes, now = [], self.clock()
        while self._finished:
            ident, ok, value, error = self._finished.popleft()
            job = self._running.pop(ident, None)
            if job is not None:  # None: it had timed out already, its late result is dropped
                outcomes.append((job, Outcome(job.name, ok, value, error, now - job.started)))
        for ident, job in list(self._running.items()):
            if now >= job.deadline:
                del self._running[ident]
                outcomes.append((job, Outcome(job.name, False, None, "no result within %.0f s" % (
                    job.deadline - job.started), now - job.started, timed_out=True)))
        for job, outcome in outcomes:
            if job.on_done is not None:
                try:
                    job.on_done(outcome)
                except Exception as exc:  # a bug in one job's handler must not end the supervisor's loop
                    outcome.ok, outcome.error = False, "its handler failed: %s: %s" % (type(exc).__name__, exc)
        return [outcome for _, outcome in outcomes]

    def due_in(self) -> Optional[float]:
        """Seconds until the nearest deadline (the loop's select timeout may not pass it), or None."""
        if not self._running:
            return None
        return max(0.0, min(job.deadline for job in self._running.values()) - self.clock())

    def names(self) -> List[str]:
        return [job.name for job in self._running.values()]


def run_process(argv: List[str], timeout: float, stdin: Optional[bytes] = None,
                env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> tuple:
    """(returncode, output tail as text): the child is killed at ``timeout`` (TimeoutExpired raised).
    Output goes to an unnamed temporary file, not a pipe, so a chatty child never fills memory."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(argv, input=stdin, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                              env=env, cwd=cwd, stdin=None if stdin is not None else subprocess.DEVNULL)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        return proc.returncode, out.read().decode("utf-8", "replace")


def ctl(jobs: "Jobs", name: str, command: str, app_dir: str, options: Dict[str, Any], settings: Dict[str, Any],
        deadline: float, cwd: str, on_done: Callable[[Outcome], None]) -> Any:
    """``python -m remote.host.ctl COMMAND`` as a job, its request on stdin as the operator sends it: the
    supervisor's chores that are ctl's own work (a scheduled snapshot, a takeover's restore) run the
    very code an operator's command runs, in a process of their own."""
    request = dict(wire.header(command), command=command, app_dir=app_dir, options=options, settings=settings)
    argv = [sys.executable, "-S", "-m", "remote.host.ctl", command]
    return jobs.process(name, argv, deadline, stdin=json.dumps(request).encode() + b"\n", cwd=cwd, on_done=on_done)


def ctl_answer(outcome: Outcome) -> Dict[str, Any]:
    """The answer a ctl job printed last ({} when it printed none, or died)."""
    if not outcome.ok:
        return {}
    lines = (outcome.value[1] or "").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
