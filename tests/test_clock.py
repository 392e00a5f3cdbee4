"""A wall clock step (NTP at boot on a Pi, which has no RTC) changes no interval of the supervisor.

libfaketime moves the wall clock of the supervisor's process tree, and only theirs, while their
monotonic clock runs on (FAKETIME_DONT_FAKE_MONOTONIC). That mode breaks Python's time.sleep (EINVAL
from its clock_nanosleep wrapper), so the supervisor, whose loop waits in select(), is started the
way autostart starts it rather than through ctl, whose waits sleep.
"""

import glob
import json
import os
import subprocess
import sys
import time

import pytest
from dashproc import ROOT, ctl_run, free_port

LIB = (glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + [None])[0]
pytestmark = pytest.mark.skipif(LIB is None, reason="needs libfaketime (make test installs it as root)")


def test_a_clock_stepped_back_an_hour_does_not_hold_a_crashed_bot_in_backoff(tmp_path):
    app, offset = tmp_path / "app", tmp_path / "faketime"
    offset.write_text("+0\n")
    env = dict(os.environ, LD_PRELOAD=LIB, FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1")
    (app / "run").mkdir(parents=True)
    config = app / "run" / "supervisor.json"
    config.write_text(json.dumps({"app_dir": str(app), "code_dir": str(ROOT), "python": sys.executable,
                                  "port": free_port(), "spare": False,
                                  "bot_command": "%s -S -c \"raise SystemExit(1)\"" % sys.executable}))
    supervisor = subprocess.Popen([sys.executable, "-S", "-m", "remote.host.supervisor", "run", str(config)],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def bot():
        assert supervisor.poll() is None, "the supervisor exited %s" % supervisor.returncode
        try:
            return json.loads((app / "run" / "state.json").read_text())["services"]["bot"]
        except (OSError, ValueError, KeyError):
            return {"state": None, "restarts": 0}

    try:
        deadline = time.monotonic() + 30
        while bot()["state"] != "backoff" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bot()["state"] == "backoff" and bot()["restarts"] == 0  # waiting 1 s for its first restart
        offset.write_text("-1h\n")  # NTP steps the clock back an hour
        deadline = time.monotonic() + 20
        while bot()["restarts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bot()["restarts"] >= 1, "the bot waited for the wall clock to catch up"
    finally:
        ctl_run(ROOT, "stop", app)
        supervisor.wait(30)
