"""`invoke deploy` / `rollback` / `releases` on real SSH test hosts (linux and termux), with --wheels since
the test hosts have no package index; and every fault the deploy issue names.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import ROOT, invoke, processes

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
BOT = "import os, time\nprint('bot %s up, token set:', bool(os.environ.get('BOT_TOKEN')), flush=True)\n" \
      "while True:\n    time.sleep(1)\n"




def write_bot(source, version, crash=False):
    (source / "sulfur_bot").mkdir(parents=True, exist_ok=True)
    (source / "requirements.txt").write_text("")
    body = "raise SystemExit('bot %s: ImportError: no module named discord')\n" % version if crash else BOT % version
    (source / "sulfur_bot" / "__main__.py").write_text(body)


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        lab.source = lab.dir / "bot"
        write_bot(lab.source, 1)
        text = lab.inventory_path.read_text().replace(
            "  connect_timeout: 5", "  connect_timeout: 5\n  source: %s\n  bot_command: python -m sulfur_bot\n"
            "  shared_paths: [data]\n  shard_count: 2" % lab.source)
        # one token everywhere: each host runs its own shard of the bot, or the second would be refused
        text = text.replace("  linux: {", "  linux: {shards: '0', ").replace("  termux: {", "  termux: {shards: '1', ")
        lab.inventory_path.write_text(text)
        yield lab


def current(host):
    link = Path(host.app_dir, "current")
    return os.path.basename(os.path.realpath(link)) if link.is_symlink() else None


def releases(host):
    base = Path(host.app_dir, "releases")
    return sorted(n for n in os.listdir(base) if not n.startswith(".")) if base.is_dir() else []


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def healthz(host):
    code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:5000/healthz',timeout=5).read().decode())"
    out = host.netns("setpriv", "--reuid", str(host.user.pw_uid), "--regid", str(host.user.pw_gid), "--init-groups",
                     "/usr/bin/python3", "-c", code, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def healthz_pid(host):
    return healthz(host).get("pid")


def test_deploy_everywhere_keeps_shared_state_through_ten_deploys_and_a_rollback(lab):
    env_file = lab.dir / "bot.env"
    env_file.write_text("BOT_TOKEN=secret-token\n")
    for name in (".env.production", "deploy.pem"):  # never shipped: only --env-file brings a .env
        (lab.source / name).write_text("BOT_TOKEN=never-shipped\n")
    out = invoke(lab.inventory_path, "deploy", "--wheels", "--env-file", str(env_file))
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("linux", "termux"):
        assert "%s: uploading" % name in out.stdout and "%s: switching to" % name in out.stdout
        assert "%s: deployed " % name in out.stdout
    assert out.stdout.startswith("packing: ")
    assert out.stdout.splitlines()[1] == "skipped 2 files that may hold secrets: .env.production, deploy.pem"
    kept = {}
    for host in lab.hosts.values():
        release = Path(host.app_dir, "current").resolve()
        assert not [n for n in (".env.production", "deploy.pem") if os.path.lexists(release / n)]
        # what was unpacked is the host user's alone (bytecode caches come later, from imports, inside it)
        loose = [str(p) for p in release.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o077
                 and "__pycache__" not in p.parts]
        assert loose == [] and release.stat().st_mode & 0o777 == 0o700
        env = Path(host.app_dir, "shared", ".env")
        assert env.read_text() == "BOT_TOKEN=secret-token\n" and (env.stat().st_mode & 0o777) == 0o600
        data = Path(host.app_dir, "shared", "data", "scores.db")
        data.write_bytes(os.urandom(4096))
        os.chown(data, host.user.pw_uid, host.user.pw_gid)
        kept[host.name] = (digest(env), digest(data))
        assert "token set: True" in Path(host.app_dir, "logs", "bot.log").read_text()
        assert Path(host.app_dir, "current", "data").resolve() == data.parent.resolve()  # linked, not copied
    first = {h.name: current(h) for h in lab.hosts.values()}
    for _ in range(10):
        time.sleep(1.0)  # a new stamp each time, and the supervisor's warm spare is ready
        out = invoke(lab.inventory_path, "deploy", "--wheels")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "reused venv" in out.stdout
        for host in lab.hosts.values():  # the new release serves, never a spare of the old one
            assert healthz(host)["release"] == current(host)
    out = invoke(lab.inventory_path, "rollback")
    assert out.returncode == 0, out.stdout
    for host in lab.hosts.values():
        env = Path(host.app_dir, "shared", ".env")
        data = Path(host.app_dir, "shared", "data", "scores.db")
        assert (digest(env), digest(data)) == kept[host.name], "shared state changed on %s" % host.name
        names = releases(host)
        assert len(names) == 5 and first[host.name] not in names  # keep_releases
        assert current(host) == names[-2]  # rolled back to the one before the newest
        log = Path(host.app_dir, "revisions.log").read_text().splitlines()
        assert sum("result=ok" in line for line in log) == 11 and "rollback from %s" % names[-1] in log[-1]
        assert healthz_pid(host)
    table = invoke(lab.inventory_path, "releases").stdout.splitlines()
    assert table[0].split() == ["HOST", "RELEASE", "COMMIT", "BY"]
    assert sum(line.rstrip().endswith("current") for line in table) == 2


def test_a_bot_that_fails_its_health_check_is_rolled_back(lab):
    linux = lab.hosts["linux"]
    assert invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux").returncode == 0
    good, pid = current(linux), healthz_pid(linux)
    write_bot(lab.source, 2, crash=True)
    try:
        out = invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux")
    finally:
        write_bot(lab.source, 1)
    assert out.returncode == 1
    failed = [n for n in releases(linux) if n > good][-1]
    assert "linux: FAILED: release %s failed its health check (the bot did not stay up" % failed in out.stdout
    assert "rolled back to %s, which is serving" % good in out.stdout
    assert "ImportError: no module named discord" in out.stdout  # the log tail
    assert current(linux) == good and failed in releases(linux)  # the failed release is kept
    assert healthz_pid(linux) not in (None, pid)  # the previous release was restarted and serves
    state = json.loads(Path(linux.app_dir, "run", "state.json").read_text())
    assert state["services"]["bot"]["state"] == "running"
    assert "result=failed, rolled back to %s" % good in Path(linux.app_dir, "revisions.log").read_text()


def test_rollback_skips_a_release_whose_deploy_failed(lab):
    """A healthy, B crashes (kept for inspection), C healthy: rollback goes to A, never to B."""
    linux = lab.hosts["linux"]
    inventory = lab.dir / "inv-keep.yml"  # room for all three: pruning would take the failed one first
    inventory.write_text(lab.inventory_path.read_text().replace("  connect_timeout: 5",
                                                                "  connect_timeout: 5\n  keep_releases: 20"))

    def deploy():
        time.sleep(1.0)  # a stamp of its own
        return invoke(inventory, "deploy", "--wheels", "--host", "linux")

    assert deploy().returncode == 0
    a = current(linux)
    write_bot(lab.source, 2, crash=True)
    try:
        assert deploy().returncode == 1
    finally:
        write_bot(lab.source, 1)
    b = [n for n in releases(linux) if n > a][-1]
    assert current(linux) == a and json.loads(Path(linux.app_dir, "releases", b, "DEPLOY.json").read_text())[
        "result"] == "failed"
    assert deploy().returncode == 0
    c = current(linux)
    listed = json.loads(invoke(inventory, "releases", "--host", "linux", "--json").stdout)[0]["releases"]
    assert {r["stamp"]: r["failed"] for r in listed if r["stamp"] in (a, b, c)} == {a: False, b: True, c: False}
    table = invoke(inventory, "releases", "--host", "linux").stdout
    assert [line for line in table.splitlines() if b in line][0].rstrip().endswith("FAILED")
    out = invoke(inventory, "rollback", "--host", "linux")
    assert out.returncode == 0, out.stdout
    assert current(linux) == a and "now on %s (was %s)" % (a, c) in out.stdout
    out = invoke(inventory, "rollback", "--host", "linux", "--to", b)
    assert out.returncode == 1 and "release %s failed its deploy" % b in out.stdout and current(linux) == a
    out = invoke(inventory, "rollback", "--host", "linux", "--to", b, "--force")
    assert out.returncode == 0 and current(linux) == b  # the operator insisted, loudly
    assert deploy().returncode == 0  # and a healthy release for the tests after this one


def test_an_uploaded_env_file_is_private_from_its_first_byte(lab):
    """Watched while it arrives: the upload must never sit on the host readable by others."""
    linux = lab.hosts["linux"]
    env_file = lab.dir / "big.env"
    padding = "# padding, so that the upload takes a while %s\n" % ("x" * 60)
    env_file.write_text("BOT_TOKEN=secret-token\n" + padding * 100000)
    shared = Path(linux.app_dir, "shared")
    modes, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            for name in os.listdir(shared) if shared.is_dir() else []:
                if name.startswith(".env.incoming-"):
                    try:
                        modes.add(os.stat(shared / name).st_mode & 0o777)
                    except OSError:
                        pass
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux", "--env-file", str(env_file))
    finally:
        done.set()
        watcher.join()
    assert out.returncode == 0, out.stdout + out.stderr
    assert modes == {0o600}, "seen while uploading: %s" % sorted(oct(m) for m in modes)
    assert (shared / ".env").stat().st_mode & 0o777 == 0o600
    (shared / ".env").write_text("BOT_TOKEN=secret-token\n")  # small again for the tests after this one


def test_requirements_that_cannot_be_installed_change_nothing(lab):
    linux = lab.hosts["linux"]
    assert invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux").returncode == 0
    before = (current(linux), releases(linux), sorted(os.listdir(Path(linux.app_dir, "venvs"))))
    (lab.source / "requirements.txt").write_text("sulfur-no-such-package==9.9.9\n")
    try:
        # built here: pip fails on this machine, before anything is sent
        out = invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux")
        assert out.returncode == 2 and out.stderr.startswith("error: cannot build wheels here:")
        assert len(out.stderr.strip().splitlines()) == 1
        # from the host's index (which the test hosts cannot reach): pip fails on the host
        out = invoke(lab.inventory_path, "deploy", "--host", "linux")
        assert out.returncode == 1
        assert "linux: FAILED: pip failed" in out.stdout
    finally:
        (lab.source / "requirements.txt").write_text("")
    after = (current(linux), releases(linux), sorted(os.listdir(Path(linux.app_dir, "venvs"))))
    assert after == before  # no new release, no half-built venv, current unchanged
    assert not [n for n in os.listdir(Path(linux.app_dir, "releases")) if n.startswith(".")]
    assert healthz_pid(linux)


def test_a_connection_cut_during_the_upload_leaves_current_serving(lab):
    linux = lab.hosts["linux"]
    assert invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux").returncode == 0
    good, pid = current(linux), healthz_pid(linux)
    (lab.source / "big.bin").write_bytes(os.urandom(150 * 2**20))  # an upload long enough to cut
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path))
    deploy = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--wheels", "--host", "linux"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        incoming = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and incoming is None:
            found = [n for n in os.listdir(Path(linux.app_dir, "releases")) if n.startswith(".incoming-")]
            if found and Path(linux.app_dir, "releases", found[0]).stat().st_size > 2**20:
                incoming = found[0]
            time.sleep(0.02)
        assert incoming, "the upload never started"
        for pid_ in _sshd_sessions(linux):  # the network goes away: sshd's session processes die
            os.kill(pid_, signal.SIGKILL)
        out, err = deploy.communicate(timeout=120)
    finally:
        if deploy.poll() is None:
            deploy.kill()
        (lab.source / "big.bin").unlink()
    assert deploy.returncode == 1 and ("upload failed" in out or "connection lost" in out), out + err
    assert current(linux) == good and healthz_pid(linux) == pid  # untouched and serving
    assert incoming in os.listdir(Path(linux.app_dir, "releases"))  # the half upload is still there...
    out = invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux")
    assert out.returncode == 0, out.stdout
    assert "removed leftovers of an interrupted deploy: %s" % incoming in out.stdout  # ...until the next deploy
    assert not [n for n in os.listdir(Path(linux.app_dir, "releases")) if n.startswith(".")]


def _sshd_sessions(host):
    return processes(lambda argv: argv[0].startswith(b"sshd: " + host.user.pw_name.encode()))


def test_two_deploys_at_once_are_serialised(lab, tmp_path):
    # a wheel cache of their own: the two build it at the same time, as two first deploys of a machine do
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    before = releases(lab.hosts["termux"])
    procs = [subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--wheels", "--host", "termux"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    said = "\n".join("deploy %d, exit %s:\n%s%s" % (i, p.returncode, o, e)
                     for i, (p, (o, e)) in enumerate(zip(procs, outs)))
    assert [p.returncode for p in procs] == [0, 0], said
    new = [n for n in releases(lab.hosts["termux"]) if n not in before]
    assert len(new) == 2 and current(lab.hosts["termux"]) == new[-1]
    log = Path(lab.hosts["termux"].app_dir, "revisions.log").read_text().splitlines()
    assert all(any("stamp=%s" % n in line and "result=ok" in line for line in log) for n in new)


@pytest.mark.parametrize("change, message", [
    ("source: /nonexistent/bot", "source /nonexistent/bot is not a directory"),
    ("source: %(file)s", "source %(file)s is not a directory"),
    ("source: %(noreq)s", "source %(noreq)s has no requirements.txt"),
])
def test_bad_source_is_one_line_and_changes_nothing(lab, change, message):
    noreq = lab.dir / "noreq"
    noreq.mkdir(exist_ok=True)
    values = {"file": lab.dir / "bot.env", "noreq": noreq}
    (lab.dir / "bot.env").write_text("X=1\n")
    path = lab.dir / "inv-bad.yml"
    path.write_text(lab.inventory_path.read_text().replace("source: %s" % lab.source, change % values))
    before = {h.name: (current(h), releases(h)) for h in lab.hosts.values()}
    out = invoke(path, "deploy", "--wheels")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "error: " + message % values + (
        ": fix `source:` in the inventory" if "directory" in message else ": add one (it may be empty)")
    assert {h.name: (current(h), releases(h)) for h in lab.hosts.values()} == before


def test_no_disk_space_is_one_line_and_changes_nothing(lab):
    linux = lab.hosts["linux"]
    tiny = linux.app_dir + "-tiny"
    os.makedirs(tiny, exist_ok=True)
    inside = ["nsenter", "-t", str(linux.sshd.pid), "-m"]  # sshd's own mount namespace (ip netns exec made it)
    subprocess.run(inside + ["mount", "-t", "tmpfs", "-o", "size=4m,uid=%d,gid=%d" % (
        linux.user.pw_uid, linux.user.pw_gid), "tmpfs", tiny], check=True)
    try:
        path = lab.dir / "inv-tiny.yml"
        text = lab.inventory_path.read_text()
        assert "app_dir: %s," % linux.app_dir in text
        path.write_text(text.replace("app_dir: %s," % linux.app_dir, "app_dir: %s," % tiny))
        out = invoke(path, "deploy", "--wheels", "--host", "linux")
        assert out.returncode == 1
        assert out.stdout.strip().splitlines()[-1].startswith(
            "linux: FAILED: not enough disk space in %s: 4.0 MB free, the release needs about" % tiny), out.stdout
        listing = subprocess.run(inside + ["ls", "-A", tiny], capture_output=True, text=True, check=True).stdout
        assert listing == ""  # nothing was written
    finally:
        subprocess.run(inside + ["umount", tiny], check=True)
        os.rmdir(tiny)


def test_a_shared_link_that_leaves_shared_refuses_the_deploy_and_the_canary_stays(lab):
    """On a real host, shared/data replaced by a link to a canary directory beside the app dir: the host
    refuses the deploy in one line before anything changes (the inventory's shared_paths: [data] is fine,
    so only the host's own check, which follows the links on disk, can stop it)."""
    import shutil

    linux = lab.hosts["linux"]
    assert invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux").returncode == 0
    shared, canary = Path(linux.app_dir, "shared"), Path(linux.app_dir).parent / "canary-shared"
    (canary / "sub").mkdir(parents=True)
    (canary / "sub" / "keep.txt").write_text("the canary")
    (shared / "data").rename(shared / "data.kept")
    (shared / "data").symlink_to(canary)
    before = (current(linux), releases(linux))
    try:
        out = invoke(lab.inventory_path, "deploy", "--wheels", "--host", "linux")
        assert out.returncode == 1, out.stdout + out.stderr
        failed = [line for line in out.stdout.splitlines() if line.startswith("linux: FAILED: ")]
        assert failed == ["linux: FAILED: shared_paths: shared/data leads to %s, outside shared/ (a link on the way): "
                          "remove that link on the host" % canary], out.stdout
        assert (current(linux), releases(linux)) == before
        assert not [n for n in os.listdir(Path(linux.app_dir, "releases")) if n.startswith(".partial-")]
        assert sorted(p.name for p in canary.rglob("*")) == ["keep.txt", "sub"]
        assert (canary / "sub" / "keep.txt").read_text() == "the canary" and healthz_pid(linux)
    finally:
        (shared / "data").unlink()
        (shared / "data.kept").rename(shared / "data")
        shutil.rmtree(canary)
