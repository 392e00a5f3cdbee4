"""`ctl watch`: one JSON line whenever the host's state changes, and each new history sample, until
the operator goes away (the SSH channel closes, or ETX: wire.Stdin.closed).

The status comes first, then the backlog (`since`: only what is newer), so a page has the states
and the last 24 h the moment it opens. The backlog is thinned to BACKLOG_POINTS (a chart has fewer
pixels than a day has samples, and a day at full rate is 650 KB of JSON per host); the samples after
it come one by one. Watching costs two stat() calls per poll: nothing is computed unless a file
changed.
"""

import json
import os
import sys

from remote.host.common import backupstate, history, wire
from remote.host.common.files import Layout
from remote.host.supervision import stack

POLL = 0.5
BACKLOG_POINTS = 1440  # one per minute over 24 h


def _mtime(path):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def emit(doc, out=sys.stdout):
    out.write(json.dumps(dict(doc, protocol=wire.agreed())) + "\n")
    out.flush()


def _marks(paths):
    """What a new status is sent for: the state, the bot's role and epoch (fencing reads them), and
    the last snapshot and the replicas held (the page shows their age, and replicates a new one)."""
    return (_mtime(paths.state), _mtime(paths.bot_role), _mtime(paths.bot_epoch),
            _mtime(os.path.join(paths.run, "backups.json")), backupstate.replicas_mark(paths))


def watch(app_dir, since, stdin, token_env=None, poll=POLL, out=sys.stdout):
    paths = Layout(app_dir)
    ring = history.path(paths)
    seen_ring = _mtime(ring)
    records = history.read(ring, since)
    seen_state = _marks(paths)
    emit({"kind": "status", "status": stack.status(app_dir, token_env)}, out)
    emit({"kind": "history", "interval": history.INTERVAL,
          "samples": history.thin(history.columns(records), BACKLOG_POINTS)}, out)
    newest = records[-1]["t"] if records else since
    while True:
        state = _marks(paths)
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
