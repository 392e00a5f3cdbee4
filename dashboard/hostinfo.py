"""What the host card shows: read from /proc and the file system, each item on its own.

Every reader returns None where the host will not tell (Android hides much of /proc from apps), so
one missing number never blanks the card.
"""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

from remote.host.common.system import detect_platform, existing_parent


def _uptime() -> Optional[float]:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _load() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _memory() -> Optional[Dict[str, int]]:
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return {"total": total, "available": available, "used": total - available}


def _disk(path: Path) -> Optional[Dict[str, int]]:
    try:  # the app dir may not exist yet in development
        usage = shutil.disk_usage(existing_parent(str(path)))
    except OSError:
        return None
    return {"total": usage.total, "used": usage.used, "free": usage.free, "path": str(path)}


def battery(timeout: float = 3.0) -> Optional[Dict[str, Any]]:
    """termux-battery-status, where Termux:API provides it. It can hang without the API app: timeout."""
    tool = shutil.which("termux-battery-status")
    if not tool:
        return None
    try:
        out = subprocess.run(
            [tool], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout, check=True
        ).stdout
        data = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {k: data.get(k) for k in ("percentage", "status", "plugged", "temperature")}


def collect(app_dir: Path) -> Dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": detect_platform(),
        "uptime": _uptime(),
        "load": _load(),
        "memory": _memory(),
        "disk": _disk(app_dir),
        "battery": battery(),
    }
