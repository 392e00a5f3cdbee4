"""`invoke run` over SSH on the lab's linux and termux hosts, in a real release: the command runs in the
current release with its venv first on PATH and the bot's environment, the words arrive as typed,
each host has its own exit status, and Ctrl+C on this machine stops the commands on every host,
leaving no process behind there."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import ROOT, invoke, wait_for
from test_run_local import SHOW, _running, shown

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        lab.install_release()
        for name, host in lab.hosts.items():
            path = Path(host.app_dir, "shared", ".env")
            path.write_text("GREETING='hi you'\nAPI_KEY=an-api-key-value\nDASHBOARD_TOKEN=dash-secret\n"
                            "ETCD_PASSWORD=etcd-secret\n"
                            "EXIT_WITH=%d\n" % (3 if name == "termux" else 0))
            os.chown(path, host.user.pw_uid, host.user.pw_gid)
            path.chmod(0o600)
        yield lab


def test_it_runs_in_the_release_with_its_venv_and_the_bots_environment_on_every_host(lab):
    words = ["a b", "$HOME", "it's", "", "--flag", "x;y|z", "*"]
    out = invoke(lab.inventory_path, "run", "--all", "--raw", "--", "python", "-c", SHOW, *words)
    assert out.returncode == 0, out.stdout + out.stderr
    for name, host in lab.hosts.items():
        doc = shown(out, name)
        release = os.path.realpath(os.path.join(host.app_dir, "current"))
        assert doc["cwd"] == release and doc["path0"] == release + "/.venv/bin", (name, doc)
        assert doc["argv"] == words and doc["stdin"] == "" and doc["tty"] is False
        assert doc["env"] == {"GREETING": "hi you", "API_KEY": "[API_KEY]", "DASHBOARD_TOKEN": None,
                              "ETCD_PASSWORD": None}
        assert "%s: exit 0 in " % name in out.stdout
    each = invoke(lab.inventory_path, "run", "--all", "--shell", "--", "echo leaving with $EXIT_WITH; exit $EXIT_WITH")
    assert each.returncode == 1, each.stdout + each.stderr
    assert "linux: leaving with 0" in each.stdout and "termux: leaving with 3" in each.stdout
    assert "linux: exit 0 in " in each.stdout and "termux: FAILED: exit status 3" in each.stdout


def test_ctrl_c_here_stops_the_command_on_every_host_and_leaves_nothing_behind(lab):
    marker = "run-ssh-marker-%d" % os.getpid()
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path), XDG_CACHE_HOME=str(lab.dir / "cache"))
    line = "sleep 986 & exec python -c 'import time; print(\"up\", flush=True); time.sleep(600)' %s" % marker
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "run", "--all", "--shell", "--", line], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: len(_running(marker)) == 2, 60, "the command on both hosts")
        for name, host in lab.hosts.items():
            lock = Path(host.app_dir, "run", "lock")
            assert "run by" in lock.read_text(), name
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # this machine's Ctrl+C: the hosts hear of it over SSH only
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "linux: up" in out and "termux: up" in out
    assert "linux: FAILED: stopped" in out and "termux: FAILED: stopped" in out, out + err
    print("stopped on both hosts %.1f s after Ctrl+C" % (time.monotonic() - started))
    wait_for(lambda: not _running(marker) and not _running("sleep 986"), 10, "nothing left on the hosts")
    after = invoke(lab.inventory_path, "run", "--all", "--", "python", "-c", "pass")  # the lock was let go on both
    assert after.returncode == 0, after.stdout + after.stderr
