"""`invoke autostart`: a systemd user unit on Linux, a Termux:Boot script on Termux; doctor reports it."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import invoke

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))




@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        lab.install_release(stop=False)
        yield lab


def test_autostart_install_report_and_remove(lab):
    out = invoke(lab.inventory_path, "autostart", "--all", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    docs = {d["host"]: d for d in json.loads(out.stdout)}
    linux, termux = lab.hosts["linux"], lab.hosts["termux"]

    unit = Path(linux.user.pw_dir, ".config/systemd/user/sulfur-ops.service")
    assert docs["linux"]["path"] == str(unit)
    text = unit.read_text()
    assert "WorkingDirectory=%s/current\n" % linux.app_dir in text
    assert 'ExecStart="/usr/bin/python3" -S -m remote.host.supervisor run "%s/run/supervisor.json"' % (
        linux.app_dir) in text
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    # no user systemd inside a test namespace: said plainly, with what to do
    assert any("systemctl" in note and "enable" in note for note in docs["linux"]["notes"])

    boot = Path(termux.user.pw_dir, ".termux/boot/sulfur-ops")
    script = boot.read_text()
    assert script.startswith("#!%s/bin/sh\n" % termux.prefix)  # an explicit interpreter: no /usr/bin/env
    assert "/usr/bin/env" not in script
    assert "cd %s/current || exit 1\n" % termux.app_dir in script
    # the wake lock before the supervisor: without it Android dozes the app and the bot with it
    assert script.index("&& termux-wake-lock\n") < script.index("\nexec ")
    assert "-S -m remote.host.supervisor run %s/run/supervisor.json" % termux.app_dir in script
    assert os.access(boot, os.X_OK)

    doctor = json.loads(invoke(lab.inventory_path, "doctor", "--all", "--json").stdout)
    assert {d["host"]: d["autostart"] for d in doctor} == {"linux": [str(unit)], "termux": [str(boot)]}

    assert invoke(lab.inventory_path, "autostart", "--all", "--remove").returncode == 0
    assert not unit.exists() and not boot.exists()
    doctor = json.loads(invoke(lab.inventory_path, "doctor", "--all", "--json").stdout)
    assert all(d["autostart"] == [] for d in doctor)


def test_the_boot_script_really_starts_the_stack(lab):
    """Run the Termux:Boot script as Termux:Boot would."""
    termux = lab.hosts["termux"]
    assert invoke(lab.inventory_path, "autostart", "--host", "termux").returncode == 0
    assert invoke(lab.inventory_path, "stop", "--host", "termux").returncode == 0  # as after a reboot
    boot = Path(termux.user.pw_dir, ".termux/boot/sulfur-ops")
    proc = termux.spawn_as_user(["/usr/bin/env", "-i", "PATH=%s/bin" % termux.prefix, "HOME=%s" % termux.user.pw_dir,
                                 str(boot)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = None
        for _ in range(100):
            out = invoke(lab.inventory_path, "status", "--host", "termux", "--json")
            status = json.loads(out.stdout)[0]
            if status.get("services", {}).get("dashboard", {}).get("state") == "running":
                break
            time.sleep(0.2)
        assert status["services"]["dashboard"]["state"] == "running"
        assert status["supervisor"]["pid"] == proc.pid  # exec'd: the boot script became the supervisor
    finally:
        invoke(lab.inventory_path, "stop", "--host", "termux")
        invoke(lab.inventory_path, "autostart", "--host", "termux", "--remove")
