"""What a release contains: git's view of the bot's source, never secrets or caches, plus our host side."""

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from dashproc import ROOT

from remote import release


def git(source, *args):
    subprocess.run(["git", "-C", str(source), *args], check=True, capture_output=True)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "bot"
    (src / "sulfur_bot").mkdir(parents=True)
    (src / "sulfur_bot" / "__main__.py").write_text("print('bot')\n")
    (src / "requirements.txt").write_text("")
    (src / ".gitignore").write_text("secret.txt\nscratch/\n")
    (src / "secret.txt").write_text("do not ship\n")
    (src / "scratch").mkdir()
    (src / "scratch" / "notes.md").write_text("x\n")
    (src / ".env").write_text("BOT_TOKEN=never-sent\n")
    (src / ".venv" / "bin").mkdir(parents=True)
    (src / ".venv" / "bin" / "python").write_text("")
    (src / "sulfur_bot" / "__pycache__").mkdir()
    (src / "sulfur_bot" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    git(src, "init", "-q")
    git(src, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git(src, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "bot")
    (src / "new_module.py").write_text("# untracked, not ignored: shipped\n")
    return src


def test_a_git_source_ships_gits_view_and_its_commit(source, tmp_path):
    package = release.pack(str(source), False, tmp_path)
    with tarfile.open(package.path) as tar:
        names = set(tar.getnames())
        info = json.loads(tar.extractfile("REVISION.json").read())
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert info["commit"] == head.strip() == package.commit
    assert {"sulfur_bot/__main__.py", "requirements.txt", ".gitignore", "new_module.py"} <= names
    host_side = {"remote/host/" + p.name for p in (ROOT / "remote" / "host").glob("*.py")}
    assert host_side | {"dashboard/__main__.py", "remote/__init__.py", "remote/supervisor.py", "remote/hostctl.py",
                        "dashboard/requirements.txt", "dashboard/templates/index.html"} <= names
    assert not [n for n in names if n.startswith("remote/") and n.endswith(".py") and n.count("/") == 1
                and n not in release.SHIMS]  # never the operator side
    for never in ("secret.txt", "scratch/notes.md", ".env", ".venv/bin/python", ".git/HEAD"):
        assert never not in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(".git/")]
    assert len(package.stamp) == 14 and package.stamp.isdigit()


def test_a_plain_directory_ships_everything_but_secrets_and_caches(source, tmp_path):
    subprocess.run(["rm", "-rf", str(source / ".git")], check=True)
    package = release.pack(str(source), False, tmp_path)
    with tarfile.open(package.path) as tar:
        names = set(tar.getnames())
    assert "secret.txt" in names  # no git: no .gitignore to honour
    assert ".env" not in names and not [n for n in names if "__pycache__" in n or n.startswith(".venv")]
    assert package.commit is None


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is not a directory"),
    (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", "is not a directory"),
    (lambda tmp: (tmp / "noreq").mkdir() or tmp / "noreq", "has no requirements.txt"),
    (lambda tmp: [(tmp / "clash" / "dashboard").mkdir(parents=True), (tmp / "clash" / "requirements.txt").write_text(
        "")] and tmp / "clash", "has its own dashboard/: that name belongs to sulfur-ops"),
])
def test_bad_sources_are_refused_before_anything_is_packed(tmp_path, make, message):
    with pytest.raises(release.ReleaseError) as caught:
        release.pack(str(make(tmp_path)), False, tmp_path)
    assert message in str(caught.value)
    assert not list(tmp_path.glob("release-*.tar.gz"))


def test_a_bumped_stamp_is_one_utc_second_later_in_any_timezone(monkeypatch):
    import time

    from remote.host.releases.release import next_stamp

    for zone in ("UTC", "Asia/Kolkata", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        assert next_stamp("20261126094159") == "20261126094200"
        assert next_stamp("20261231235959") == "20270101000000"
    monkeypatch.delenv("TZ")
    time.tzset()


def test_pruning_removes_failed_releases_first(tmp_path):
    from remote.host.common.files import Layout
    from remote.host.releases import release as host_release

    paths = Layout(tmp_path / "app")
    stamps = ["2026010100000%d" % n for n in range(1, 8)]
    for n, stamp in enumerate(stamps):
        Path(paths.releases, stamp).mkdir(parents=True)
        host_release.mark(paths, stamp, "failed" if n in (4, 5) else "ok", "boom")
    removed = host_release.prune(paths, 4, {stamps[-1], stamps[-2]})
    assert removed == [stamps[4], stamps[0], stamps[1]]  # the failed one first, then the oldest healthy
    assert host_release.stamps(paths) == [stamps[2], stamps[3], stamps[5], stamps[6]]


def test_the_manifest_is_what_the_tar_holds_and_what_a_release_without_one_hashes_to(source, tmp_path):
    import hashlib

    from remote.host.releases import manifest

    (source / "sulfur_bot" / "link.py").symlink_to("__main__.py")
    package = release.pack(str(source), False, tmp_path)
    dest = tmp_path / "unpacked"
    with tarfile.open(package.path) as tar:
        listed = json.load(tar.extractfile(manifest.NAME))["files"]
        held = {}
        for member in tar.getmembers():
            if member.name in ("REVISION.json", manifest.NAME):
                continue
            held[member.name] = ("link:" + member.linkname if member.issym() else
                                 hashlib.sha256(tar.extractfile(member).read()).hexdigest())
        tar.extractall(dest)
    assert listed == held and "sulfur_bot/link.py" in listed and "remote/host/releases/manifest.py" in listed
    assert package.unpacked == sum((dest / name).lstat().st_size for name in listed)
    # a release from before manifests: hashed from its files, the host's own links left out
    (dest / manifest.NAME).unlink()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (dest / "data").symlink_to(tmp_path / "shared" / "data")
    (dest / ".env").symlink_to(tmp_path / "shared" / ".env")
    (dest / ".venv").symlink_to(tmp_path)
    assert manifest.read(str(dest)) == listed
    (dest / "sulfur_bot" / "__main__.py").write_text("print('changed')\n")
    changes = manifest.compare(listed, manifest.read(str(dest)))
    assert changes["changed"] == {"names": ["sulfur_bot/__main__.py"], "count": 1}
    assert changes["added"]["count"] == changes["removed"]["count"] == 0


SECRET_NAMES = ["bot.env", ".env.local", ".env.production", "secrets.env", "key.pem", "id_ed25519",
                "id_ed25519.pub", "sulfur_bot/id_rsa", "config/Prod.ENV", "certs.pem/ca.txt"]


def test_secrets_and_what_git_ignores_never_ship_and_are_named(source, tmp_path):
    for name in SECRET_NAMES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("TOKEN=never-sent\n")
    git(source, "add", "-f", "key.pem")  # tracked: git does not ignore it, the packer still does
    (source / "ignored.log").write_text("a log that may quote a token\n")
    (source / ".gitignore").write_text("secret.txt\nscratch/\n*.log\n")
    package = release.pack(str(source), False, tmp_path)
    with tarfile.open(package.path) as tar:
        names = set(tar.getnames())
        shipped = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())
    assert b"never-sent" not in shipped and b"do not ship" not in shipped and b"quote a token" not in shipped
    left_out = set(SECRET_NAMES) | {".env", "secret.txt", "scratch/", "ignored.log"}
    assert set(package.not_shipped) == left_out and not names & left_out
    assert not [n for n in package.not_shipped if "__pycache__" in n or ".venv" in n]  # caches: not worth naming
    assert {"sulfur_bot/__main__.py", "new_module.py", ".gitignore"} <= names  # the rest still ships


def test_a_plain_directory_still_never_ships_secrets(source, tmp_path):
    subprocess.run(["rm", "-rf", str(source / ".git")], check=True)
    for name in ("bot.env", ".env.production", "deploy_key.pem", "id_ecdsa", "id_dsa.old"):
        (source / name).write_text("TOKEN=never-sent\n")
    what = release.contents(str(source))
    shipped = {name for _, name in what.files}
    assert set(what.not_shipped) == {".env", "bot.env", ".env.production", "deploy_key.pem", "id_ecdsa", "id_dsa.old"}
    assert not shipped & set(what.not_shipped) and "secret.txt" in shipped
    assert set(what.manifest) == shipped  # the plan compares what really ships


def test_the_env_file_never_ships_whatever_its_name(source, tmp_path):
    """--env-file's file goes to hosts as shared/.env (mode 600), not in the release, even kept in the tree."""
    (source / "production").write_text("TOKEN=never-sent\n")
    package = release.pack(str(source), False, tmp_path, env_file=source / "production")
    with tarfile.open(package.path) as tar:
        assert "production" not in tar.getnames()
    assert package.not_shipped == [".env", "production", "scratch/", "secret.txt"]


def test_the_host_side_leaves_out_secrets_and_what_this_checkout_ignores(tmp_path, monkeypatch):
    """A developer's dashboard/.env or key in this checkout stays here (a copy of the checkout: tests
    never write into the real one)."""
    root = tmp_path / "checkout"
    for name in release.HOST_SIDE:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in release.SHIMS:
        shutil.copy(ROOT / name, root / name)
    (root / ".gitignore").write_text("*.local.json\n")
    git(root, "init", "-q")
    (root / "dashboard" / "dev.env").write_text("DASHBOARD_TOKEN=never-sent\n")
    (root / "dashboard" / "static" / "me.local.json").write_text("{}\n")
    (root / "remote" / "host" / "id_rsa").write_text("key\n")
    monkeypatch.setattr(release, "ROOT", root)
    what = release.contents(None)
    assert what.not_shipped == ["dashboard/dev.env", "dashboard/static/me.local.json", "remote/host/id_rsa"]
    assert not {name for _, name in what.files} & set(what.not_shipped)
    assert "dashboard/__main__.py" in what.manifest


def test_the_skipped_line_is_one_bounded_line_of_names():
    from remote import render

    assert render.not_shipped_line([]) == "skipped 0 files that may hold secrets"
    assert render.not_shipped_line(["bot.env", ".env.production"]) == \
        "skipped 2 files that may hold secrets: bot.env, .env.production"
    many = render.not_shipped_line(["%s-%03d.env" % ("x" * 40, n) for n in range(500)] + ["evil\n\x1b[2J.env"])
    assert "\n" not in many and "\x1b" not in many and len(many) < 320
    assert many.startswith("skipped 501 files that may hold secrets: ") and many.endswith("more")
