"""`invoke run` on this machine, through the same host-side code every host runs (test_run_ssh.py runs
it over SSH in a release): the words arrive exactly as typed, in the bot's environment with the venv
first on PATH and no stdin or terminal; output is prefixed and escaped, stderr stays stderr; exit
statuses 0, 1 and 2; the host's lock held while it runs; Ctrl+C leaves no process behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dashproc import ROOT, invoke, local_inventory, wait_for

SHOW = ("import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'stdin': sys.stdin.read(), "
        "'tty': os.isatty(1), 'path0': os.environ['PATH'].split(os.pathsep)[0], 'env': {k: os.environ.get(k) "
        "for k in ('GREETING', 'API_KEY', 'DASHBOARD_TOKEN', 'ETCD_PASSWORD')}}))")


def setup(tmp_path):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "shared" / ".env").write_text("GREETING='hi you'\nAPI_KEY=an-api-key-value\nDASHBOARD_TOKEN=dash-secret\n"
                                         "ETCD_PASSWORD=etcd-secret\n")
    return app, local_inventory(tmp_path / "inventory.yml", app)


def shown(out, host="local"):
    """The document SHOW printed on ``host``, from its prefixed line."""
    lines = [line for line in out.stdout.splitlines() if line.startswith(host + ": {")]
    assert len(lines) == 1, out.stdout + out.stderr
    return json.loads(lines[0][len(host) + 2:])


def test_the_words_arrive_as_typed_in_the_bots_environment(tmp_path):
    _, inventory = setup(tmp_path)
    words = ["a b", "$HOME", "it's", "", "--flag", "naïve", "x;y|z", "*", "\\n"]
    out = invoke(inventory, "run", "--raw", "--", "python", "-c", SHOW, *words)  # raw: JSON's \\ not doubled
    assert out.returncode == 0, out.stdout + out.stderr
    doc = shown(out)
    assert doc["argv"] == words
    # the command sees API_KEY; its output shows it as its key's name (8 characters or more: a secret)
    assert doc["env"] == {"GREETING": "hi you", "API_KEY": "[API_KEY]", "DASHBOARD_TOKEN": None, "ETCD_PASSWORD": None}
    assert doc["cwd"] == str(ROOT) and doc["path0"] == str(ROOT / ".venv" / "bin")  # no release here: the checkout
    assert doc["stdin"] == "" and doc["tty"] is False
    assert out.stdout.splitlines()[-1].startswith("local: exit 0 in ")
    shell = invoke(inventory, "run", "--shell", "--", "echo $GREETING | tr a-z A-Z;", "echo", "'two words'")
    assert shell.returncode == 0 and "local: HI YOU\nlocal: two words\n" in shell.stdout, shell.stdout


def test_exit_statuses_stderr_and_a_hostile_output(tmp_path):
    _, inventory = setup(tmp_path)
    failing = "import sys; print('out'); print('\\x1b[2Jerr\\rX', file=sys.stderr); sys.exit(3)"
    out = invoke(inventory, "run", "--", "python", "-c", failing)
    assert out.returncode == 1
    assert "local: out\n" in out.stdout and "local: \\x1b[2Jerr\\rX\n" in out.stderr, (out.stdout, out.stderr)
    assert "\x1b" not in out.stdout + out.stderr
    raw = invoke(inventory, "run", "--raw", "--", "python", "-c", failing)
    assert "local: \x1b[2Jerr" in raw.stderr  # --raw: as it came
    assert out.stdout.splitlines()[-1].startswith("local: FAILED: exit status 3")
    slow = invoke(inventory, "run", "--timeout", "1", "--", "python", "-c", "import time; time.sleep(60)")
    assert slow.returncode == 1 and "timed out after 1 s (--timeout) and was stopped" in slow.stdout, slow.stdout
    missing = invoke(inventory, "run", "--", "no-such-command-here")
    assert missing.returncode == 1 and "cannot run no-such-command-here" in missing.stdout, missing.stdout
    empty = invoke(inventory, "run", "--")
    assert empty.returncode == 2 and empty.stderr.strip().splitlines() == [
        "error: name the command after --: invoke run --host H -- CMD ARGS... "
        "(a shell line: invoke run --shell -- 'CMD | CMD')"]
    bare = invoke(inventory, "run", "ls")  # without --: invoke's own refusal, left as it is
    assert bare.returncode != 0 and "No idea what 'ls' is" in bare.stderr, bare.stderr
    unknown = invoke(inventory, "run", "--host", "nowhere", "--", "true")
    assert unknown.returncode == 2 and "nowhere" in unknown.stderr and "Traceback" not in unknown.stderr


def test_it_holds_the_hosts_lock_and_ctrl_c_leaves_no_process_behind(tmp_path):
    """The terminal's Ctrl+C: SIGINT to the whole foreground process group, as a shell sends it."""
    app, inventory = setup(tmp_path)
    marker = "run-marker-%d" % os.getpid()
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(tmp_path / "cache"))
    line = "sleep 987 & exec python -c 'import time; print(\"up\", flush=True); time.sleep(600)' %s" % marker
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "run", "--shell", "--", line], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lock = app / "run" / "lock"
        wait_for(lambda: lock.exists() and "run by" in lock.read_text(), 60, "the run to take the lock")
        wait_for(lambda: _running(marker), 30, "the command to start")
        look = invoke(inventory, "run", "--no-lock", "--", "cat", str(lock))
        assert look.returncode == 0 and "run by" in look.stdout and "(no lock)" in look.stdout, look.stdout
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "local: up" in out and "local: FAILED: stopped" in out, out + err
    time.sleep(0.5)
    assert not _running(marker) and not _running("sleep 987"), "left behind: %s" % _running(marker)


def _running(pattern):
    """Pids whose command line holds ``pattern`` (zombies have none: they hold nothing)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ours = " -m invoke " in cmdline or "pytest" in cmdline  # the operator's side, and this test
        if pattern in cmdline and not ours:
            found.append(int(pid))
    return found
