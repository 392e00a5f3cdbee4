"""`ctl watch`: one JSON line whenever the host's state changes, and each new history sample, until
the operator goes away (the SSH channel closes, or ETX: wire.Stdin.closed).

The backlog comes first (`since`: only what is newer), so a page has the last 24 h the moment it
opens. Watching costs two stat() calls per poll: nothing is computed unless a file changed.
"""

import json
import os
import sys

from remote.host import history, stack
from remote.host.files import Layout
from remote.host.wire import PROTOCOL

POLL = 0.5


def _mtime(path):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def emit(doc, out=sys.stdout):
    out.write(json.dumps(dict(doc, protocol=PROTOCOL)) + "\n")
    out.flush()


def watch(app_dir, since, stdin, token_env=None, poll=POLL, out=sys.stdout):
    paths = Layout(app_dir)
    ring = history.path(paths)
    records = history.read(ring, since)
    emit({"kind": "history", "interval": history.INTERVAL, "samples": history.columns(records)}, out)
    newest = records[-1]["t"] if records else since
    seen_state, seen_ring = object(), _mtime(ring)  # the status goes out at once, whatever it is
    while True:
        state = _mtime(paths.state)
        if state != seen_state:
            seen_state = state
            emit({"kind": "status", "status": stack.status(app_dir, token_env)}, out)
        mark = _mtime(ring)
        if mark != seen_ring:
            seen_ring = mark
            for record in history.read(ring, newest):
                newest = record["t"]
                emit(dict(record, kind="sample"), out)
        if stdin.closed(poll):
            return None
