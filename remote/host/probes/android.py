"""What kills bots on an Android phone, for `doctor` on a Termux host.

- Doze: without termux-wake-lock the app sleeps with the screen off and the bot's gateway drops.
- The phantom process killer (Android 12+): processes of apps beyond 32 in all, or busy ones, are
  killed (signal 9, no warning). Its switch is readable from Termux on some phones only; where it is
  not, the note says how to turn it off with adb from a computer.
- Battery optimisation: Android may stop Termux in the background unless it is "Unrestricted".
"""

import subprocess

from remote.host.common.files import Layout, read_json
from remote.host.common.system import which

ADB_PHANTOM = ('adb shell "/system/bin/device_config set_sync_disabled_for_tests persistent; '
               '/system/bin/device_config put activity_manager max_phantom_processes 2147483647"; '
               'adb shell settings put global settings_enable_monitor_phantom_procs false')
BATTERY = ("battery optimisation: set Termux to Unrestricted (Android settings > Apps > Termux > Battery), "
           "or Android may stop it in the background")


def _ask(argv):
    """A setting's value, or None where the command is missing, fails or prints nothing useful."""
    found = which(argv[0])
    if not found:
        return None
    try:
        out = subprocess.run([found] + argv[1:], capture_output=True, text=True, timeout=5,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value and value != "null" else None


def report(app_dir):
    """{"wake_lock": ..., "phantom_killer": ..., "notes": [...]}: facts where readable, else what to do."""
    notes = []
    supervisor = read_json(Layout(app_dir).state).get("supervisor", {})
    if supervisor.get("wake_lock"):
        wake = "held (taken by the supervisor)"
    elif which("termux-wake-lock"):
        wake = "available, not taken: set wake_lock: true (the Termux default) and restart"
    else:
        wake = "termux-wake-lock missing: pkg install termux-tools"
    monitor = _ask(["settings", "get", "global", "settings_enable_monitor_phantom_procs"])
    limit = _ask(["device_config", "get", "activity_manager", "max_phantom_processes"])
    if monitor == "false" or (limit and limit.isdigit() and int(limit) >= 2 ** 31 - 1):
        phantom = "off (settings_enable_monitor_phantom_procs=%s, max_phantom_processes=%s)" % (monitor, limit)
    elif monitor is None and limit is None:
        phantom = "unknown (not readable from Termux)"
        notes.append("phantom process killer: Android 12+ kills processes beyond 32; turn it off from a "
                     "computer with: " + ADB_PHANTOM)
    else:
        phantom = "ON (settings_enable_monitor_phantom_procs=%s, max_phantom_processes=%s)" % (monitor, limit)
        notes.append("phantom process killer is on: it will kill the bot; turn it off with: " + ADB_PHANTOM)
    notes.append(BATTERY)
    return {"wake_lock": wake, "phantom_killer": phantom, "notes": notes}
