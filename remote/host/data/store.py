"""Where the bot's data lives on a host, so that a restore switches all of it in one step.

Before any restore, each shared_paths entry is a plain directory in shared/ (releases link to it).
A restore must replace several of them at once, old or new and never a mix, so the first data
operation adopts them into a *generation*: ``shared/.sulfur-data/gN/<entry>``, with
``shared/.sulfur-data/live -> gN`` and each ``shared/<entry> -> .sulfur-data/live/<entry>``. Releases
keep linking to ``shared/<entry>`` as before; a restore builds the next generation beside the live one
and renames one link (as `current` is for releases). ``shared/.data-id`` is linked the same way: the
id travels with the data it names.

Everything here runs with the bot stopped and under the host's operator lock, except ``tidy``'s
callers' reads. A crash between two steps of ``adopt`` leaves an entry moved but not linked yet; the
next ``adopt`` finishes it, and a deploy calls ``repair`` before it would create an empty directory
in its place.
"""

import os
import re
import subprocess
import sys

from remote.host.common.paths import DATA_NAMES, inside, remove

STORE, DATA_ID, KEPT_MARK = DATA_NAMES
LIVE = "live"
KEPT = "kept-"  # a generation a restore replaced, kept until pack.py has made its snapshot
TRASH = "trash-"  # a packed generation on its way out
_GENERATION = re.compile(r"g([0-9]{1,9})")


def store_dir(paths):
    return os.path.join(paths.shared, STORE)


def live_link(paths):
    return os.path.join(store_dir(paths), LIVE)


def live_dir(paths):
    """The live generation's directory, or None before the first adoption."""
    link = live_link(paths)
    if not os.path.islink(link):
        return None
    target = os.readlink(link)
    if not _GENERATION.fullmatch(target) or not os.path.isdir(os.path.join(store_dir(paths), target)):
        return None
    return os.path.join(store_dir(paths), target)


def adopted(paths):
    return live_dir(paths) is not None


def relink(path, target):
    """``path`` -> ``target``, atomically (a new link renamed over the old one), and on disk."""
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    os.symlink(target, tmp)
    os.replace(tmp, path)
    _sync_dir(os.path.dirname(path))


def _sync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _generations(paths):
    found = []
    for name in os.listdir(store_dir(paths)) if os.path.isdir(store_dir(paths)) else []:
        match = _GENERATION.fullmatch(name)
        if match:
            found.append(int(match.group(1)))
    return found


def next_generation(paths):
    """A name for the next generation: one more than any there is (never reused)."""
    return "g%d" % (max(_generations(paths) or [0]) + 1)


def _entry_link(paths, name):
    """The link's text for shared/NAME: relative, so app_dir can move."""
    top = os.path.join(paths.shared, name)
    return os.path.relpath(os.path.join(live_link(paths), name), os.path.dirname(top))


def adopt(paths, names):
    """The old layout's directories (and shared/.data-id) moved into the live generation and linked;
    a first generation made when there is none. Idempotent; finishes an adoption cut short."""
    store = store_dir(paths)
    os.makedirs(store, mode=0o700, exist_ok=True)
    if live_dir(paths) is None:
        first = os.path.join(store, next_generation(paths))
        os.makedirs(first, mode=0o700)
        relink(live_link(paths), os.path.basename(first))
    live = live_dir(paths)
    for name in list(names) + [DATA_ID]:
        top = os.path.join(paths.shared, name)
        inner = os.path.join(live, name)
        if os.path.islink(top) and os.readlink(top) == _entry_link(paths, name):
            continue
        if os.path.lexists(top):
            if os.path.islink(top):  # not ours (shared_paths checks refuse a link out of shared/)
                remove(paths.shared, top)
            else:
                os.makedirs(os.path.dirname(inner), mode=0o700, exist_ok=True)
                os.rename(top, inner)
        elif name != DATA_ID and not os.path.exists(inner):
            os.makedirs(inner, mode=0o700)
        os.makedirs(os.path.dirname(top), mode=0o700, exist_ok=True)
        relink(top, _entry_link(paths, name))


def repair(paths, names):
    """Before a deploy links shared/NAME: an entry an adoption moved but did not link yet is linked,
    never replaced by an empty directory. Nothing to do on a host that never adopted."""
    if not adopted(paths):
        return
    missing = [name for name in list(names) + [DATA_ID] if not os.path.lexists(os.path.join(paths.shared, name))]
    if missing:
        adopt(paths, names)


def incoming(paths):
    """A new, private directory in the store to build the next generation in."""
    os.makedirs(store_dir(paths), mode=0o700, exist_ok=True)
    path = os.path.join(store_dir(paths), "incoming-%d-%s" % (os.getpid(), os.urandom(4).hex()))
    os.mkdir(path, 0o700)
    return path


def switch(paths, built):
    """``built`` (complete, in the store) becomes the live generation in one rename of the link; the
    old generation is then kept for pack.py (when a restore marked it with KEPT_MARK: its snapshot is
    made after the switch, off the failover's path) or removed. Old data or new, never a mix,
    whenever this is killed."""
    if not inside(store_dir(paths), built):
        raise ValueError("%s is not in %s" % (built, store_dir(paths)))
    old = live_dir(paths)
    final = os.path.join(store_dir(paths), next_generation(paths))
    _sync_tree(built)
    os.rename(built, final)
    _sync_dir(store_dir(paths))
    relink(live_link(paths), os.path.basename(final))
    if old:
        _retire(paths, old)
    return final


def _retire(paths, old):
    """A generation no longer live: to kept-<name> when marked (its data still to be snapshotted), else gone."""
    if os.path.isfile(os.path.join(old, KEPT_MARK)):
        os.rename(old, os.path.join(store_dir(paths), KEPT + os.path.basename(old)))
        _sync_dir(store_dir(paths))
    else:
        remove(store_dir(paths), old, ignore_errors=True)


def pending(paths):
    """The kept generations whose snapshot is still to be made (oldest first)."""
    store = store_dir(paths)
    try:
        names = [n for n in os.listdir(store) if n.startswith(KEPT) and _GENERATION.fullmatch(n[len(KEPT):])]
    except OSError:
        return []
    names.sort(key=lambda n: int(n[len(KEPT) + 1:]))
    return [os.path.join(store, n) for n in names if os.path.isfile(os.path.join(store, n, KEPT_MARK))]


def discard(paths, kept):
    """A packed generation gone: renamed out of the way first (one step), so that a removal cut short
    never leaves a half-empty generation that still looks like one to pack."""
    trash = os.path.join(store_dir(paths), TRASH + os.path.basename(kept) + "-" + os.urandom(3).hex())
    os.rename(kept, trash)
    _sync_dir(store_dir(paths))
    remove(store_dir(paths), trash, ignore_errors=True)


def _sync_tree(top):
    """Every file of a generation on disk before its link is switched: a power cut after the switch
    must find the new data, not empty files."""
    for folder, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(folder)


def tidy(paths):
    """What a killed restore left: unfinished incoming directories, generations no link names (kept
    when marked, else removed). Only under the host's operator lock (no restore is running then)."""
    store = store_dir(paths)
    if not os.path.isdir(store):
        return
    live = live_dir(paths)
    for name in os.listdir(store):
        path = os.path.join(store, name)
        if name.startswith(("incoming-", TRASH)):
            remove(store, path, ignore_errors=True)
        elif _GENERATION.fullmatch(name) and live and path != live:
            _retire(paths, path)  # killed between the switch and the retirement: kept if it was to be


def spawn_packer(paths):
    """pack.py, detached (its own session, no stdio of the ctl's: the operator does not wait for it)."""
    code = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    paths.make()
    with open(paths.log("supervisor"), "ab") as log:
        subprocess.Popen([sys.executable, "-S", "-m", "remote.host.data.pack", paths.app_dir], cwd=code,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
