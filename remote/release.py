"""Operator side of a release: pack once, upload over the host's SSH connection, install, switch.

A release is one tar: this project's host side (dashboard/, the agent, supervisor and hostctl) plus the
bot's source tree when the inventory names one. With --wheels a wheelhouse built here rides in the same
tar (_wheels/), for hosts without a package index. The tar travels by SFTP on the connection the task
already has (invoke's stdin path decodes bytes as text, so a tar stream over exec would be corrupted);
for a local host it is copied.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .connections import HostError, Runner, run
from .inventory import Host
from .stack import shell_path

ROOT = Path(__file__).resolve().parent.parent
HOST_FILES = ["dashboard", "remote/__init__.py", "remote/agent.py", "remote/supervisor.py", "remote/hostctl.py"]
NEVER = {".git", ".venv", "__pycache__", ".env", ".pytest_cache", ".ruff_cache", "node_modules"}
WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sulfur-ops" / "wheels"


class ReleaseError(Exception):
    """Bad input found before anything was sent (a missing source, no requirements): one line."""


@dataclass
class Package:
    path: Path          # the tar.gz on this machine
    stamp: str
    commit: Optional[str]
    size: int
    requirements: List[str]


def stamp_now() -> str:
    """UTC, 14 digits, like Capistrano's: sorts by time, names the release."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def _git(source: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def source_files(source: Path) -> List[Path]:
    """The bot's files: git's view (tracked + untracked, .gitignore respected) or a plain walk."""
    listed = _git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is not None:
        names = [Path(n) for n in listed.split("\0") if n]
    else:
        names = [p.relative_to(source) for p in source.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(n for n in names if not (set(n.parts) & NEVER) and (source / n).exists())


def _requirements(source: Optional[Path]) -> List[str]:
    reqs = ["dashboard/requirements.txt"]
    if source is not None:
        reqs.append("requirements.txt")
    return reqs


def check_source(source: Optional[str]) -> Optional[Path]:
    if not source:
        return None
    path = Path(os.path.expanduser(source))
    if not path.is_dir():
        raise ReleaseError("source %s is not a directory: fix `source:` in the inventory" % path)
    if not os.access(path, os.R_OK | os.X_OK):
        raise ReleaseError("source %s is not readable: check its permissions" % path)
    if not (path / "requirements.txt").is_file():
        raise ReleaseError("source %s has no requirements.txt: add one (it may be empty)" % path)
    clash = [name for name in ("dashboard", "remote") if (path / name).exists()]
    if clash:
        raise ReleaseError("source %s has its own %s/: that name belongs to sulfur-ops" % (path, clash[0]))
    return path


def wheelhouse(requirement_texts: str) -> Path:
    """Wheels for the requirements, built here once and cached by their hash."""
    digest = hashlib.sha256(requirement_texts.encode()).hexdigest()[:16]
    target = WHEEL_CACHE / digest
    if (target / ".complete").exists():
        return target
    tmp = WHEEL_CACHE / (".tmp-%s-%d" % (digest, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "requirements.txt").write_text(requirement_texts)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(tmp), "-r",
                          str(tmp / "requirements.txt")], capture_output=True, text=True)
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (out.stderr.strip().splitlines() or ["pip wheel failed"])[-1]
        raise ReleaseError("cannot build wheels here: %s" % last)
    (tmp / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def pack(source: Optional[str], wheels: bool, workdir: Path) -> Package:
    """One tar.gz for every host of this deploy."""
    src = check_source(source)
    stamp = stamp_now()
    commit = (_git(src, "rev-parse", "HEAD") or "").strip() or None if src else None
    path = workdir / ("release-%s.tar.gz" % stamp)
    requirement_texts = (ROOT / "dashboard/requirements.txt").read_text()
    if src is not None:
        requirement_texts += "\n" + (src / "requirements.txt").read_text()
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        for name in HOST_FILES:
            tar.add(str(ROOT / name), arcname=name, filter=_no_caches)
        if src is not None:
            for rel in source_files(src):
                tar.add(str(src / rel), arcname=str(rel), recursive=False)
        info = json.dumps({"stamp": stamp, "commit": commit, "by": "%s@%s" % (getpass.getuser(), os.uname()[1]),
                           "source": str(src) if src else None}).encode()
        entry = tarfile.TarInfo("REVISION.json")
        entry.size, entry.mtime = len(info), int(time.time())
        tar.addfile(entry, io.BytesIO(info))
        if wheels:
            house = wheelhouse(requirement_texts)
            for wheel in sorted(house.glob("*.whl")):
                tar.add(str(wheel), arcname="_wheels/" + wheel.name)
    return Package(path, stamp, commit, path.stat().st_size, _requirements(src))


def _no_caches(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    return None if set(Path(info.name).parts) & NEVER else info


def upload(runner: Runner, host: Host, package: Package) -> str:
    """Put the tar at app_dir/releases/.incoming-<stamp>.tar.gz; returns that path (~ unexpanded)."""
    target = "%s/releases/.incoming-%s.tar.gz" % (host.app_dir.rstrip("/"), package.stamp)
    run(runner, "mkdir -p %s" % shell_path(host.app_dir.rstrip("/") + "/releases"), 60)
    if host.is_local:
        shutil.copyfile(package.path, os.path.expanduser(target))
        return target
    remote = target[2:] if target.startswith("~/") else target  # SFTP starts in the home directory
    try:
        runner.put(str(package.path), remote)
    except (OSError, EOFError) as exc:
        raise HostError("upload failed: %s" % (exc or type(exc).__name__)) from None
    return target


UNPACK = ("import os,sys,tarfile;t,d=sys.argv[1],sys.argv[2];"
          "import shutil;shutil.rmtree(d,ignore_errors=True);os.makedirs(d);"
          "f=tarfile.open(t);f.extractall(d);f.close();os.unlink(t)")


def unpack_and_install(runner: Runner, host: Host, package: Package, incoming: str,
                       timeout: float = 900) -> Dict[str, object]:
    """Unpack into releases/.partial-<stamp>, then that release's hostctl builds or reuses its venv."""
    base = host.app_dir.rstrip("/") + "/releases"
    partial = "%s/.partial-%s" % (base, package.stamp)
    command = "%s -S -c %s %s %s && cd %s && exec %s -S -m remote.hostctl install --app-dir %s --stamp %s" % (
        shlex.quote(host.python), shlex.quote(UNPACK), shell_path(incoming), shell_path(partial),
        shell_path(partial), shlex.quote(host.python), shlex.quote(host.app_dir), package.stamp)
    for extra in host.shared_paths:
        command += " --shared %s" % shlex.quote(extra)
    result = run(runner, command, timeout)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        err = (result.stderr.strip().splitlines() or ["exit status %s" % result.exited])[-1]
        raise HostError("unpacking the release failed: %s" % err) from None
