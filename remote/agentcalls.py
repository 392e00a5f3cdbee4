"""The agent's operations (port-status, free-port, doctor, disk space), each written once for every runner.

The agent travels inside the command itself: remote/host/agent.py and the host modules it imports,
compressed behind `python -S -c`, so a host needs no release, no /tmp and no /usr/bin/env for it, and
each operation is one exec round trip. Its request goes on stdin like every host command's.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import json
import os
import shlex
import threading
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

from remote.host import CODE_DIR

from .connections import Runner, call
from .errors import HostError
from .inventory import Host

HOST_DIR = Path(CODE_DIR) / "remote" / "host"
_BUILDING = threading.Lock()
AGENT_TIMEOUT = 60.0
AGENT = "remote.host.agent"
LOOKOUT = "remote.host.probes.lookout"  # the probe alone: port-status sends 7 modules, not 14
# the packages (empty: bundled modules import nothing from an __init__) first, each set on its
# parent, then the modules in dependency order; then the root's main()
_BOOT = ("import base64,json,sys,types,zlib\n"
         "P,M=json.loads(zlib.decompress(base64.b64decode('%s')))\n"
         "def put(n,m):\n sys.modules[n]=m;a,_,b=n.rpartition('.')\n if a:setattr(sys.modules[a],b,m)\n"
         "for p in P:\n m=types.ModuleType(p);m.__path__=[];put(p,m)\n"
         "for n,s in M:\n"
         " m=types.ModuleType(n);m.__file__='<agent>/'+n;put(n,m);exec(compile(s,n,'exec'),m.__dict__)\n"
         "sys.exit(sys.modules[%r].main())")


def _source(name: str) -> Path:
    """remote.host.a.b -> remote/host/a/b.py"""
    return HOST_DIR.joinpath(*name.split(".")[2:]).with_suffix(".py")


def _host_imports(name: str) -> List[str]:
    """The remote.host modules that module ``name`` imports (its own source says): ``from P import m``
    names module P.m where that file exists, else module P."""
    tree = ast.parse(_source(name).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("remote.host"):
            for alias in node.names:
                child = node.module + "." + alias.name
                found.append(child if _source(child).exists() else node.module)
    return [n for n in dict.fromkeys(found) if n.count(".") >= 2 and _source(n).exists()]


def _packages(modules: List[str]) -> List[str]:
    """Every package the modules live in, parents first: remote, remote.host, remote.host.common, ..."""
    found: List[str] = []
    for name in modules:
        parts = name.split(".")
        found += [".".join(parts[:i]) for i in range(1, len(parts))]
    return sorted(set(found), key=lambda n: (n.count("."), n))


def bundle(root: str = AGENT) -> List[str]:
    """``root`` and every host module it needs, each after the modules it imports."""
    order: List[str] = []

    def visit(name: str, path: tuple) -> None:
        if name in order:
            return
        if name in path:
            raise RuntimeError("import cycle in the agent's modules: %s" % " -> ".join(path + (name,)))
        for dep in _host_imports(name):
            visit(dep, path + (name,))
        order.append(name)

    visit(root, ())
    return order


def bootstrap(root: str = AGENT) -> str:
    """`python -c` code that installs ``root`` and the modules it needs from the command, then runs its main().

    Built once, under a lock: hosts ask for it from parallel threads, and CPython 3.11's ast.parse
    is not safe to run in two threads at once ("AST constructor recursion depth mismatch")."""
    with _BUILDING:
        return _bootstrap(root)


@functools.lru_cache(maxsize=4)
def _bootstrap(root: str) -> str:
    """The command's code, kept in __pycache__ beside the host modules while none of them changes:
    reading their imports (ast) and compressing took 40 ms of a one-host port-status."""
    stamp = hashlib.sha256(root.encode())
    for path in sorted(HOST_DIR.rglob("*.py")) + [Path(__file__)]:  # and the loader made here
        info = path.stat()
        stamp.update(("%s %d %d\n" % (path, info.st_mtime_ns, info.st_size)).encode())
    cache = HOST_DIR / "__pycache__" / ("bundle-%s-%s.txt" % (root.rsplit(".", 1)[1], stamp.hexdigest()[:20]))
    try:
        return cache.read_text()
    except OSError:
        pass
    names = bundle(root)
    modules = [(n, _source(n).read_text()) for n in names]
    payload = base64.b64encode(zlib.compress(json.dumps([_packages(names), modules]).encode(), 9)).decode()
    code = _BOOT % (payload, root)
    _keep(cache, code)
    return code


def _keep(cache: Path, code: str) -> None:
    """Write the bundle's cache (and drop its older ones); a read-only checkout just goes without."""
    try:
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob(cache.name.rsplit("-", 1)[0] + "-*.txt"):
            old.unlink()
        part = cache.with_name(".%s.%d" % (cache.name, os.getpid()))
        part.write_text(code)
        os.replace(part, cache)
    except OSError:
        pass


def host_command(host: Host, root: str = AGENT, python: Optional[str] = None) -> str:
    """The shell command that runs host module ``root`` with the host's own interpreter (never via env)."""
    # -S: the host side is stdlib-only, so skip site-packages (faster start, nothing of the host leaks in)
    return " ".join(shlex.quote(a) for a in (python or host.python, "-S", "-c", bootstrap(root)))


def agent_command(host: Host) -> str:
    return host_command(host, AGENT)


def call_agent(runner: Runner, host: Host, command: str, timeout: float = AGENT_TIMEOUT, root: str = AGENT,
               python: Optional[str] = None, **request: Any) -> Dict[str, Any]:
    """Run one agent operation (or bundled module ``root``, with ``python`` rather than the host's);
    its JSON document, or HostError with the reason in one line."""
    try:
        what = "agent" if root in (AGENT, LOOKOUT) else root.rsplit(".", 1)[1]
        command_line = host_command(host, root, python)
        return call(runner, host, command_line, dict(request, command=command), what, timeout)
    except HostError as exc:
        if "not found" in str(exc) or "exit status 127" in str(exc):
            raise HostError("%s not found on the host: set `python:` for it in the inventory" % host.python) from None
        raise


def port_status(runner: Runner, host: Host, port: Optional[int] = None) -> Dict[str, Any]:
    return call_agent(runner, host, "probe", root=LOOKOUT, port=port or host.dashboard_port, app_dir=host.app_dir)


def free_port(runner: Runner, host: Host, port: Optional[int] = None, force: bool = False,
              grace: float = 3.0) -> Dict[str, Any]:
    return call_agent(runner, host, "free", AGENT_TIMEOUT + 2 * grace, port=port or host.dashboard_port,
                      app_dir=host.app_dir, force=force, grace=grace)


def doctor(runner: Runner, host: Host) -> Dict[str, Any]:
    extra = {"coordination": host.coordination.request()} if host.coordination else {}
    doc = call_agent(runner, host, "doctor", port=host.dashboard_port, app_dir=host.app_dir, **extra)
    doc["reachable"] = True
    doc["auth"] = not host.is_local
    if not host.is_local:
        from .ssh import route  # imported only once a host is reached over SSH

        doc["route"] = route(host)
    if doc.get("platform") and doc["platform"] != host.platform:
        doc["warning"] = "inventory says platform %s, the host is %s" % (host.platform, doc["platform"])
    return doc


def disk_free(runner: Runner, host: Host, path: str) -> Dict[str, Any]:
    """Free bytes where ``path`` is (or will be: its nearest existing parent)."""
    return call_agent(runner, host, "space", app_dir=path)
