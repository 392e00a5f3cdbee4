"""Operator side of a release: pack once, upload over the host's SSH connection, install, switch.

A release is one tar: this project's host side (remote/host/, dashboard/ and the shims older hosts
name) plus the bot's source tree when the inventory names one. What may hold a secret never goes in it
(``SECRETS``, whatever git ignores, the --env-file itself): the packer names what it left out, so
that every deploy and plan can say so; a .env reaches a host only through --env-file. With --wheels a
wheelhouse built here rides in the same tar (_wheels/), for hosts without a package index. The tar
travels by SFTP on the connection the task already has (invoke's stdin path decodes bytes as text, so a
tar stream over exec would be corrupted); for a local host it is copied.
"""

from __future__ import annotations

import fnmatch
import getpass
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote.host import CODE_DIR
from remote.host.releases import hooks, manifest

from . import agentcalls
from .connections import Runner, put, run
from .ctlcalls import call_ctl, shell_path
from .errors import HostError, ReleaseError, UsageError
from .fanout import DEFAULT_PARALLEL, in_batches, on_hosts
from .inventory import Host

ROOT = Path(CODE_DIR)
#: what every release carries of sulfur-ops: these directories whole (less caches) ...
HOST_SIDE = ("remote/host", "dashboard")
#: ... and the package file plus the shims that paths written on hosts by older releases name
SHIMS = ("remote/__init__.py", "remote/supervisor.py", "remote/hostctl.py")
#: caches and tools' own state, never packed and not worth naming
NEVER = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
#: names that may hold a secret (tokens, keys), in any directory and in any case: never packed, always
#: named in what packing left out (``Contents.not_shipped``)
SECRETS = ("*.env", ".env.*", "*.pem", "id_rsa*", "id_ed25519*", "id_ecdsa*", "id_dsa*")
WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sulfur-ops" / "wheels"
VENV_ROOM = 64 * 2**20  # what a new venv may take, counted in every space check


@dataclass
class Contents:
    """What a release holds, before any tar is made: enough for a plan."""
    source: Optional[Path]
    files: List[Tuple[Path, str]]      # (file here, name in the release)
    manifest: Dict[str, str]           # name in the release -> manifest.file_digest
    requirements: List[str]            # the texts the host's venv digest is made of, in its order
    commit: Optional[str]
    unpacked: int                      # bytes, once unpacked
    not_shipped: List[str] = field(default_factory=list)  # names left out: they may hold secrets


@dataclass
class Package:
    path: Path          # the tar.gz on this machine
    stamp: str
    commit: Optional[str]
    size: int
    unpacked: int = 0
    seconds: float = 0.0   # spent packing
    not_shipped: List[str] = field(default_factory=list)  # Contents.not_shipped


def _quiet(*args: Any) -> None:
    """A progress callback that hears nothing: the default where the caller shows no progress."""


def operator() -> str:
    """Who deploys: user@machine, for revisions.log."""
    return "%s@%s" % (getpass.getuser(), os.uname()[1])


def stamp_now() -> str:
    """UTC, 14 digits, like Capistrano's: sorts by time, names the release."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def _git(source: Path, *args: str, stdin: Optional[str] = None, ok: Tuple[int, ...] = (0,)) -> Optional[str]:
    """git's output in ``source``; None where git is missing, fails, or this is no work tree."""
    try:
        out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30,
                             input=stdin)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode in ok else None


def _names(listed: str) -> List[str]:
    return [name for name in listed.split("\0") if name]


def may_hold_secrets(name: str) -> bool:
    """True when a part of ``name`` (a file or a directory it is in) matches SECRETS."""
    return any(fnmatch.fnmatchcase(part.lower(), pattern) for part in Path(name).parts for pattern in SECRETS)


def _is_cache(name: str) -> bool:
    return bool(set(Path(name).parts) & NEVER) or name.endswith(".pyc")


def source_files(source: Path) -> Tuple[List[Path], List[str]]:
    """The bot's files to ship and the names left out because they may hold secrets. A git work tree
    ships git's view (tracked and untracked files, less what git ignores: each ignored file, or a wholly
    ignored directory as "dir/", is named as left out); any other directory everything. Either way no
    name that matches SECRETS, and no cache."""
    listed = _git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    left_out: List[str] = []
    if listed is not None:
        names = [Path(n) for n in _names(listed)]
        ignored = _git(source, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
        left_out += [n for n in _names(ignored or "") if not _is_cache(n)]
    else:
        names = [p.relative_to(source) for p in source.rglob("*") if p.is_file() or p.is_symlink()]
    shipped = []
    for name in sorted(n for n in names if not _is_cache(str(n)) and (source / n).exists()):
        if may_hold_secrets(str(name)):
            left_out.append(str(name))
        else:
            shipped.append(name)
    return shipped, sorted(set(left_out))


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
    """Wheels for the requirements, built here once and cached by their hash.

    Two deploys on this machine may build the same set at once: each builds in a folder of its own and
    renames it into place; the second finds the first's there and uses it. Replacing it instead pulled
    the wheels from under the first deploy while it packed them."""
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
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)  # left half-made by a build that was killed
    try:
        tmp.rename(target)
    except OSError:  # another deploy's build got there first: the same requirements, as good
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / ".complete").exists():
            raise ReleaseError("cannot keep the wheels in %s: is it writable?" % WHEEL_CACHE) from None
    return target


def _host_side() -> Tuple[List[Tuple[Path, str]], List[str]]:
    """This project's files every release carries, less caches, and the names left out: those that may
    hold secrets, and what git ignores here (a key or a .env a developer left in dashboard/)."""
    found = []
    for name in HOST_SIDE:
        for folder, dirs, names in os.walk(ROOT / name):
            dirs[:] = sorted(d for d in dirs if d not in NEVER)
            for file in sorted(names):
                path = Path(folder) / file
                if not _is_cache(str(path.relative_to(ROOT))):
                    found.append((path, str(path.relative_to(ROOT))))
    found += [(ROOT / name, name) for name in SHIMS]
    ignored = set(_names(_git(ROOT, "check-ignore", "-z", "--stdin", stdin="\0".join(n for _, n in found),
                              ok=(0, 1)) or ""))
    left_out = sorted(n for _, n in found if n in ignored or may_hold_secrets(n))
    return [(path, n) for path, n in found if n not in left_out], left_out


def _same_file(path: Path, env: Optional[os.stat_result]) -> bool:
    if env is None:
        return False
    mine = path.lstat()
    return (mine.st_dev, mine.st_ino) == (env.st_dev, env.st_ino)


def contents(source: Optional[str], env_file: Optional[Path] = None) -> Contents:
    """The files of the release to ship, their manifest and its requirements, and the names left out
    because they may hold secrets (``env_file``, which goes to hosts by its own channel, is one
    whatever its name, should it lie in the tree): no tar yet."""
    src = check_source(source)
    files, left_out = _host_side()
    requirements = [(ROOT / "dashboard/requirements.txt").read_text()]
    if src is not None:
        shipped, withheld = source_files(src)
        files += [(src / rel, str(rel)) for rel in shipped]
        left_out += withheld
        requirements.append((src / "requirements.txt").read_text())
    env = os.stat(env_file) if env_file is not None else None
    left_out += [name for path, name in files if _same_file(path, env)]
    files = [(path, name) for path, name in files if name not in left_out]
    digests = {name: manifest.file_digest(str(path)) for path, name in files}
    size = sum(path.lstat().st_size for path, _ in files)
    commit = ((_git(src, "rev-parse", "HEAD") or "").strip() or None) if src else None
    return Contents(src, files, digests, requirements, commit, size, sorted(set(left_out)))


def pack(source: Optional[str], wheels: bool, workdir: Path, env_file: Optional[Path] = None) -> Package:
    """One tar.gz for every host of this deploy, with its manifest (MANIFEST.json) in it; the package
    names what was left out (contents)."""
    started = time.monotonic()
    what = contents(source, env_file)
    stamp = stamp_now()
    path = workdir / ("release-%s.tar.gz" % stamp)
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        for file, name in what.files:
            tar.add(str(file), arcname=name, recursive=False)
        info = {"stamp": stamp, "commit": what.commit, "by": operator(),
                "source": str(what.source) if what.source else None}
        _add_json(tar, "REVISION.json", info)
        _add_json(tar, manifest.NAME, {"files": what.manifest})
        if wheels:
            house = wheelhouse("\n".join(what.requirements))
            for wheel in sorted(house.glob("*.whl")):
                tar.add(str(wheel), arcname="_wheels/" + wheel.name)
    return Package(path, stamp, what.commit, path.stat().st_size, what.unpacked, time.monotonic() - started,
                   what.not_shipped)


def _add_json(tar: tarfile.TarFile, name: str, doc: Dict[str, object]) -> None:
    data = json.dumps(doc, sort_keys=True).encode()
    entry = tarfile.TarInfo(name)
    entry.size, entry.mtime, entry.mode = len(data), int(time.time()), 0o644
    tar.addfile(entry, io.BytesIO(data))


def pack_sources(targets: List[Host], wheels: bool, workdir: Path, packed: Callable[[Package], None] = _quiet,
                 env_file: Optional[Path] = None) -> Dict[Optional[str], Package]:
    """One package per bot source, shared by every target that names it: packing costs as much as a
    host's whole deploy, so it is done once per source, not once per host. ``packed`` hears of each."""
    packages: Dict[Optional[str], Package] = {}
    for target in targets:
        if target.source not in packages:
            packages[target.source] = pack(target.source, wheels, workdir, env_file)
            packed(packages[target.source])
    return packages


def space_needed(tar_bytes: int, unpacked: int) -> int:
    """Room a deploy needs on the host: the upload, its unpacked copy and a venv it may build."""
    return tar_bytes + unpacked + VENV_ROOM


def check_space(runner: Runner, host: Host, package: Package) -> None:
    """Before anything is written: the release, its unpacked copy and a new venv must fit."""
    releases = host.app_dir.rstrip("/") + "/releases"
    answer = agentcalls.disk_free(runner, host, releases)
    if not answer.get("ok"):
        raise HostError("cannot prepare %s: %s" % (releases, answer.get("error")))
    free, needed = answer["free"], space_needed(package.size, package.unpacked)
    if free < needed:
        raise HostError("not enough disk space in %s: %.1f MB free, the release needs about %.0f MB; "
                        "free some space (old logs, venvs) and deploy again" % (host.app_dir, free / 2**20,
                                                                               needed / 2**20))


def upload(runner: Runner, host: Host, package: Package) -> str:
    """The tar to app_dir/releases/.incoming-<stamp>-<nonce>.tar.gz (a unique name: uploads run before
    the host lock is taken; a half upload, held open by no process, is cleaned by the next deploy)."""
    releases = host.app_dir.rstrip("/") + "/releases"
    run(runner, "mkdir -p %s" % shell_path(releases), 60)
    target = "%s/.incoming-%s-%s.tar.gz" % (releases, package.stamp, os.urandom(4).hex())
    put(runner, package.path, target)
    return target


def deploy_host(runner: Runner, host: Host, package: Package, report: Callable[[str], None],
                env_file: Optional[Path] = None, timeout: float = 20.0,
                checks: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Upload, then one ctl deploy under the host's lock: install, switch, verify, roll back."""
    started = time.monotonic()
    check_space(runner, host, package)
    report("uploading %.1f MB" % (package.size / 2**20))
    space_checked = time.monotonic()
    incoming = upload(runner, host, package)
    options: Dict[str, object] = {"stamp": package.stamp, "keep": host.keep_releases, "timeout": timeout,
                                  "by": operator(), "commit": package.commit, "shared": list(host.shared_paths)}
    hook_spec = hooks.normalize(host.hooks)
    if hook_spec:
        options.update(hooks=hook_spec, hook_timeout=float(host.hook_timeout))
    if checks is not None:
        options["checks"] = checks
    if env_file is not None:
        env_target = "%s/shared/.env.incoming-%s" % (host.app_dir.rstrip("/"), os.urandom(4).hex())
        # created empty and private first: the upload then writes into a file nobody else can open
        run(runner, "umask 077 && mkdir -p %s && : > %s" % (shell_path(host.app_dir.rstrip("/") + "/shared"),
                                                             shell_path(env_target)), 60)
        put(runner, env_file, env_target, mode=0o600)
        options["env_incoming"] = env_target
    uploaded = time.monotonic()
    # unpacked outside the lock into a name of its own; that release's ctl then does the rest
    partial = "%s/releases/.partial-%s-%s" % (host.app_dir.rstrip("/"), package.stamp, os.urandom(4).hex())
    unpacker = agentcalls.host_command(host, "remote.host.releases.unpack")
    # the unpacker speaks for itself on stderr, not "no release"
    unpack = "%s %s %s || exit 1; " % (unpacker, shell_path(incoming), shell_path(partial))
    try:
        # the host's own bounds, all in a row: its lock, pip, every hook (the way back's too), the restarts
        bound = 120 + 900 + 4 * host.hook_timeout + 3 * timeout + 60
        # the inventory's interpreter, also for a local host's first deploy (which has no release for
        # code_location to find): the venv is named after it, so every deploy after finds the same one
        doc = call_ctl(runner, host, "deploy", options, settings=True, timeout=bound, code_dir=partial,
                       prefix=unpack, progress=report, python=host.python)
    except HostError as exc:  # a cut connection: the host lock and its cleanup keep the host consistent
        if str(exc).startswith("connection lost"):
            raise HostError("connection lost during deploy: %s" % str(exc)[len("connection lost: "):]) from None
        raise
    if doc.get("ok"):  # where the time went, for bench/deploy.py and --json
        doc["timings"] = dict(doc.get("timings") or {}, space=space_checked - started, upload=uploaded - space_checked,
                              host=time.monotonic() - uploaded)
    return doc


def deploy_order(hosts: List[Host]) -> List[Host]:
    """--serial's order: standby hosts first (they serve no bot: a bad release shows there first),
    then the others, each in inventory order."""
    return sorted(hosts, key=lambda h: not h.standby)


def ship(targets: List[Host], wheels: bool, env_file: Optional[Path], timeout: float,
         checks_for: Callable[[Host], Dict[str, Any]], serial: int = 0, parallel: int = DEFAULT_PARALLEL, *,
         packed: Callable[[Package], None] = _quiet, batch: Optional[Callable[[int, int, List[Host]], None]] = None,
         reporter: Callable[[Host], Callable[[str], None]] = lambda host: _quiet) -> List[Dict[str, Any]]:
    """`invoke deploy`: pack (pack_sources), then deploy_host on every target, all at once or ``serial``
    at a time in deploy_order; the packages are removed after, whatever happened. Each deployed host's
    document gets ``timings["pack"]``. ``checks_for``: what the other hosts run, for each target
    (botguard.Guard.checks_for). The callbacks are how the task shows progress, since this module never
    prints: ``packed`` each package, ``batch`` each batch as it starts, ``reporter(host)`` a host's lines."""
    workdir = Path(tempfile.mkdtemp(prefix="sulfur-deploy-"))
    try:
        packages = pack_sources(targets, wheels, workdir, packed, env_file)

        def one(runner: Runner, target: Host) -> Dict[str, Any]:
            package = packages[target.source]
            doc: Dict[str, Any] = deploy_host(runner, target, package, reporter(target), env_file, timeout,
                                              checks_for(target))
            doc["not_shipped"] = package.not_shipped
            if doc.get("ok"):
                doc["timings"]["pack"] = package.seconds
            return doc

        if serial:
            return in_batches(deploy_order(targets), one, serial, parallel, batch)
        return on_hosts(targets, one, parallel)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def deploy_flags(targets: List[Host], env_file: Optional[str], serial: Any) -> Optional[Path]:
    """deploy's flags checked before anything is asked of a host; the --env-file path, or None."""
    if not targets:
        raise UsageError("no hosts to deploy to: add some to the inventory, or use --host local")
    env_path = Path(env_file).expanduser() if env_file else None
    if env_path is not None and not env_path.is_file():
        raise UsageError("--env-file %s is not a readable file" % env_path)
    if int(serial) < 0:
        raise UsageError("--serial %s: give the number of hosts per batch (1 or more)" % serial)
    return env_path
