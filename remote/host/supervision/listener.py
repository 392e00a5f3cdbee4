"""The dashboard's listening socket: created right, or inherited from a parent that holds the port.

Standard library only, Python 3.8+: the host supervisor imports this module too, so that the socket it
holds across dashboard restarts is made by exactly the code the dashboard uses on its own.

Why this module exists at all: werkzeug binds its own socket and turns EADDRINUSE into sys.exit(1), so
no retry around it can run, and SO_REUSEADDR set after bind does nothing. Here the options are set
before bind, EADDRINUSE alone is retried with backoff, and every attempt says who holds the port.
"""

import array
import errno
import os
import shutil
import socket
import subprocess
import time
from typing import Any, Callable, List, Optional

from remote.host.supervision.notify import handover_address

#: first inherited descriptor in the systemd socket-activation protocol (sd_listen_fds)
SD_LISTEN_FDS_START = 3

#: bind errors a retry can cure; everything else is a configuration error and fails at once
_RETRYABLE = {errno.EADDRINUSE}


class BindError(Exception):
    """The port cannot be had. ``exit_code`` is 2 for bad settings, 3 for a port held by another."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Listener:
    """A listening socket plus how it came to be (shown on the dashboard's port card)."""

    def __init__(self, sock: socket.socket, inherited: bool, reuse_port: bool, attempts: int) -> None:
        self.sock = sock
        self.inherited = inherited
        self.reuse_port = reuse_port
        self.attempts = attempts

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def describe(self) -> dict:
        return {
            "address": self.address,
            "port": self.port,
            "how": "inherited" if self.inherited else "created",
            "reuse_port": self.reuse_port,
            "bind_attempts": self.attempts,
        }


def check_port(port: object) -> int:
    """Return ``port`` as an int in 1..65535, or raise BindError (exit 2) saying what is wrong."""
    try:
        value = int(str(port), 10)
    except ValueError:
        raise BindError("invalid port %r: give a number from 1 to 65535" % (port,)) from None
    if not 1 <= value <= 65535:
        raise BindError("invalid port %d: give a number from 1 to 65535" % value)
    return value


def inherited_socket(environ: Optional[dict] = None) -> Optional[socket.socket]:
    """The socket passed by a parent via LISTEN_FDS/LISTEN_PID, or None.

    The variables are removed once read (as sd_listen_fds(unset_environment=1) does), so that a
    child of ours, such as a shell started from a request, does not take the socket for its own.
    """
    env = os.environ if environ is None else environ
    try:
        count = int(env.get("LISTEN_FDS", "0"))
        pid = int(env.get("LISTEN_PID", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count < 1 or pid != os.getpid():
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    os.set_inheritable(sock.fileno(), False)
    return sock


def _addresses(host: str, port: int) -> List[tuple]:
    try:
        return socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(
            "cannot resolve DASHBOARD_HOST %r (%s): give an address of this machine, "
            "e.g. 127.0.0.1 or 0.0.0.0" % (host, exc.strerror)
        ) from None


def bind_once(host: str, port: int, reuse_port: bool = False, backlog: int = 128) -> socket.socket:
    """One bind of a fresh socket: SO_REUSEADDR (and SO_REUSEPORT if asked) set *before* bind.

    SO_REUSEADDR lets us bind over TIME_WAIT connections left by the previous instance; it does not
    let two live listeners share the port. SO_REUSEPORT does, which is why it is opt-in: with it a
    stale second instance silently takes half the connections.
    """
    family, kind, proto, _, addr = _addresses(host, port)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise BindError("DASHBOARD_REUSE_PORT is on but this system has no SO_REUSEPORT")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def create_listener(
    host: str,
    port: object,
    reuse_port: bool = False,
    retries: int = 5,
    backoff: float = 2.0,
    log: Callable[[str], None] = lambda line: None,
    holder: Callable[[int], Optional[str]] = lambda port: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Listener:
    """Bind ``host:port``, retrying EADDRINUSE ``retries`` times with doubling delays.

    ``holder(port)`` names who holds the port ("pid 812 (python -m http.server)") or returns None;
    it is asked on every failed attempt because the holder may change while we wait.
    """
    port = check_port(port)
    total = retries + 1
    delay = backoff
    for attempt in range(1, total + 1):
        try:
            sock = bind_once(host, port, reuse_port)
        except OSError as exc:
            who = _holder_text(holder, port)
            if exc.errno not in _RETRYABLE:
                raise BindError(_bind_failure(host, port, exc, who)) from None
            if attempt == total:
                raise BindError(
                    "port %d on %s is still in use after %d attempts%s: stop that process "
                    "(invoke free-port) or choose another DASHBOARD_PORT"
                    % (port, host, total, ", held by " + who if who else " (holder not visible)"),
                    exit_code=3,
                ) from None
            log(
                "bind %s:%d attempt %d/%d failed: address in use%s; retrying in %.1f s"
                % (host, port, attempt, total, " by " + who if who else "", delay)
            )
            sleep(delay)
            delay *= 2
            continue
        if attempt > 1:
            log("bind %s:%d attempt %d/%d succeeded" % (host, port, attempt, total))
        return Listener(sock, inherited=False, reuse_port=reuse_port, attempts=attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _holder_text(holder: Callable[[int], Optional[str]], port: int) -> Optional[str]:
    try:
        return holder(port)
    except Exception:  # naming the holder is a courtesy; it must never break the bind
        return None


def _bind_failure(host: str, port: int, exc: OSError, who: Optional[str]) -> str:
    if exc.errno == errno.EADDRNOTAVAIL:
        return "cannot bind %s:%d: %s is not an address of this machine; set DASHBOARD_HOST to one " \
               "that is (127.0.0.1, 0.0.0.0)" % (host, port, host)
    if exc.errno == errno.EACCES:
        return "cannot bind %s:%d: permission denied (ports below 1024 need root); choose a " \
               "DASHBOARD_PORT above 1023" % (host, port)
    return "cannot bind %s:%d: %s" % (host, port, exc.strerror or exc)


def get_listener(host: str, port: object, log: Callable[[str], None] = lambda line: None,
                 **options: Any) -> Listener:
    """The inherited socket when a parent passed one, else create_listener(host, port, **options)."""
    sock = inherited_socket()
    if sock is not None:
        log("using inherited listening socket (LISTEN_FDS) on %s" % (sock.getsockname(),))
        reuse = hasattr(socket, "SO_REUSEPORT") and bool(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        return Listener(sock, inherited=True, reuse_port=reuse, attempts=0)
    return create_listener(host, port, log=log, **options)


def notify_ready(status: str = "") -> bool:
    """Send READY=1 to $NOTIFY_SOCKET (sd_notify's datagram protocol). True when it was sent.

    A parent that shares the listening socket with an older instance cannot tell from a health
    request who answered it; this datagram comes from this process alone.
    """
    return notify("READY=1\nMAINPID=%d" % os.getpid() + ("\nSTATUS=%s" % status if status else ""))


def _address(name: Optional[str]) -> Optional[str]:
    """A NOTIFY_SOCKET value as a socket address ("@name" is the abstract namespace), or None."""
    if not name:
        return None
    return "\0" + name[1:] if name.startswith("@") else name


def _notify_address() -> Optional[str]:
    return _address(os.environ.get("NOTIFY_SOCKET"))


def notify(message: str) -> bool:
    """One sd_notify datagram ("KEY=VALUE" lines) to $NOTIFY_SOCKET, when there is one."""
    path = _notify_address()
    if not path:
        return False
    message += "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), path)
        except OSError:
            return False
    return True


def store_socket(sock: socket.socket, app_dir: Optional[str] = None) -> bool:
    """FDSTORE=1 with ``sock`` attached (SCM_RIGHTS): how a dashboard whose supervisor died hands its
    listening socket to the next supervisor, which keeps the port open. Sent where that supervisor
    hears, as ``app_dir``'s run/notify.name says (our $NOTIFY_SOCKET may name the dead one's random
    abstract name, free for anyone to bind now); to $NOTIFY_SOCKET only where no record says otherwise."""
    path = _address(handover_address(app_dir, os.environ.get("NOTIFY_SOCKET")))
    if not path:
        return False
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]).tobytes())]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
        try:
            out.sendmsg([b"FDSTORE=1\nFDNAME=listener\n"], rights, 0, path)
        except OSError:
            return False
    return True


def shell() -> str:
    """/bin/sh exists on Linux and on Android (Termux's own sh is on PATH too)."""
    return "/bin/sh" if os.path.exists("/bin/sh") else (shutil.which("sh") or "sh")


def spawn_on_socket(argv: List[str], sock: socket.socket, env: dict, **popen_kwargs) -> subprocess.Popen:
    """Start ``argv`` with ``sock`` as its fd 3 and LISTEN_FDS=1, LISTEN_PID=its own pid (systemd style).

    LISTEN_PID must be the child's pid, known only after fork; a one-line sh exec shim sets it, then
    becomes the program (same pid). The socket travels as the shim's stdin and is moved to fd 3
    there (dash and Android's mksh only take single-digit descriptors in redirections), and stdin
    becomes /dev/null. preexec_fn could not change the environment Popen passes, and is unsafe in a
    threaded parent such as the supervisor. /bin/sh exists on Linux and on Android.
    """
    script = ('LISTEN_PID=$$; LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; '
              'exec "$@" 3<&0 0</dev/null')
    env = {k: v for k, v in env.items() if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    return subprocess.Popen([shell(), "-c", script, "sh"] + list(argv), env=env, stdin=sock.fileno(),
                            **popen_kwargs)
