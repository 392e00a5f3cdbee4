"""What a host really offers (doctor), and how much disk there is where a release would go (space).

Part of the agent's library (agent.py): it travels inside the command, standard library only.
"""

import importlib.util
import os
import platform
import pwd
import shutil
import socket
import sys

from remote.host.common import backupstate, epochs
from remote.host.common.files import Layout
from remote.host.common.system import (
    autostart_paths,
    detect_platform,
    existing_parent,
)
from remote.host.probes import android
from remote.host.probes.holders import available
from remote.host.probes.ports import METHODS, MethodFailed

# ---------------------------------------------------------------------------------------- doctor


def doctor(port, app_dir, coordination=None):
    """What this host really offers: platform, interpreter, which port methods answer, the app dir.

    Each method is tried on a listener the agent opens itself: a method works when it finds it (and
    "owner" says whether it could name our pid), since lsof or fuser finding nothing proves nothing.
    """
    methods = []
    with socket.socket() as own:
        own.bind(("127.0.0.1", 0))
        own.listen(1)
        test_port = own.getsockname()[1]
        for name, func in METHODS:
            if not available(name):
                methods.append({"method": name, "ok": False, "owner": False, "detail": "not installed"})
                continue
            try:
                found = func(test_port)[0]
            except (MethodFailed, ValueError, IndexError) as exc:
                methods.append({"method": name, "ok": False, "owner": False, "detail": str(exc)[:200]})
                continue
            owner = any(item["pid"] == os.getpid() for item in found)
            methods.append({"method": name, "ok": bool(found), "owner": owner,
                            "detail": "" if found else "did not see a listener the agent opened"})
    path = os.path.expanduser(app_dir)
    existing = existing_parent(path)
    return {"ok": True, "error": None, "platform": detect_platform(), "python": platform.python_version(),
            "python_path": sys.executable, "user": pwd.getpwuid(os.getuid()).pw_name,
            "uname": " ".join(platform.uname()[:3]), "methods": methods, "app_dir": path,
            "app_dir_exists": os.path.isdir(path), "app_dir_writable": os.access(existing, os.W_OK),
            "disk_free": space(path).get("free"),
            "autostart": [p for p in autostart_paths() if os.path.exists(p)],
            "android": android.report(path) if detect_platform() == "termux" else None,
            "bot_epoch": epoch_report(path), "backups": backupstate.summary(Layout(path)),
            "sqlite3": importlib.util.find_spec("sqlite3") is not None,
            "etcd": _etcd(path, coordination) if coordination else None}


def _etcd(app_dir, coordination):
    """The cluster as this host sees it, with its own credentials (shared/.env's ETCD_PASSWORD)."""
    from remote.host.common import etcd
    from remote.host.common.files import read_env_file

    dotenv = read_env_file(os.path.join(Layout(app_dir).shared, ".env"))
    return etcd.check(coordination, dotenv)


def epoch_report(app_dir):
    """The bot's epoch record and boot_wait as this host keeps them (run/), read as fencing reads
    them: None without a record; {"garbled": True} for one that does not read (it counts as 0)."""
    paths = Layout(app_dir)
    record = epochs.read(paths.bot_epoch)
    if record.get("missing"):
        return None
    if record.get("garbled"):
        return {"garbled": True}
    return {"epoch": record["epoch"], "active_host": record["active_host"],
            "boot_wait": epochs.read_boot_wait(paths) or None}


def space(path):
    """Free bytes where ``path`` is, or will be once created (its nearest existing parent)."""
    existing = existing_parent(os.path.expanduser(path))
    try:
        return {"ok": True, "error": None, "path": existing, "free": shutil.disk_usage(existing).free}
    except OSError as exc:
        return {"ok": False, "error": "cannot tell the free space of %s: %s" % (existing, exc.strerror)}


