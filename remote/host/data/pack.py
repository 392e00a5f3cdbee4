"""`python -S -m remote.host.data.pack APP_DIR`: the snapshots of the generations restores replaced.

A restore (a failover's carry too) keeps the data it replaces: it marks the live generation with its
snapshot's document (store.KEPT_MARK) and, once the new data is switched in, renames the old one to
``kept-gN`` instead of removing it: O(1) on the failover's path, where writing 50 MB to a Pi's SD card
would add seconds. This process, started detached by the restore, turns each kept generation into
its snapshot in backups/ (gzip level 1, checksummed, retention applied) and then removes it. One at
a time (run/pack.lock: a second one waits); a packer killed on the way leaves the generation whole
(it is renamed out of the way before it is removed), and the next one finishes it. Until then
`invoke backups` lists the snapshot as packing; a failure (no room) is the last backup's result.
"""

import fcntl
import os
import shutil
import sys

from remote.host.common.errors import Failure
from remote.host.common.files import Layout, read_json
from remote.host.data import ops, snapshot, store


def pack(paths):
    """Every kept generation into its snapshot; the stamps made. A second packer waits for the first
    (a restore that ends while one runs must not leave its generation unpacked), then packs what is left."""
    os.makedirs(paths.run, mode=0o700, exist_ok=True)
    made = []
    with open(os.path.join(paths.run, "pack.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kept in store.pending(paths):
            try:
                stamp = pack_one(paths, kept)
            except Exception as exc:  # one generation's failure is its own: it stays, the others go on
                ops.record_result(paths, error="packing the data a restore replaced: %s" % exc, reason="packing")
                continue
            if stamp:
                made.append(stamp)
    return made


def pack_one(paths, kept):
    """One kept generation into its snapshot (once: an archive already there is the one a killed
    packer made), then out of the way in one rename and removed. None when it must wait (no room)."""
    mark = read_json(os.path.join(kept, store.KEPT_MARK))
    if not mark.get("stamp"):
        raise Failure("its record %s is unreadable" % os.path.join(kept, store.KEPT_MARK))
    ops.check_stamp(mark["stamp"])
    names = [n for n in mark.get("shared") or [] if isinstance(n, str)]
    archive = os.path.join(snapshot.backups_dir(paths), mark["stamp"] + ".tar.gz")
    if not (os.path.isfile(archive) and os.path.isfile(snapshot.sidecar(archive))):
        need = sum(os.path.getsize(path) for path, _ in snapshot.data_files(paths, names, kept))
        if shutil.disk_usage(paths.app_dir).free < 2 * need:  # the bot writes on this disk now: leave it room
            raise Failure("%.1f MB to pack and not twice that free: kept as it is in %s" % (need / 2**20, kept))
        for leftover in (archive + ".partial",):
            if os.path.exists(leftover):
                os.unlink(leftover)
        snapshot.take(paths, names, mark.get("reason"), True, root=kept, fixed=mark, check_space=False)
    store.discard(paths, kept)
    limits = mark.get("limits") or [10, 1 << 30]
    ops.prune(snapshot.backups_dir(paths), *limits)
    return mark["stamp"]


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
