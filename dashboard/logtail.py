"""Follow the bot's log the way `tail -F` does: across rotation (new inode) and truncation.

Polling, not inotify: it is standard library only, works on Termux, and a quarter-second poll keeps
new lines well within the one second the page promises.
"""

import os
from collections import deque
from typing import List, Optional


def last_lines(path: str, count: int = 200) -> List[str]:
    """The last ``count`` lines of a file, or [] when it does not exist (yet)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
    except OSError:
        return []


class LogFollower:
    """Returns the lines appended since the previous ``poll()``; starts at the current end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._inode: Optional[int] = None
        self._offset = 0
        self._partial = ""
        try:
            st = os.stat(path)
            self._inode, self._offset = st.st_ino, st.st_size
        except OSError:
            pass

    def poll(self) -> List[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []  # rotated away and not yet recreated: keep waiting
        if st.st_ino != self._inode or st.st_size < self._offset:
            # a new file (rotation) or the same file cut short (truncation): read it from the start
            self._inode, self._offset, self._partial = st.st_ino, 0, ""
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(1 << 20)
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return lines
