"""Start `python -m dashboard` as a real process on a real port, for the tests and the benchmark."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remote.host.supervision.listener import spawn_on_socket  # noqa: E402


def processes(match: Callable[[list], bool], uid: Optional[int] = None) -> list:
    """pids of the live processes (zombies left out) whose argv, a list of bytes, ``match`` accepts,
    and, given, of that owner: what really runs, whatever a state file says."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
                owner = os.stat("/proc/%s" % entry).st_uid
                zombie = Path("/proc", entry, "stat").read_text().rsplit(") ", 1)[1][0] == "Z"
            except (OSError, IndexError):
                continue
            if not zombie and uid in (None, owner) and match(argv):
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is no zombie (a killed child its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
        return Path("/proc/%d/stat" % pid).read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Load:
    """tests/loadgen.py hammering ``port`` (``threads`` clients, a new connection per request) from
    when it says "started" until ``finish()``, which returns its JSON result (requests, rate, errors)."""

    def __init__(self, port: int, stop_file: Path, threads: int = 4) -> None:
        self.stop_file = stop_file
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("loadgen.py")), str(port),
                                      str(stop_file), str(threads)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "started"

    def finish(self) -> dict:
        self.stop_file.touch()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait(10)
        return result


def interrupt(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Ctrl+C to ``proc`` (an `invoke fleet`, say), as a user stops it; killed if it will not end."""
    proc.send_signal(2)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 20.0, host: str = "127.0.0.1",
                 output: Callable[[], str] = lambda: "") -> dict:
    """Wait until /healthz on ``port`` answers with ``proc``'s own pid (not an older instance's)."""
    url = "http://%s:%d/healthz" % (host, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("dashboard exited %s:\n%s" % (proc.returncode, output()))
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = json.loads(resp.read())
                if body.get("pid") == proc.pid:
                    return body
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise AssertionError("dashboard not healthy in %.0f s:\n%s" % (timeout, output()))


def invoke(inventory: Path, *args: str, timeout: float = 300,
           env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """The real CLI, as a user types it: `python -m invoke ARGS` with SULFUR_INVENTORY=inventory (and
    ``env`` over this environment: another PATH, another locale)."""
    # the bot guard's memory of other hosts goes beside the test's inventory, not in ~/.cache
    env = dict(os.environ, **(env or {}), SULFUR_INVENTORY=str(inventory),
               XDG_CACHE_HOME=str(Path(inventory).parent / "cache"),
               XDG_DATA_HOME=str(Path(inventory).parent / "data"))  # and its copies of the bot's data
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def ctl_run(code_dir: Path, command: str, app_dir: Path, options: Optional[dict] = None,
            settings: Optional[dict] = None, protocol: int = 1, protocols: Optional[list] = None,
            **popen: object) -> subprocess.CompletedProcess:
    """`python -m remote.host.ctl COMMAND` from ``code_dir`` with its request on stdin, as the operator sends it
    (``protocols``: the operator's range, which operators from before ranges did not send)."""
    request = {"protocol": protocol, "command": command, "app_dir": str(app_dir), "options": options or {}}
    if protocols is not None:
        request["protocols"] = protocols
    if settings is not None:
        request["settings"] = settings
    return subprocess.run([sys.executable, "-m", "remote.host.ctl", command], cwd=code_dir, capture_output=True,
                          text=True, input=json.dumps(request) + "\n", timeout=120, **popen)


def local_inventory(path: Path, app_dir: Path, port: Optional[int] = None) -> Path:
    """An inventory whose one host is this machine, with its own app_dir (and dashboard port)."""
    entry = "connection: local, app_dir: %s" % app_dir
    if port:
        entry += ", dashboard_port: %d" % port
    path.write_text("hosts:\n  local: {%s}\n" % entry)
    return path


class Dashboard:
    """One dashboard process; its output goes to ``log`` so a test can read every line it said."""

    def __init__(self, app_dir: Path, port: int, env: Optional[Dict[str, str]] = None,
                 sock: Optional[socket.socket] = None, args: tuple = ()) -> None:
        self.port = port
        self.app_dir = app_dir
        self.log = app_dir / ("dashboard-%d-%d.out" % (port, time.monotonic_ns()))
        app_dir.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ, DASHBOARD_PORT=str(port), DASHBOARD_APP_DIR=str(app_dir),
                        DASHBOARD_BIND_BACKOFF="0.2", PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self._out = open(self.log, "wb")
        argv = [sys.executable, "-m", "dashboard", *args]
        if sock is not None:  # started the way the supervisor starts it: on a socket it holds
            self.proc = spawn_on_socket(argv, sock, full_env, cwd=ROOT, stdout=self._out,
                                        stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self._out,
                                         stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return "http://%s:%d%s" % (host, self.port, path)

    def wait_healthy(self, timeout: float = 20.0, host: str = "127.0.0.1") -> dict:
        return wait_healthy(self.proc, self.port, timeout, host, lambda: self.output)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """``check()``'s first true value, polled every 50 ms for up to ``timeout`` s (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("not within %.0f s: %s" % (timeout, what))


class Clock:
    """A monotonic clock a test moves by hand: a day of crashes runs in milliseconds."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now  # monotonic clocks start anywhere

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Running:
    """Where Service keeps a process handle, for the policy tests: it only reads .pid of it."""

    pid = 4242


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real small disk at ``where`` (made if missing) for as long as the block runs; skips without root."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
