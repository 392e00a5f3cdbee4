"""The operator-host contract: a protocol number both ways, older and newer counterparts, stdin's end.

The counterparts are real processes: this checkout's ctl, a release unpacked from a real package, and
small stand-ins for releases older or newer than this code (a real old release would need git history
that a shallow clone may lack).
"""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
from dashproc import ROOT, ctl_run, free_port, invoke, local_inventory

from remote import agentcalls, release
from remote.connections import read_answer
from remote.errors import ContractError, HostError, UnknownCommand
from remote.host.common import wire
from remote.host.common.contract import PROTOCOL
from remote.host.common.wire import OLDEST
from remote.inventory import load

OLDER = "the release on local is older than this sulfur-ops: run `invoke deploy --host local`"


def fake_release(app, files):
    """app/current -> a release holding just ``files`` ({relative path: text})."""
    release_dir = app / "releases" / "20260101000000"
    for name, text in files.items():
        (release_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (release_dir / name).write_text(text)
    (app / "current").symlink_to(release_dir)


def status_line(tmp_path):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    return invoke(inventory, "status")


def test_a_release_from_before_the_host_package_says_deploy(tmp_path):
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/hostctl.py": "raise SystemExit(2)\n"})
    out = status_line(tmp_path)
    assert out.returncode == 1
    row = out.stdout.splitlines()[1]
    assert row.split()[:3] == ["local", "-", "error"] and OLDER in row


def test_an_older_ctl_that_cannot_parse_the_request_says_deploy(tmp_path):
    old_ctl = ("import argparse\np = argparse.ArgumentParser(prog='python -m remote.host.ctl')\n"
               "p.add_argument('command', choices=['status'])\np.add_argument('--app-dir', required=True)\n"
               "p.parse_args()\n")
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/host/__init__.py": "",
                                    "remote/host/ctl.py": old_ctl})
    out = status_line(tmp_path)
    assert out.returncode == 1 and OLDER in out.stdout
    assert "the following arguments are required: --app-dir" in out.stdout  # and what it said


def test_a_newer_release_says_update_sulfur_ops(tmp_path):
    newer = ("import json\nprint(json.dumps({'ok': True, 'protocol': %d, 'protocols': [%d, %d], 'services': {}}))\n"
             % (PROTOCOL + 1, PROTOCOL + 1, PROTOCOL + 1))
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/host/__init__.py": "",
                                    "remote/host/ctl.py": newer})
    out = status_line(tmp_path)
    assert out.returncode == 1
    assert "the release on local speaks protocol %d, this sulfur-ops %d-%d: update sulfur-ops" % (
        PROTOCOL + 1, OLDEST, PROTOCOL) in out.stdout


def test_a_newer_operator_that_still_speaks_this_protocol_is_served_in_it(tmp_path):
    """The next sulfur-ops speaks [1, PROTOCOL + 1]: this release answers in the highest both speak."""
    out = ctl_run(ROOT, "status", tmp_path / "app", protocols=[OLDEST, PROTOCOL + 1])
    doc = json.loads(out.stdout)
    assert out.returncode == 0 and doc["ok"] and doc["protocol"] == PROTOCOL and doc["protocols"] == [OLDEST, PROTOCOL]
    out = ctl_run(ROOT, "status", tmp_path / "app", protocol=OLDEST)  # an operator from before ranges
    assert json.loads(out.stdout)["protocol"] == OLDEST and out.returncode == 0


def test_this_ctl_refuses_an_operator_that_shares_no_protocol_and_the_operator_says_deploy(tmp_path, monkeypatch):
    """An operator whose oldest protocol is past this release's newest."""
    out = ctl_run(ROOT, "status", tmp_path / "app", protocol=PROTOCOL + 1, protocols=[PROTOCOL + 1, PROTOCOL + 1])
    doc = json.loads(out.stdout)
    assert out.returncode == 2 and doc["kind"] == "protocol" and doc["protocols"] == [OLDEST, PROTOCOL]
    assert not doc["ok"] and "deploy a newer release" in doc["error"]
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    monkeypatch.setattr(wire, "OLDEST", PROTOCOL + 1)
    monkeypatch.setattr(wire, "PROTOCOL", PROTOCOL + 1)
    with pytest.raises(ContractError) as caught:
        read_answer(_Result(out), "ctl", host)
    assert str(caught.value) == OLDER


def test_a_command_this_release_does_not_know_is_unknown_not_an_error(tmp_path, monkeypatch):
    """What a newer operator's new command meets here: kind unknown_command, in the agreed protocol;
    the operator names the host to deploy, for that command only."""
    out = ctl_run(ROOT, "fence", tmp_path / "app", protocol=PROTOCOL + 1, protocols=[OLDEST, PROTOCOL + 1])
    doc = json.loads(out.stdout)
    assert out.returncode == 2 and doc["kind"] == "unknown_command" and doc["protocol"] == PROTOCOL
    assert "unknown command 'fence'" in doc["error"]
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    with pytest.raises(UnknownCommand) as caught:
        read_answer(_Result(out), "ctl", host, "fence")
    assert str(caught.value) == ("local runs an older release, which has no `fence`: "
                                 "run `invoke deploy --host local` first")


class _Result:
    """What invoke's run returns, made from a subprocess's: the reader needs stdout, stderr, exited."""

    def __init__(self, completed):
        self.stdout, self.stderr, self.exited = completed.stdout, completed.stderr, completed.returncode


def test_bad_requests_are_one_line_and_exit_2(tmp_path):
    out = ctl_run(ROOT, "status", tmp_path / "app", {"by": "me"})
    assert out.returncode == 2 and json.loads(out.stdout)["error"] == "status takes no option by (it takes: token_env)"
    out = ctl_run(ROOT, "restart", tmp_path / "app", {"grace": "soon"})
    assert out.returncode == 2 and "option grace must be float" in json.loads(out.stdout)["error"]
    out = subprocess.run([sys.executable, "-m", "remote.host.ctl", "status"], cwd=ROOT, capture_output=True,
                         text=True, input="")
    assert out.returncode == 2 and "no request on stdin" in json.loads(out.stdout)["error"]


@pytest.fixture
def unpacked(tmp_path):
    """A real release package of this checkout, unpacked as a host has it."""
    package = release.pack(None, False, tmp_path)
    target = tmp_path / "release"
    with tarfile.open(package.path) as tar:
        tar.extractall(target)
    return target


def test_an_operator_from_before_the_contract_is_told_to_update(unpacked):
    out = subprocess.run([sys.executable, "-S", "-m", "remote.hostctl", "restart", "--app-dir", "/nowhere"],
                         cwd=unpacked, capture_output=True, text=True)
    doc = json.loads(out.stdout.splitlines()[-1])
    assert out.returncode == 2 and not doc["ok"] and "update sulfur-ops on the operator's machine" in doc["error"]


def test_units_of_older_releases_still_start_the_supervisor_through_the_shim(unpacked, tmp_path):
    port, app = free_port(), tmp_path / "app"
    (app / "run").mkdir(parents=True)
    config = app / "run" / "supervisor.json"
    config.write_text(json.dumps({"app_dir": str(app), "code_dir": str(unpacked), "python": sys.executable,
                                  "port": port, "spare": False}))
    # exactly what an old unit's ExecStart says: the script path, no -m, started from anywhere
    proc = subprocess.Popen([sys.executable, str(unpacked / "remote" / "supervisor.py"), "run", str(config)],
                            cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _running_dashboard(app, proc)
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as resp:
            assert json.loads(resp.read())["pid"] == pid
        assert json.loads((app / "run" / "state.json").read_text())["supervisor"]["pid"] == proc.pid
    finally:
        stop = ctl_run(unpacked, "stop", app)
        assert json.loads(stop.stdout)["ok"], stop.stdout + stop.stderr
        assert proc.wait(30) == 0


def _running_dashboard(app, supervisor, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert supervisor.poll() is None, "the supervisor exited %s" % supervisor.returncode
        try:
            dash = json.loads((app / "run" / "state.json").read_text())["services"]["dashboard"]
        except (OSError, ValueError, KeyError):
            dash = {}
        if dash.get("state") == "running":
            return dash["pid"]
        time.sleep(0.05)
    raise AssertionError("no dashboard running within %d s" % timeout)


@pytest.mark.parametrize("ending", ["eof", "ctrl-c"])
def test_logs_follow_ends_when_its_stdin_ends(tmp_path, ending):
    log = tmp_path / "app" / "logs" / "bot.log"
    log.parent.mkdir(parents=True)
    log.write_text("old line\n")
    request = {"protocol": PROTOCOL, "command": "logs", "app_dir": str(tmp_path / "app"),
               "options": {"service": "bot", "lines": 5, "follow": True}}
    proc = subprocess.Popen([sys.executable, "-S", "-m", "remote.host.ctl", "logs"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "old line\n"
        with open(log, "a") as handle:
            handle.write("new line\n")
        assert proc.stdout.readline() == "new line\n"
        assert proc.poll() is None  # still following
        if ending == "eof":
            proc.stdin.close()  # what sshd does when the operator's connection goes away
        else:
            proc.stdin.write("\x03")  # what invoke sends on Ctrl+C
            proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_the_agent_travels_whole_in_its_command(tmp_path):
    """Run from an empty directory with no checkout on the path: every module it needs is in the command."""
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    assert agentcalls.bundle()[-1] == "remote.host.agent" and "remote.host.ctl" not in agentcalls.bundle()
    request = json.dumps({"protocol": PROTOCOL, "command": "probe", "port": free_port(), "app_dir": str(tmp_path)})
    out = subprocess.run(["sh", "-c", agentcalls.agent_command(host)], cwd=tmp_path, input=request + "\n",
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=60)
    doc = json.loads(out.stdout)
    assert out.returncode == 0, out.stderr
    assert doc["protocol"] == PROTOCOL and doc["state"] == "free" and doc["method"]
    assert not Path(tmp_path, "remote").exists()


@pytest.mark.parametrize("app_dir", ["", "relative/dir/that/is/not/there"])
def test_doctor_ends_for_an_app_dir_that_is_empty_or_relative(tmp_path, app_dir):
    """The walk up to an existing parent stops where dirname stops changing (it looped forever on '')."""
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    request = json.dumps({"protocol": PROTOCOL, "command": "doctor", "port": free_port(), "app_dir": app_dir})
    # HOME here: an empty app_dir means ~/sulfur, which a developer's own `invoke dev` may have made
    out = subprocess.run(["sh", "-c", agentcalls.agent_command(host)], cwd=tmp_path, input=request + "\n",
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["disk_free"] is not None and doc["app_dir_exists"] is False


def test_an_endless_answer_ends_the_call_with_one_line_and_bounded_memory(tmp_path):
    """A host whose ctl answers 300 MB on one line (broken, or hostile): the operator stops reading at
    16 MiB, kills the command, and says so in one line, fast and without holding the flood in memory."""
    flood = ("import sys\nchunk = 'x' * 65536\nfor _ in range(300 * 16):\n    sys.stdout.write(chunk)\n"
             "sys.stdout.flush()\n")
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/host/__init__.py": "",
                                    "remote/host/ctl.py": flood})
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    measure = ("import resource, runpy, sys\nsys.argv = ['invoke', 'status']\ntry:\n"
               "    runpy.run_module('invoke', run_name='__main__')\nfinally:\n"
               "    print('maxrss_kb=%d' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", measure], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, SULFUR_INVENTORY=str(inventory)))
    elapsed = time.monotonic() - started
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    [row] = [line for line in out.stdout.splitlines() if line.startswith("local")]
    assert "the host's answer is larger than 16 MiB" in row
    assert elapsed < 30, elapsed  # generous: it takes about a second
    rss_mb = int(out.stderr.split("maxrss_kb=")[1].split()[0]) / 1024
    assert rss_mb < 200, rss_mb  # 300 MB were sent; a capture of all of it would be far over this


def test_logs_against_a_host_that_never_answers_ends_at_its_timeout_with_one_line(tmp_path):
    hang = "import time\ntime.sleep(600)\n"
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/host/__init__.py": "",
                                    "remote/host/ctl.py": hang})
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    started = time.monotonic()
    out = invoke(inventory, "logs", "--timeout", "2")
    assert time.monotonic() - started < 20
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "local: the logs did not come within 2 s" in out.stdout + out.stderr


def test_progress_lines_pass_and_a_flood_without_newlines_costs_no_time():
    """deploy's progress relay: lines split across chunks arrive whole; 8 MiB without a newline (a
    host's flood) is dropped as it comes, in linear time (it was quadratic: 8 MiB took 14 s)."""
    from remote.connections import _Progress

    got = []
    relay = _Progress(got.append)
    for chunk in ["progress: a\nprog", "ress: b\n", "x" * 70000, "y\nprogress: c\n", "progress: d"]:
        relay.write(chunk)
    assert got == ["a", "b", "c"]
    started = time.monotonic()
    for _ in range(8 * 1024):
        relay.write("z" * 1024)
    relay.write("\nprogress: e\n")
    assert got == ["a", "b", "c", "e"] and relay.size == 0
    assert time.monotonic() - started < 5


def test_an_answer_with_nan_is_refused_with_one_line(tmp_path):
    nan = "print('{\"ok\": true, \"protocol\": 1, \"now\": NaN, \"services\": {}}')\n"
    fake_release(tmp_path / "app", {"remote/__init__.py": "", "remote/host/__init__.py": "",
                                    "remote/host/ctl.py": nan})
    out = status_line(tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "the answer holds NaN or Infinity" in out.stdout


def test_the_answer_is_the_last_line_as_written_never_a_progress_line(tmp_path):
    """A line ends at "\\n" alone: a host's progress text holding \\u2028 or \\x1e cannot pass off a
    document of its own as the answer, nor hide the real one."""
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    forged = json.dumps(dict(wire.header("status"), ok=True, forged=True))
    real = dict(wire.header("status"), ok=True)
    out = _Result(subprocess.CompletedProcess([], 0, "progress: x\u2028%s\n%s\n" % (forged, json.dumps(real)), ""))
    assert read_answer(out, "ctl", host) == real
    for tail in ("progress: done \u2028%s\n" % forged, "progress: \x1e%s" % forged):
        with pytest.raises(HostError):
            read_answer(_Result(subprocess.CompletedProcess([], 1, json.dumps(real) + "\n" + tail, "")), "ctl", host)
