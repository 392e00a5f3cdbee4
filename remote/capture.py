"""Bounded capture of a host command's output: a hostile or broken host cannot fill this machine's
memory, nor stall a task for minutes, with an answer of hundreds of megabytes.

invoke keeps every chunk of output in a list and, for its autoresponders, joins the whole list again
after each chunk: a 16 MiB answer cost about 50 s (quadratic) and its full size in memory several
times over. The runners here (``BoundedLocal``, and ssh.QuietStdinRemote through ``handle_output``)
skip the join when nothing watches, and stop at MAX_ANSWER:

- a captured answer (``hide``) over the bound ends the command at once (the local process killed,
  the SSH channel closed) and the call fails with AnswerTooLarge, one line;
- streamed output (``logs``, deploy's progress) keeps flowing to the terminal; only its capture is
  bounded, to the last MAX_ANSWER characters (an answer is the last line).
"""

from __future__ import annotations

from collections import deque
from typing import IO, Any, Callable, List

from invoke.runners import Local

#: the largest answer a host command may give (a status of 10,000 hosts' worth is under 10 MB)
MAX_ANSWER = 16 * 1024 * 1024


class AnswerTooLarge(Exception):
    """Raised in invoke's output thread; connections.run turns it into the host's one-line error."""

    def __init__(self, limit: int) -> None:
        super().__init__("the host's answer is larger than %d MiB: stopped reading it (is the release on the "
                         "host ours?)" % (limit // (1024 * 1024)))


def handle_output(runner: Any, buffer_: List[str], hide: bool, output: IO, reader: Callable) -> None:
    """invoke's Runner._handle_output, bounded (see the module's docstring)."""
    size, tail = 0, deque()
    for data in runner.read_proc_output(reader):
        if not hide:
            runner.write_our_output(stream=output, string=data)
        size += len(data)
        if hide and size > MAX_ANSWER:
            runner.kill()
            buffer_.clear()
            raise AnswerTooLarge(MAX_ANSWER)
        if hide:
            buffer_.append(data)
        else:  # keep the last MAX_ANSWER characters: the answer is the last line
            tail.append(data)
            while size > MAX_ANSWER and len(tail) > 1:
                size -= len(tail.popleft())
        if runner.watchers:
            runner.respond(buffer_ if hide else list(tail))
    if not hide:
        buffer_.extend(tail)


class BoundedLocal(Local):
    """invoke's local runner with the bounded capture."""

    def _handle_output(self, buffer_: List[str], hide: bool, output: IO, reader: Callable) -> None:
        handle_output(self, buffer_, hide, output, reader)
