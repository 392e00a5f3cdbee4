"""`python -S -m remote.host.data.pack APP_DIR`: the snapshots of the generations restores replaced.

A restore (a failover's carry too) keeps the data it replaces: it marks the live generation with its
snapshot's document (store.KEPT_MARK) and, once the new data is switched in, renames the old one to
``kept-gN`` instead of removing it: O(1) on the failover's path, where writing 50 MB to a Pi's SD card
would add seconds. This process, started detached by the restore, turns each kept generation into
its snapshot in backups/ (gzip level 1, checksummed, retention applied) and then removes it. One at
a time (run/pack.lock); a packer killed on the way leaves the generation, which the next restore's
packer (or this command) finishes. Until then `invoke backups` lists the snapshot as packing.
"""

import fcntl
import os
import subprocess
import sys

from remote.host.common.files import Layout, read_json
from remote.host.common.paths import remove
from remote.host.data import retention, snapshot, store


def spawn(paths):
    """The packer, detached (its own session, no stdio of the ctl's: the operator does not wait for it)."""
    code = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    paths.make()
    with open(paths.log("supervisor"), "ab") as log:
        subprocess.Popen([sys.executable, "-S", "-m", "remote.host.data.pack", paths.app_dir], cwd=code,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def pack(paths):
    """Every kept generation into its snapshot; the stamps made. Returns at once when another packer runs."""
    os.makedirs(paths.run, mode=0o700, exist_ok=True)
    made = []
    with open(os.path.join(paths.run, "pack.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return made
        for kept in store.pending(paths):
            mark = read_json(os.path.join(kept, store.KEPT_MARK))
            if not mark.get("stamp"):
                continue
            names = [n for n in mark.get("shared") or [] if isinstance(n, str)]
            doc = snapshot.take(paths, names, mark.get("reason"), True, root=kept, fixed=mark, check_space=False)
            made.append(doc["stamp"])
            remove(store.store_dir(paths), kept, ignore_errors=True)
            limits = mark.get("limits") or [10, 1 << 30]
            for old in retention.plan(snapshot.catalog(snapshot.backups_dir(paths)), *limits):
                remove(snapshot.backups_dir(paths), old["path"], ignore_errors=True)
                remove(snapshot.backups_dir(paths), snapshot.sidecar(old["path"]), ignore_errors=True)
    return made


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m remote.host.data.pack APP_DIR", file=sys.stderr)
        return 2
    os.umask(0o077)
    try:
        os.nice(10)  # behind the bot that has just started on this host, and whatever else it serves
    except OSError:
        pass
    pack(Layout(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
