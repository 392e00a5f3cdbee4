"""`invoke dev` and `invoke --list`, run as a user runs them."""

import signal
import socket
import subprocess
import sys

from dashproc import ROOT, wait_healthy

INVOKE = [sys.executable, "-m", "invoke"]


def test_invoke_list_shows_every_task_with_help():
    out = subprocess.run(INVOKE + ["--list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "dev" in out and "dashboard" in out


def test_invoke_dev_serves_and_ctrl_c_frees_the_port(tmp_path, port):
    env_dir = tmp_path / "app"
    proc = subprocess.Popen(INVOKE + ["dev", "--port", str(port)], cwd=ROOT,
                            env={"DASHBOARD_APP_DIR": str(env_dir), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_healthy(proc, port)["pid"] == proc.pid  # exec'd: the task's process is the dashboard
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert "http://127.0.0.1:%d" % port in out
    with socket.socket() as sock:  # no listener left behind (TIME_WAIT from our checks is fine)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
