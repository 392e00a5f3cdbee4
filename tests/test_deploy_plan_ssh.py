"""`invoke deploy --plan`, `--serial N` and deploy hooks on real SSH test hosts (linux and termux).

The plan must write nothing on a host and name .env keys, never values; hooks run on each host with
`sh` from PATH, in the new release, with its venv and shared/.env; a failing before_switch leaves
`current` alone, a failing after_switch rolls back; --serial stops at the first failed batch.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import ROOT, invoke
from test_deploy_ssh import current, healthz, healthz_pid, releases

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))


def write_source(source, files):
    for name, text in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        lab.source = lab.dir / "bot"
        write_source(lab.source, {"requirements.txt": "", "sulfur_bot/__init__.py": "", "sulfur_bot/old.py": "1\n",
                                  "sulfur_bot/main.py": "VERSION = 1\n"})
        lab.base = lab.inventory_path.read_text().replace(
            "  connect_timeout: 5", "  connect_timeout: 5\n  source: %s\n  keep_releases: 20" % lab.source)
        lab.inventory_path.write_text(lab.base)
        out = invoke(lab.inventory_path, "deploy", "--wheels")
        assert out.returncode == 0, out.stdout + out.stderr
        yield lab


def inventory(lab, name, defaults="", **per_host):
    """The lab's inventory with YAML lines added to defaults and keys added to each host's entry."""
    text = lab.base.replace("  connect_timeout: 5", "  connect_timeout: 5\n" + defaults) if defaults else lab.base
    for host, keys in per_host.items():
        text = text.replace("  %s: {" % host, "  %s: {%s, " % (host, keys))
    path = lab.dir / name
    path.write_text(text)
    return path


def tree(host):
    """Every path under the host's app_dir with its size and mtime (links: their target)."""
    found = {}
    for folder, dirs, files in os.walk(host.app_dir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[path] = (st.st_size, st.st_mtime_ns, os.readlink(path) if os.path.islink(path) else None)
    return found


def deploy(path, *args):
    time.sleep(1.0)  # a stamp of its own
    return invoke(path, "deploy", "--wheels", *args)


def test_plan_names_files_venv_and_env_keys_and_writes_nothing(lab):
    linux = lab.hosts["linux"]
    env = Path(linux.app_dir, "shared", ".env")
    env.write_text("BOT_TOKEN=old-secret-value-1\nKEPT=same\nGONE=x\n")
    os.chown(env, linux.user.pw_uid, linux.user.pw_gid)
    write_source(lab.source, {"sulfur_bot/main.py": "VERSION = 2\n",
                              **{"sulfur_bot/new%02d.py" % i: "N = %d\n" % i for i in range(22)}})
    (lab.source / "sulfur_bot" / "old.py").unlink()
    (lab.source / "sulfur_bot" / ".env.local").write_text("BOT_TOKEN=never-shipped\n")
    new_env = lab.dir / "plan.env"
    new_env.write_text("BOT_TOKEN=new-secret-value-2\nKEPT=same\nADDED=1\n")
    assert invoke(lab.inventory_path, "stop", "--all").returncode == 0  # a running stack writes its own files
    before = {h.name: tree(h) for h in lab.hosts.values()}
    try:
        out = invoke(lab.inventory_path, "deploy", "--plan", "--env-file", str(new_env))
        as_json = invoke(lab.inventory_path, "deploy", "--plan", "--json", "--env-file", str(new_env))
        assert {h.name: tree(h) for h in lab.hosts.values()} == before  # not one byte written, on any host
        assert invoke(lab.inventory_path, "start", "--all").returncode == 0
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        for name in ("linux", "termux"):
            assert "%s: running %s (commit none); would ship commit none" % (name, current(lab.hosts[name])) in text
        assert "files: 22 added, 1 changed, 1 removed" in text
        assert "~ sulfur_bot/main.py" in text and "- sulfur_bot/old.py" in text
        assert "+ sulfur_bot/new19.py" in text and "new20.py" not in text and "... and 2 more added" in text
        assert "venv: reused venvs/" in text and "hooks: none" in text and "MB free in" in text
        assert text.count("\n    skipped 1 file that may hold secrets: sulfur_bot/.env.local\n") == 2  # each host
        docs = json.loads(as_json.stdout)
        assert [d["shipping"]["not_shipped"] for d in docs] == [["sulfur_bot/.env.local"]] * 2
        linux_env = [d for d in docs if d["host"] == "linux"][0]["env"]
        assert linux_env == {"added": ["ADDED"], "changed": ["BOT_TOKEN"], "removed": ["GONE"]}
        assert ".env: added ADDED; changed BOT_TOKEN; removed GONE" in text
        # names only: neither a value nor any hash of one leaves the host
        for secret in ("old-secret-value-1", "new-secret-value-2"):
            digests = [getattr(hashlib, k)(secret.encode()).hexdigest() for k in ("sha256", "sha1", "md5")]
            for said in (text, as_json.stdout, out.stderr):
                assert secret not in said and not any(d in said or d[:12] in said for d in digests)
        write_source(lab.source, {"requirements.txt": "# a comment changes the text, so the venv\n"})
        out = invoke(lab.inventory_path, "deploy", "--plan", "--host", "linux")
        assert out.returncode == 0 and "would be built (requirements changed)" in out.stdout
    finally:
        write_source(lab.source, {"requirements.txt": "", "sulfur_bot/old.py": "1\n"})
        (lab.source / "sulfur_bot" / ".env.local").unlink()
    # and the plan was right: the deploy reports what the plan said
    out = deploy(lab.inventory_path, "--host", "linux")
    assert out.returncode == 0 and "reused venv" in out.stdout
    out = invoke(lab.inventory_path, "deploy", "--plan", "--host", "linux", "--json")
    assert json.loads(out.stdout)[0]["files"]["changed"]["count"] == 0


def test_plan_is_one_line_and_exit_1_for_a_host_that_cannot_be_planned(lab):
    path = lab.dir / "inv-bad-python.yml"
    assert lab.base.count("python: python}") == 1  # the termux host's
    path.write_text(lab.base.replace("python: python}", "python: nosuchpython}"))
    out = invoke(path, "deploy", "--plan")
    assert out.returncode == 1
    assert "termux: FAILED: nosuchpython not found on the host" in out.stdout
    assert "linux: running " in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_hooks_run_on_each_host_in_the_new_release_with_its_venv_and_env(lab):
    script = ('echo "release=$SULFUR_RELEASE previous=$SULFUR_PREVIOUS"; echo "python=$(command -v python)"; '
              'echo "token=$BOT_TOKEN_FOR_HOOK"; echo "cwd=$(pwd)" >> ../../shared/hook.log')
    for host in lab.hosts.values():
        env = Path(host.app_dir, "shared", ".env")
        env.write_text("BOT_TOKEN_FOR_HOOK=from-env-%s\n" % host.name)
        os.chown(env, host.user.pw_uid, host.user.pw_gid)
    path = inventory(lab, "inv-hooks.yml", "  hooks: {before_switch: %s, after_switch: 'echo after'}\n"
                     % json.dumps(script))
    previous = {h.name: current(h) for h in lab.hosts.values()}
    out = deploy(path)
    assert out.returncode == 0, out.stdout + out.stderr
    for host in lab.hosts.values():
        now, name = current(host), host.name
        assert now != previous[name]
        # streamed into the deploy's lines, before the switch and after it
        lines = out.stdout.splitlines()
        said = [line for line in lines if line.startswith(name + ": ")]
        assert "%s: before_switch: release=%s previous=%s" % (name, now, previous[name]) in said
        release_dir = os.path.realpath(Path(host.app_dir, "releases", now))
        assert "%s: before_switch: python=%s/.venv/bin/python" % (name, release_dir) in said
        # the hook saw the .env's value; the deploy's output shows its key's name instead
        assert "%s: before_switch: token=[BOT_TOKEN_FOR_HOOK]" % name in said and "from-env-" not in out.stdout
        assert said.index("%s: switching to %s" % (name, now)) > said.index(
            "%s: before_switch: token=[BOT_TOKEN_FOR_HOOK]" % name)
        assert said.index("%s: after_switch: after" % name) > said.index("%s: switching to %s" % (name, now))
        assert Path(host.app_dir, "shared", "hook.log").read_text().splitlines()[-1] == "cwd=%s" % release_dir


def test_a_failing_before_switch_leaves_current_serving_and_marks_the_release(lab):
    linux = lab.hosts["linux"]
    path = inventory(lab, "inv-migrate.yml", linux="hooks: {before_switch: 'echo migrating; exit 3'}")
    good, pid = current(linux), healthz_pid(linux)
    out = deploy(path, "--host", "linux")
    assert out.returncode == 1
    failed = [n for n in releases(linux) if n > good][-1]
    assert "linux: before_switch: migrating" in out.stdout
    assert ("linux: FAILED: release %s: before_switch hook failed with exit status 3; current is untouched (%s)"
            % (failed, good)) in out.stdout
    assert current(linux) == good and healthz_pid(linux) == pid  # not even restarted
    assert json.loads(Path(linux.app_dir, "releases", failed, "DEPLOY.json").read_text())["result"] == "failed"
    assert "stamp=%s commit=- " % failed in Path(linux.app_dir, "revisions.log").read_text()


def test_a_failing_after_switch_rolls_back_and_rollback_runs_only_on_rollback_hooks(lab):
    linux = lab.hosts["linux"]
    marks = Path(linux.app_dir, "shared", "marks.log")
    hooks = ("hooks: {before_switch: 'echo before $SULFUR_ROLLBACK >> ../../shared/marks.log', "
             "after_switch: {run: 'echo after $SULFUR_ROLLBACK >> ../../shared/marks.log; test -z \"$FAIL\"', "
             "on_rollback: true}}")
    ok_path = inventory(lab, "inv-after-ok.yml", linux=hooks)
    out = deploy(ok_path, "--host", "linux")
    assert out.returncode == 0, out.stdout
    good = current(linux)
    # the same hooks, but after_switch fails on this deploy (FAIL in .env)
    env = Path(linux.app_dir, "shared", ".env")
    env.write_text("FAIL=1\n")
    out = deploy(ok_path, "--host", "linux")
    failed = [n for n in releases(linux) if n > good][-1]
    assert out.returncode == 1
    assert ("linux: FAILED: release %s after_switch hook failed with exit status 1; rolled back to %s, which is "
            "serving" % (failed, good)) in out.stdout
    assert current(linux) == good and healthz(linux)["release"] == good
    env.write_text("")
    # the good deploy: before 0, after 0; the failed one: before 0, after 0 (fails); the way back: after 1
    # only (before_switch has no on_rollback), which failed too (FAIL was still set), said and went on
    assert marks.read_text().splitlines() == ["before 0", "after 0", "before 0", "after 0", "after 1"]
    assert "its after_switch hook failed with exit status 1" in out.stdout
    marks.write_text("")
    out = invoke(ok_path, "rollback", "--host", "linux")
    assert out.returncode == 0, out.stdout
    assert marks.read_text().splitlines() == ["after 1"]  # only the on_rollback hook, after the restart
    assert "linux: after_switch: done in" in out.stdout


def test_a_hook_that_runs_too_long_is_stopped_with_its_children(lab):
    termux = lab.hosts["termux"]
    path = inventory(lab, "inv-slow.yml", termux="hook_timeout: 2, hooks: {before_switch: 'sleep 300 & sleep 301'}")
    good = current(termux)
    started = time.monotonic()
    out = deploy(path, "--host", "termux")
    assert out.returncode == 1 and time.monotonic() - started < 60
    assert "before_switch hook timed out after 2 s (hook_timeout) and was stopped" in out.stdout
    assert current(termux) == good
    left = termux.netns("pgrep", "-u", str(termux.user.pw_uid), "-f", "sleep 30[01]", check=False)
    assert left.returncode == 1 and left.stdout.strip() == "", "the hook's processes were left running"


def test_serial_goes_standby_first_and_stops_at_the_first_failed_batch(lab):
    linux, termux = lab.hosts["linux"], lab.hosts["termux"]
    path = inventory(lab, "inv-serial.yml", termux="standby: true")
    out = deploy(path, "--serial", "1")
    assert out.returncode == 0, out.stdout
    order = [out.stdout.index(line) for line in ("batch 1 of 2: termux", "termux: uploading", "termux: switching to",
                                                  "batch 2 of 2: linux", "linux: uploading", "linux: switching to")]
    assert order == sorted(order), out.stdout  # the standby host first, the next batch once it is done
    before = {h.name: current(h) for h in lab.hosts.values()}
    path = inventory(lab, "inv-serial-bad.yml", termux="standby: true, hooks: {before_switch: 'exit 5'}")
    out = deploy(path, "--serial", "1", "--json")
    assert out.returncode == 1
    docs = {d["host"]: d for d in json.loads(out.stdout)}
    assert "before_switch hook failed with exit status 5" in docs["termux"]["error"]
    assert docs["linux"]["skipped"] and docs["linux"]["error"] == "skipped: batch 1 of 2 failed on termux"
    assert "batch 2 of 2" not in out.stderr and "linux: uploading" not in out.stderr
    assert current(linux) == before["linux"] and current(termux) == before["termux"]
    text = deploy(path, "--serial", "1").stdout
    assert "linux: skipped: batch 1 of 2 failed on termux" in text
    refused = invoke(path, "deploy", "--serial=-1")
    assert refused.returncode == 2 and "--serial -1: give the number of hosts per batch" in refused.stderr


def test_an_operator_gone_mid_hook_leaves_a_whole_deploy_and_hooks_leave_nothing_running(lab):
    """The laptop's lid closes during after_switch: the host finishes the deploy (switched and healthy,
    recorded) instead of dying on its next progress line with current moved and nothing marked; and a
    hook's background child is stopped with it."""
    linux = lab.hosts["linux"]
    path = inventory(lab, "inv-gone.yml", linux="hooks: {before_switch: 'sleep 300 & echo started', "
                                                "after_switch: 'sleep 3; echo after'}")
    good = current(linux)
    log = Path(linux.app_dir, "revisions.log")
    lines_before = len(log.read_text().splitlines())
    time.sleep(1.0)
    env = dict(os.environ, SULFUR_INVENTORY=str(path), XDG_CACHE_HOME=str(lab.dir / "cache"))
    deploy_proc = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--wheels", "--host", "linux"], cwd=ROOT,
                                   env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in deploy_proc.stdout:
            if "linux: after_switch: running" in line:
                break
    finally:
        deploy_proc.kill()  # SIGKILL: no goodbye, the connection just drops
        deploy_proc.wait()
    deadline = time.monotonic() + 90
    while len(log.read_text().splitlines()) == lines_before and time.monotonic() < deadline:
        time.sleep(0.2)
    new = current(linux)
    assert new != good and log.read_text().splitlines()[-1].split()[1] == "stamp=%s" % new
    assert json.loads(Path(linux.app_dir, "releases", new, "DEPLOY.json").read_text())["result"] == "ok"
    assert healthz(linux)["release"] == new
    left = linux.netns("pgrep", "-u", str(linux.user.pw_uid), "-f", "sleep 300", check=False)
    assert left.returncode == 1, "the before_switch hook's child was left running: %s" % left.stdout
