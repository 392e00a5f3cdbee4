"""Dashboard settings: flags override DASHBOARD_* environment variables, which override defaults.

Everything is validated before a socket is touched, so a typo is one line and exit status 2, never a
traceback and never a half-started server. The token is read from the environment only: a flag would
show it to every user of the machine in `ps`.
"""

import argparse
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from remote.host import CODE_DIR
from remote.host.supervision.listener import BindError, check_port

#: shortest DASHBOARD_TOKEN accepted for an address other machines can reach
MIN_TOKEN = 16
#: the development app dir: git-ignored, inside the checkout
DEV_APP_DIR = Path(CODE_DIR) / "var" / "dev"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    token: Optional[str] = None
    reuse_port: bool = False
    bind_retries: int = 5
    bind_backoff: float = 2.0
    app_dir: Path = DEV_APP_DIR
    bot_log: Optional[Path] = None
    release: str = "dev"
    drain_timeout: float = 10.0
    idle_timeout: float = 60.0      # an idle connection is closed after this long
    max_connections: int = 100      # connections held at once (one thread each)
    allowed_hosts: List[str] = field(default_factory=list)   # Host names answered besides the bound address
    allowed_origins: Optional[List[str]] = None              # Socket.IO origins; None: the same origin only

    @property
    def log_path(self) -> Path:
        return self.bot_log or self.app_dir / "logs" / "bot.log"


class SettingsError(Exception):
    """A bad setting: one line for the user, exit status 2."""


def _flag(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _number(name: str, raw: str, kind: type, minimum: float) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError("%s=%r is not a number" % (name, raw)) from None
    if value < minimum:
        raise SettingsError("%s=%r must be at least %s" % (name, raw, minimum))
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def release_name() -> str:
    """The release this code runs from (releases/<stamp>/dashboard), else 'dev'."""
    env = os.environ.get("SULFUR_RELEASE")
    if env:
        return env
    here = Path(CODE_DIR).resolve()
    return here.name if here.parent.name == "releases" else "dev"


def parse(argv: Optional[List[str]] = None, environ: Optional[dict] = None) -> Settings:
    """Settings from flags and environment; raises SettingsError with a one-line message."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=env.get("DASHBOARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", default=env.get("DASHBOARD_PORT", "5000"))
    parser.add_argument("--reuse-port", default=env.get("DASHBOARD_REUSE_PORT", "off"))
    parser.add_argument("--bind-retries", default=env.get("DASHBOARD_BIND_RETRIES", "5"))
    parser.add_argument("--bind-backoff", default=env.get("DASHBOARD_BIND_BACKOFF", "2.0"))
    parser.add_argument("--app-dir", default=env.get("DASHBOARD_APP_DIR", str(DEV_APP_DIR)))
    parser.add_argument("--bot-log", default=env.get("DASHBOARD_BOT_LOG"))
    parser.add_argument("--drain-timeout", default=env.get("DASHBOARD_DRAIN_TIMEOUT", "10"))
    parser.add_argument("--idle-timeout", default=env.get("DASHBOARD_IDLE_TIMEOUT", "60"))
    parser.add_argument("--max-connections", default=env.get("DASHBOARD_MAX_CONNECTIONS", "100"))
    args = parser.parse_args(argv)

    try:
        port = check_port(args.port)
    except BindError as exc:
        raise SettingsError("DASHBOARD_PORT: %s" % exc) from None
    try:
        reuse_port = _flag(args.reuse_port)
    except ValueError:
        raise SettingsError("DASHBOARD_REUSE_PORT=%r: use on or off" % args.reuse_port) from None
    token = env.get("DASHBOARD_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise SettingsError(
            "refusing to serve on %s without DASHBOARD_TOKEN: set a token, or use 127.0.0.1"
            % args.host
        )
    if not is_loopback(args.host) and len(token) < MIN_TOKEN:
        raise SettingsError(
            "refusing to serve on %s with a DASHBOARD_TOKEN of %d characters: use at least %d (python3 -c "
            "'import secrets; print(secrets.token_urlsafe(24))')" % (args.host, len(token), MIN_TOKEN)
        )
    origins = [o.strip() for o in env.get("DASHBOARD_ALLOWED_ORIGINS", "").split(",") if o.strip()]
    app_dir = Path(os.path.expanduser(args.app_dir)).resolve()
    return Settings(
        host=args.host,
        port=port,
        token=token,
        reuse_port=reuse_port,
        bind_retries=int(_number("DASHBOARD_BIND_RETRIES", args.bind_retries, int, 0)),
        bind_backoff=_number("DASHBOARD_BIND_BACKOFF", args.bind_backoff, float, 0),
        app_dir=app_dir,
        bot_log=Path(os.path.expanduser(args.bot_log)) if args.bot_log else None,
        release=release_name(),
        drain_timeout=_number("DASHBOARD_DRAIN_TIMEOUT", args.drain_timeout, float, 0),
        idle_timeout=_number("DASHBOARD_IDLE_TIMEOUT", args.idle_timeout, float, 1),
        max_connections=int(_number("DASHBOARD_MAX_CONNECTIONS", args.max_connections, int, 4)),
        allowed_hosts=[h.strip() for h in env.get("DASHBOARD_ALLOWED_HOSTS", "").split(",") if h.strip()],
        allowed_origins=origins or None,
    )
