"""A release's manifest: every file it ships with its sha256, and the digest that names its venv.

The operator writes MANIFEST.json into each release it packs; `deploy --plan` compares the manifest
of the release to ship with the one running, on the host, without writing anything there. A release
from before manifests existed is hashed from its files instead.
"""

import hashlib
import json
import os

from remote.host.common.files import sha256_of

NAME = "MANIFEST.json"
#: what a release holds besides what was packed: its records, its venv link, the unpacked wheels
NOT_SHIPPED = {".venv", "__pycache__", "REVISION.json", NAME, "DEPLOY.json", "_wheels", "_unpack.json"}
LIMIT = 20  # names per kind of change; the rest is a count


def file_digest(path):
    """sha256 of a file's bytes; a symlink is its target, never what it points at."""
    if os.path.islink(path):
        return "link:" + os.readlink(path)
    return sha256_of(path)


def venv_digest(requirements, python, version):
    """The name of venvs/<digest>: the interpreter and the requirements' text (same text, same venv)."""
    digest = hashlib.sha256(("%s\n%s" % (python, version)).encode())
    for text in requirements:
        digest.update(text if isinstance(text, bytes) else text.encode())
    return digest.hexdigest()[:16]


def walk(root):
    """{relative path: digest} of a release's own files (links into shared/ are the host's, not shipped)."""
    files = {}
    root = os.path.realpath(root)
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_SHIPPED and not os.path.islink(os.path.join(folder, d))]
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if name in NOT_SHIPPED or rel == ".env":
                continue
            if os.path.islink(path) and not os.path.realpath(path).startswith(root + os.sep):
                continue  # shared/ links: made on the host by the deploy
            files[rel] = file_digest(path)
    return files


def read(release):
    """The manifest of an installed release: its MANIFEST.json, else hashed from its files."""
    try:
        with open(os.path.join(release, NAME)) as handle:
            files = json.load(handle).get("files")
        if isinstance(files, dict):
            return files
    except (OSError, ValueError, AttributeError):
        pass
    return walk(release)


def _some(names, limit):
    names = sorted(names)
    return {"names": names[:limit], "count": len(names)}


def compare(old, new, limit=LIMIT):
    """What a switch from ``old`` to ``new`` changes: added, changed, removed (``limit`` names each)."""
    return {"added": _some(set(new) - set(old), limit),
            "changed": _some([n for n in set(new) & set(old) if new[n] != old[n]], limit),
            "removed": _some(set(old) - set(new), limit)}


def env_changes(old, new):
    """Names of the .env keys that ``new`` adds, changes or removes; never a value or a hash of one."""
    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k])}
