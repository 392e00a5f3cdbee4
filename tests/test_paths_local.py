"""No host task removes, moves or links anything outside app_dir, whatever a request says.

Each test puts a canary directory beside the app dir (tmp/app, tmp/canary) and sends the host's real
ctl the request a careless inventory or a hostile operator would send (`ctl_run`, the JSON on stdin,
from a release unpacked where a deploy unpacks it: app/releases/.partial-*). The answer must be one
line with ok false, and the canary, and everything else beside the app dir, exactly as before.

A deploy that gets past the checks finds its venv ready (app/venvs/<digest>/.complete) and fails at
its health check at once (the venv has no interpreter): without the checks, each of these requests
would reach the removal, move or link it aims at within a second.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dashproc import ROOT, ctl_run, free_port, invoke, local_inventory

from remote.host.common.errors import Failure
from remote.host.common.files import Layout
from remote.host.common.paths import inside, remove
from remote.host.releases import manifest, release
from remote.render import escape

STAMP = "20260101120000"


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: {relative path: file text, link target or "dir"}."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_text()
    return out


@pytest.fixture
def lab(tmp_path):
    """tmp/app with a release unpacked as a deploy leaves it, its venv ready; tmp/canary beside it."""
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "keep.txt").write_text("the canary")
    (canary / "sub" / "deep.txt").write_text("deeper")
    (canary / "secret.env").write_text("TOKEN=mine\n")
    app = tmp_path / "app"
    partial = app / "releases" / (".partial-%s-test" % STAMP)
    shutil.copytree(ROOT / "remote", partial / "remote", ignore=shutil.ignore_patterns("__pycache__"))
    (partial / "dashboard").mkdir()
    shutil.copy(ROOT / "dashboard" / "requirements.txt", partial / "dashboard" / "requirements.txt")
    texts = [(partial / "dashboard" / "requirements.txt").read_bytes()]
    venv = app / "venvs" / manifest.venv_digest(texts, sys.executable, sys.version)
    venv.mkdir(parents=True)
    (venv / ".complete").write_text("")
    before = snapshot(canary)
    beside = sorted(os.listdir(tmp_path))
    yield app, partial, canary
    ctl_run(ROOT, "stop", app)
    assert snapshot(canary) == before, "the canary beside the app dir changed"
    assert sorted(os.listdir(tmp_path)) == beside, "something was written beside the app dir"


def deploy(app, partial, **options):
    options = dict({"stamp": STAMP, "shared": [], "timeout": 5.0, "lock_timeout": 5.0}, **options)
    return ctl_run(partial, "deploy", app, options, settings={"port": free_port(), "python": sys.executable})


def one_line_refusal(out, code):
    """The answer of a refused request: exit ``code``, one line, ok false; its error."""
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr
    doc = json.loads(lines[0])
    assert out.returncode == code and doc["ok"] is False, out.stdout + out.stderr
    assert "\n" not in doc["error"] and "Traceback" not in out.stdout + out.stderr
    return doc["error"]


@pytest.mark.parametrize("shared", [["../../../canary"], ["CANARY"], ["data", "../../../canary/sub"], [".."], ["."],
                                    ["data/../../../../canary"], ["data", "data"], ["data", "data/x"], ["remote"]])
def test_shared_paths_that_leave_shared_are_refused_by_the_ctl(lab, shared):
    app, partial, canary = lab
    shared = [str(canary) if name == "CANARY" else name for name in shared]
    error = one_line_refusal(deploy(app, partial, shared=shared), 2)
    assert error.startswith("deploy: shared_paths: ") and "nothing was changed" in error
    assert not (app / "current").exists() and partial.is_dir()  # the request was refused whole


@pytest.mark.parametrize("name", ["data", "data/sub"])
def test_a_link_in_shared_that_leaves_it_is_refused_before_anything_changes(lab, name):
    """shared/data -> the canary: linking data (or making data/sub) would put the bot's files there."""
    app, partial, canary = lab
    (app / "shared").mkdir()
    (app / "shared" / "data").symlink_to(canary)
    error = one_line_refusal(deploy(app, partial, shared=[name]), 1)
    assert "shared/%s leads to %s" % (name, canary / name[len("data/"):] if "/" in name else canary) in error
    assert "outside shared/" in error
    assert not (app / "current").exists() and not (app / "releases" / STAMP).exists()
    assert not partial.exists()  # the refused deploy's own unpacked release goes, nothing else


def test_a_link_in_the_release_that_leaves_it_is_refused(lab):
    """A release holding data -> the canary: replacing data/sub by the shared one would empty canary/sub."""
    app, partial, canary = lab
    (partial / "data").symlink_to(canary)
    error = one_line_refusal(deploy(app, partial, shared=["data/sub"]), 1)
    assert "data/sub in the release leads to %s, outside the release" % canary in error


@pytest.mark.parametrize("stamp", ["../../../canary2", "ABSOLUTE", "a/b", STAMP + "\n", "2026010112000", ""])
def test_a_deploy_stamp_that_is_no_release_name_is_refused(lab, stamp):
    """Without the check, the release would be renamed to the stamp's path: beside the app dir."""
    app, partial, canary = lab
    stamp = str(canary.parent / "moved") if stamp == "ABSOLUTE" else stamp
    error = one_line_refusal(deploy(app, partial, stamp=stamp), 2)
    assert "stamp" in error
    assert partial.is_dir() and not (app / "current").exists()


@pytest.mark.parametrize("to", ["../../../canary", "ABSOLUTE", "a/b", STAMP + "\n", "../" + STAMP])
def test_rollback_to_takes_a_release_name_only(lab, to):
    app, partial, canary = lab
    to = str(canary) if to == "ABSOLUTE" else to
    shutil.copytree(partial, app / "releases" / STAMP)  # a release it could go to
    out = ctl_run(ROOT, "rollback", app, {"to": to, "timeout": 5.0, "lock_timeout": 5.0},
                  settings={"port": free_port(), "python": sys.executable})
    error = one_line_refusal(out, 2)
    assert error.startswith("rollback: to: %r is not a release name" % to)
    assert not (app / "current").exists()


def test_an_env_upload_from_outside_shared_is_refused_and_kept(lab):
    """Without the check the deploy would move canary/secret.env into shared/.env."""
    app, partial, canary = lab
    error = one_line_refusal(deploy(app, partial, env_incoming=str(canary / "secret.env")), 1)
    assert "env_incoming" in error and "is not an upload in" in error
    assert not (app / "shared" / ".env").exists()


def test_a_deploy_from_anything_but_an_unpacked_release_is_refused(lab, tmp_path):
    """It installs the directory it runs from: from the canary, it would move the canary into releases/."""
    app, partial, canary = lab
    shutil.copytree(partial / "remote", canary / "remote")
    try:
        error = one_line_refusal(deploy(app, canary), 1)
        assert error.startswith("deploy runs from a release unpacked in %s/.partial-*" % (app / "releases"))
    finally:
        shutil.rmtree(canary / "remote")
    assert partial.is_dir()


def test_a_good_deploy_links_shared_paths_and_removes_leftover_links_not_their_targets(lab):
    """Leftovers named like an interrupted deploy's but linking to the canary: the links go, the canary
    stays. The deploy itself gets through install (data linked into shared/) and fails at its health check."""
    app, partial, canary = lab
    (app / "releases" / ".partial-old").symlink_to(canary)
    (app / "releases" / ".incoming-old.tar.gz").symlink_to(canary / "keep.txt")
    (partial / "data").mkdir()
    (partial / "data" / "from-source.txt").write_text("the source's copy")
    out = deploy(app, partial, shared=["data", "cache/images"])
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert not doc["ok"] and "venv is gone" in doc["error"], out.stdout + out.stderr
    assert "removed leftovers of an interrupted deploy: .incoming-old.tar.gz, .partial-old" in out.stdout
    assert not os.path.lexists(app / "releases" / ".partial-old")
    installed = app / "releases" / STAMP
    assert os.readlink(installed / "data") == "../../shared/data"
    assert os.readlink(installed / "cache" / "images") == "../../../shared/cache/images"
    assert (app / "shared" / "data").is_dir() and not (app / "shared" / "data" / "from-source.txt").exists()


def test_install_checks_shared_paths_again_whoever_calls_it(lab):
    """The second check, in the host's install itself: a caller that skipped the ctl's is refused too."""
    app, partial, canary = lab
    for shared in (["../../../canary"], [str(canary)]):
        with pytest.raises(Failure, match="shared_paths: "):
            release.install(Layout(str(app)), str(partial), STAMP, shared)
    assert partial.is_dir() and not (app / "releases" / STAMP).exists()


def test_remove_never_follows_a_link_out_of_its_root(lab):
    app, partial, canary = lab
    (app / "releases" / "up").symlink_to(canary)
    with pytest.raises(Failure, match="refused to remove"):
        remove(str(app / "releases"), str(app / "releases" / "up" / "sub"))
    with pytest.raises(Failure, match="refused to remove"):
        remove(str(app / "releases"), str(app / "releases"))
    (app / "releases" / "down").symlink_to(canary / "sub")
    # abspath drops "down/.." as text, the kernel follows the link first: refused, however it reads
    # (the fixture checks that canary/keep.txt and canary/sub/deep.txt are still there)
    with pytest.raises(Failure, match="refused to remove"):
        remove(str(app / "releases"), str(app / "releases" / "down" / ".." / "keep.txt"))
    with pytest.raises(Failure, match="refused to remove"):
        remove(str(app / "releases"), str(app / "releases" / "down") + "/")  # would empty canary/sub
    remove(str(app / "releases"), str(app / "releases" / "up"))  # the link itself
    assert not os.path.lexists(app / "releases" / "up")
    assert inside(str(app), str(partial)) and not inside(str(app), str(app / ".." / "canary"))


def test_a_request_file_outside_app_dir_is_read_and_left_in_place(lab):
    app, partial, canary = lab
    request = {"protocol": 1, "command": "status", "app_dir": str(app), "options": {}}
    outside = canary / "request.json"
    outside.write_text(json.dumps(request))
    (app / "run").mkdir(mode=0o700)
    try:
        for path in (outside, app / "run" / "dev-request-test.json"):
            path.write_text(json.dumps(request))
            out = subprocess.run([sys.executable, "-m", "remote.host.ctl", "status", "--request", str(path)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert json.loads(out.stdout.splitlines()[-1])["ok"], out.stdout + out.stderr
        assert outside.exists(), "the ctl removed a request file outside app_dir"
        assert not (app / "run" / "dev-request-test.json").exists()  # its own run/: read, then removed
    finally:
        outside.unlink()


@pytest.mark.parametrize("to", ["../x", "/srv", "a/b", STAMP + "\n", "20261301000000"])
def test_invoke_rollback_to_takes_a_release_name_only(tmp_path, to):
    """Refused on this machine, exit 2, before any host is asked (the local host's app dir stays unmade)."""
    app = tmp_path / "app"
    out = invoke(local_inventory(tmp_path / "inventory.yml", app), "rollback", "--to", to)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.strip() == "error: " + escape("--to %r is not a release name (a UTC stamp of 14 digits, such as "
                                                    "20260101120000): name one that invoke releases lists" % to)
    assert not app.exists()
