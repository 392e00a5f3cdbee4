"""How a browser signs in to the fleet page without the one-time token on any command line.

`ps` shows every user's command lines, so the browser is not opened on a URL holding the token: as
Jupyter does, it is opened on a private file (mode 600, in a new directory of mode 700) that goes on
to `/login?token=...`. The fleet's cookie is SameSite=Strict, and a browser sends none on a navigation
that a `file://` page started, even on its redirect back to our own `/`: so `/login` answers with
LANDING, a page of ours that goes on to `/`, a navigation of our own origin, which carries the cookie.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

#: the answer to a good token (then on to the fleet page from our own origin)
LANDING = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" '
           'content="0;url=/"><title>sulfur-ops fleet: signing in</title></head><body><p>Signed in: '
           '<a href="/">the fleet page</a></p></body></html>')
LANDING_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Referrer-Policy": "no-referrer"}
#: the private file the browser is opened on
OPENER = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" '
          'content="0;url={url}"><title>sulfur-ops fleet</title></head><body><p>This page signs you in '
          'to <a href="{url}">the fleet page</a> (once).</p></body></html>\n')


def _base() -> Path:
    """Where the file's directory goes: the user's data dir, as Jupyter keeps its own (a browser from
    a snap, Ubuntu's default, has a /tmp of its own and cannot open a file in this machine's /tmp)."""
    root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "sulfur-ops" / "sign-in"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def write(url: str) -> Path:
    """A new private file that takes the browser to ``url`` (which holds the token): mode 600, created
    exclusively in a directory of its own that no one else can enter or could have named first."""
    folder = tempfile.mkdtemp(prefix="sulfur-fleet-", dir=str(_base()))
    path = Path(folder) / "sign-in.html"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(OPENER.format(url=html.escape(url)))
    return path


def remove(path: Optional[Path]) -> None:
    """The file and its directory, gone (the fleet is stopping; the token was good for this run only)."""
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)
