"""Follow the bot's log the way `tail -F` does: across rotation (new inode) and truncation.

Polling, not inotify: it is standard library only, works on Termux, and a quarter-second poll keeps
new lines well within the one second the page promises.
"""

import io
import os
from collections import deque
from typing import List, Optional


def last_lines(path: str, count: int = 200, end: Optional[int] = None) -> List[str]:
    """The last ``count`` lines of a file (of its first ``end`` bytes: where a LogFollower made just
    before starts, so that no line is lost or shown twice between the two), or [] when it does not exist.
    Reads backwards from the end in blocks, never the whole file: a log may be large."""
    try:
        with open(path, "rb") as handle:
            pos = handle.seek(0, os.SEEK_END) if end is None else min(end, handle.seek(0, os.SEEK_END))
            data, limit = b"", pos
            while pos > 0 and data.count(b"\n") <= count and limit - pos < TAIL_BYTES:
                step = min(BLOCK, pos)
                pos -= step
                handle.seek(pos)
                data = handle.read(step) + data
    except OSError:
        return []
    # lines end at \n alone, as LogFollower's do: a \r stays in its line, for the operator's side to show
    # as \r (or, with logs --raw, to pass on as it is)
    text = io.StringIO(data.decode("utf-8", "replace"), newline="\n")
    lines = [line.rstrip("\n") for line in deque(text, maxlen=count + 1)]
    if pos > 0 and len(lines) > count:  # the first line read may be the end of a longer one
        lines = lines[1:]
    return lines[-count:] if count else []


BLOCK = 64 * 1024
#: at most this much of a file is read for its last lines (a line of megabytes is not a log line)
TAIL_BYTES = 8 * 1024 * 1024


HEAD_BYTES = 64


class LogFollower:
    """Returns the lines appended since the previous ``poll()``; starts at the current end.

    A rotated file is a new inode; a truncated one is shorter than what we read, or, when it was
    rewritten to the same length or longer, no longer starts with the bytes it started with.
    Either way it is read again from the start.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._inode: Optional[int] = None
        self._offset = 0
        self._head = b""
        self._mtime = 0
        self._partial = ""
        try:
            st = os.stat(path)
            self._inode, self._offset, self._mtime = st.st_ino, st.st_size, st.st_mtime_ns
            self._head = self._read_head()
        except OSError:
            pass

    @property
    def offset(self) -> int:
        """Where the next poll() starts reading: what came before is not this follower's to return."""
        return self._offset

    def _read_head(self) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read(min(HEAD_BYTES, self._offset))

    def poll(self) -> List[str]:
        try:
            st = os.stat(self.path)
            if st.st_ino == self._inode and (st.st_size, st.st_mtime_ns) == (self._offset, self._mtime):
                return []
            self._mtime = st.st_mtime_ns
            if st.st_ino != self._inode or st.st_size < self._offset or self._read_head() != self._head:
                self._inode, self._offset, self._head, self._partial = st.st_ino, 0, b"", ""
            if st.st_size == self._offset:
                return []
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read(1 << 20)
        except OSError:
            return []  # rotated away and not yet recreated: keep waiting
        self._offset += len(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head = self._read_head()
        text = self._partial + chunk.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return lines
