"""Start the stack at boot: a systemd user unit on Linux, a Termux:Boot script on Termux.

Both start the supervisor of the *current* release with the settings the last restart saved in
run/supervisor.json. Units written by releases before remote/host/ existed name remote/supervisor.py,
which is kept as a shim for them.
"""

import os
import re
import shlex
import subprocess
import sys

from remote.host.common.errors import Failure
from remote.host.common.files import Layout
from remote.host.common.system import UNIT_NAME, autostart_paths, detect_platform, which

UNIT = """[Unit]
Description=Sulfur bot stack (sulfur-ops supervisor of {description})
After=network-online.target

[Service]
WorkingDirectory={current}
ExecStart={python} -S -m remote.host.supervisor run {config}
Restart=on-failure
RestartSec=5
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""
BOOT = """#!{prefix}/bin/sh
# sulfur-ops: start the Sulfur stack when the phone boots (needs the Termux:Boot app); the supervisor
# takes termux-wake-lock itself when the inventory's wake_lock is on (the default on Termux)
cd {current} || exit 1
# the wake lock first: without it Android dozes the app, and the bot's connection with it
command -v termux-wake-lock >/dev/null 2>&1 && termux-wake-lock
exec {python} -S -m remote.host.supervisor run {config} >> {log} 2>&1
"""


def _plain(value, what):
    """A value written into a unit or script: no control characters (a newline would add a line)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Failure("%s %r has control characters: it cannot go into a boot script" % (what, value))
    return value


def systemd_quote(value):
    """One word for ExecStart=: double-quoted, with systemd's specifier (%) and variable ($) signs doubled."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return '"%s"' % escaped


def unit_text(paths, python):
    return UNIT.format(description=paths.app_dir.replace("%", "%%"), current=paths.current.replace("%", "%%"),
                       python=systemd_quote(python), config=systemd_quote(paths.config))


def boot_text(paths, python, prefix):
    if not prefix.startswith("/") or any(c.isspace() for c in prefix):
        raise Failure("PREFIX %r is not a plain absolute path: cannot write the boot script's #! line" % prefix)
    return BOOT.format(prefix=prefix, current=shlex.quote(paths.current), python=shlex.quote(python),
                       config=shlex.quote(paths.config), log=shlex.quote(paths.log("supervisor")))


#: how every release's unit and boot script say who wrote them (older ones too: remote/supervisor.py)
_MARKS = ("(sulfur-ops supervisor of ", "# sulfur-ops: start the Sulfur stack")


def written_here(path, paths):
    """Whether ``path`` is the unit or boot script sulfur-ops wrote for this app_dir (a plain file, which
    says so and runs this app_dir's supervisor.json): the only file outside app_dir a host task removes."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(65536)
    except OSError:
        return False
    forms = {paths.config, systemd_quote(paths.config), shlex.quote(paths.config)}
    runs_ours = any(re.search(r"\brun %s(\s|$)" % re.escape(form), text) for form in forms)
    return runs_ours and any(mark in text for mark in _MARKS)


def _run_quiet(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return out.returncode, (out.stderr or out.stdout).strip()


def autostart(app_dir, remove=False):
    """Install (or remove) the unit or boot script; notes say what the host still lacks."""
    paths = Layout(app_dir)
    unit, boot = autostart_paths()
    termux = detect_platform() == "termux"
    target, notes = (boot if termux else unit), []
    systemctl = None if termux else which("systemctl")
    if remove:
        for path in (unit, boot):
            if not os.path.lexists(path):
                continue
            if not written_here(path, paths):
                notes.append("left %s in place: sulfur-ops did not write it for %s" % (path, paths.app_dir))
                continue
            if path == unit and systemctl:
                _run_quiet([systemctl, "--user", "disable", UNIT_NAME])
            os.unlink(path)
        return {"ok": True, "action": "removed", "path": target, "notes": notes}
    if not os.path.exists(paths.config):
        raise Failure("no supervisor settings on this host yet (run/supervisor.json): run invoke restart once first")
    python = _plain(sys.executable, "the interpreter")
    _plain(paths.app_dir, "app_dir")
    text = boot_text(paths, python, os.environ.get("PREFIX", "/usr")) if termux else unit_text(paths, python)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".tmp", "w") as handle:
        handle.write(text)
    os.chmod(target + ".tmp", 0o700 if termux else 0o600)
    os.replace(target + ".tmp", target)
    if termux:
        notes.append("runs at boot once the Termux:Boot app is installed and opened once")
    elif not systemctl:
        notes.append("systemctl not found: the unit is written, enable it with your init system")
    else:
        notes.extend(_enable(systemctl))
    return {"ok": True, "action": "installed", "path": target, "notes": notes}


def _enable(systemctl):
    notes = []
    for argv in ([systemctl, "--user", "daemon-reload"], [systemctl, "--user", "enable", UNIT_NAME]):
        code, said = _run_quiet(argv)
        if code != 0:
            why = (said.splitlines() or ["no user manager"])[-1]
            notes.append("systemctl --user is not available here (%s): the unit is written; enable it with "
                         "systemctl --user enable %s in a login session" % (why, UNIT_NAME))
            break
    code, said = _run_quiet(["loginctl", "show-user", os.environ.get("USER", ""), "-p", "Linger"])
    if "Linger=yes" not in said:
        notes.append("lingering is off: the stack starts at your login, not at boot; an admin can run "
                     "loginctl enable-linger %s" % os.environ.get("USER", "USER"))
    return notes
