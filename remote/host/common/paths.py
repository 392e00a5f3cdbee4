"""Which paths a host may touch: release names, shared_paths entries, and the one way anything is removed.

A request names paths (a release to roll back to, directories to keep in shared/, an uploaded .env) and
the host turns them into removals and links. A careless inventory line (`shared_paths: [/srv]`, `[..]`)
or a hostile request must never make that reach past app_dir, so every such name is checked twice:
by its text here (the inventory uses the same functions, so both sides refuse the same names), and on
the host once the links already on disk are followed (``inside``), before anything is removed or linked.
``remove`` is the only way host code deletes under app_dir: it never follows a link, and it refuses a
path whose directories lead out of the directory it is meant to be in.

The layout's own directories (releases/, venvs/, shared/) may themselves be links a user made (to a
larger disk): what is checked is that the part a request or a name adds stays inside them.
"""

import os
import posixpath
import re
import shutil
import time
from typing import Iterable, List, Optional

from remote.host.common.errors import Failure

STAMP = "%Y%m%d%H%M%S"  # a release's name: its UTC time, 14 digits (20260101120000)
_STAMP = re.compile(r"[0-9]{14}")
#: names a release holds for sulfur-ops itself: a shared directory in their place would hide them
RESERVED = (".env", ".venv", "_wheels", "remote", "dashboard", "REVISION.json", "MANIFEST.json", "DEPLOY.json")
#: names in shared/ that hold the bot's data's own bookkeeping (remote/host/data/store.py)
DATA_NAMES = (".sulfur-data", ".data-id", ".sulfur-kept.json")
SHARED_FORMS = "a relative directory inside shared/ such as data or cache/images"


def is_stamp(name: object) -> bool:
    """A release name as hosts make them: 14 digits that are a time (``releases/<stamp>``)."""
    if not isinstance(name, str) or not _STAMP.fullmatch(name):
        return False
    try:
        time.strptime(name, STAMP)
    except ValueError:
        return False
    return True


def stamp_problem(name: object) -> Optional[str]:
    """None for a release name, else why not (a path, a newline, not a time): one clause."""
    if is_stamp(name):
        return None
    return "%r is not a release name (a UTC stamp of 14 digits, such as 20260101120000)" % (name,)


def shared_path_problem(name: object) -> Optional[str]:
    """None for a usable shared_paths entry, else why not: relative, normal, no `..`, not a name the
    release keeps for itself. Text only: ``shared_link_problem`` follows the links on the host."""
    if not isinstance(name, str):
        return "%r is not a directory name" % (name,)
    if not name.strip():
        return "an empty entry names no directory"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "%r has control characters" % name
    if name == ".":
        return "'.' is shared/ itself: name %s" % SHARED_FORMS
    if name.startswith("/"):
        return "%r is absolute: name %s" % (name, SHARED_FORMS)
    if name.startswith("~"):
        return "%r starts with ~ (a home directory, not shared/): name %s" % (name, SHARED_FORMS)
    parts = name.split("/")
    if ".." in parts:
        return "%r has '..': name %s" % (name, SHARED_FORMS)
    if posixpath.normpath(name) != name or "." in parts:
        return "%r is not a normal path (no ./, // or trailing /): write %r" % (name, posixpath.normpath(name))
    if parts[0] in DATA_NAMES:
        return "%r is where sulfur-ops keeps the data's generations and id: name another directory" % name
    if parts[0] in RESERVED:
        return "%r is the release's own (sulfur-ops keeps %s there): name another directory" % (
            name, ", ".join(RESERVED))
    return None


def shared_paths_problem(names: Iterable[object]) -> Optional[str]:
    """``shared_path_problem`` for each entry, and none twice or inside another (it would be linked
    through the other's link, into shared/ itself)."""
    seen: List[str] = []
    for name in names:
        problem = shared_path_problem(name)
        if problem:
            return problem
        for other in seen:
            if name == other:
                return "%r is given twice" % name
            if name.startswith(other + "/") or other.startswith(name + "/"):
                return "%r and %r overlap: keep the outer one only" % (other, name)
        seen.append(str(name))
    return None


def plain(path: str) -> bool:
    """No ``..`` and no ``.`` among its parts and no trailing separator: the kernel follows a link
    before the ``..`` after it, while os.path.abspath drops both as text, so a path with them can name
    another place than the one checked."""
    return bool(path) and not path.endswith(os.sep) and not any(
        part in (".", "..") for part in path.split(os.sep)[1 if path.startswith(os.sep) else 0:])


def inside(root: str, path: str) -> bool:
    """Whether ``path``, with every link on the way followed, is ``root`` (followed too) or under it."""
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def shared_link_problem(shared: str, release: str, name: str) -> Optional[str]:
    """None when shared/NAME stays inside shared/ and release/NAME inside the release once the links
    already there are followed (an existing ``shared/data -> /srv``), else why not: one clause."""
    problem = shared_path_problem(name)
    if problem:
        return problem
    if not inside(shared, os.path.join(shared, name)):
        return "shared/%s leads to %s, outside shared/ (a link on the way): remove that link on the host" % (
            name, os.path.realpath(os.path.join(shared, name)))
    parent = os.path.dirname(os.path.join(release, name))
    if not inside(release, parent):
        return "%s in the release leads to %s, outside the release (a link on the way)" % (
            name, os.path.realpath(parent))
    return None


def shared_problem(shared: str, release: str, names: Iterable[object]) -> Optional[str]:
    """The first problem of a request's shared_paths (their text, then the links on this host), or None."""
    names = list(names or [])
    problem = shared_paths_problem(names)
    for name in [] if problem else names:
        problem = problem or shared_link_problem(shared, release, str(name))
    return problem


def remove(root: str, path: str, ignore_errors: bool = False) -> None:
    """Remove ``path`` (a directory tree, a file, or a link: never what a link points at) when it lies
    under ``root`` once the links of its directories are followed; else Failure, and nothing removed.

    ``ignore_errors`` as shutil.rmtree's (a missing path, a file that will not go); never the refusal."""
    name, parent = os.path.basename(path), os.path.dirname(path)
    if not plain(path) or name in ("", ".", "..") or not inside(root, parent or "."):
        raise Failure("refused to remove %s: it is not inside %s (it leads to %s)"
                      % (path, root, os.path.realpath(path)))
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=ignore_errors)  # never follows the links inside
    except OSError:
        if not ignore_errors:
            raise
