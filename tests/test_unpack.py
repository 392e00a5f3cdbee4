"""Unpacking a release: the unpacker's own checker refuses every member and link that leaves the target,
on a Python without tarfile's data filter (Debian 12's 3.11.2) and on one with a bypassable filter
(this venv's, before the CVE-2025-4517 fix); every mode is the user's alone.

The unpacker runs as deploy runs it: sent inside the command, with the host's interpreter. Each refused
archive leaves no target behind and nothing changed beside it (a canary directory next to the target).
"""

import io
import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest
from dashproc import local_inventory

from remote import agentcalls, release
from remote.host.releases import manifest
from remote.inventory import load

OLD_PYTHON = "/usr/bin/python3"
#: the interpreters the host side meets: one without the data filter, and this venv's (filter present)
PYTHONS = [pytest.param(OLD_PYTHON, id="no-filter", marks=pytest.mark.skipif(
    not os.path.exists(OLD_PYTHON), reason="needs Debian's python3")), pytest.param(sys.executable, id="filter")]


def old_python_has_no_filter():
    out = subprocess.run([OLD_PYTHON, "-c", "import tarfile; print(hasattr(tarfile, 'data_filter'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() == "False"


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def entry(name, kind=tarfile.REGTYPE, mode=0o644, data=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def link(name, target):
    return entry(name, tarfile.SYMTYPE, linkname=target)


def command(tmp_path, tar, python=OLD_PYTHON, umask=None):
    """The unpacker's command line as deploy sends it, with ``python`` as the inventory's interpreter."""
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    host.python = python
    dest = tmp_path / "release"
    line = "%s %s %s" % (agentcalls.host_command(host, "remote.host.releases.unpack"), tar, dest)
    return (line if umask is None else "umask %03o && %s" % (umask, line)), dest


def run(line):
    return subprocess.run(line, shell=True, capture_output=True, text=True)


def unpack(tmp_path, tar, python=OLD_PYTHON, umask=None):
    line, dest = command(tmp_path, tar, python, umask)
    return run(line), dest


def tree(top):
    """Every path under ``top`` with what it is: a file's bytes and mode, a link's target."""
    found = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    found[path] = ("file", handle.read(), info.st_mode)
            else:
                found[path] = ("other", info.st_mode)
    return found


@pytest.fixture
def canary(tmp_path):
    """A directory beside the target, where the archives below try to write."""
    where = tmp_path / "canary"
    where.mkdir()
    (where / "f").write_text("canary\n")
    return where


# the exact chain of issue 23, which wrote outside with Debian's 3.11.2
CHAIN = [link("d", "."), link("up", "d/.."), entry("up/canary/x", data=b"pwned")]


def cve_2025_4517():
    """The archive that gets past data filters before the fix: real paths longer than PATH_MAX make
    os.path.realpath stop resolving, so the filter's own check sees a path inside."""
    comp, steps, members, path = "d" * 247, "abcdefghijklmnop", [], ""
    for step in steps:
        members += [entry(os.path.join(path, comp), tarfile.DIRTYPE), link(os.path.join(path, step), comp)]
        path = os.path.join(path, comp)
    deep = os.path.join(*steps, "l" * 254)
    return members + [link(deep, "../" * len(steps)), link("escape", deep + "/../canary"),
                      entry("escape/pwned", data=b"pwned")]


ESCAPES = {
    "issue-chain": (CHAIN, "up/canary/x: a path that leads outside the release"),
    "cve-2025-4517": (cve_2025_4517(), "outside the release"),
    "absolute-name": ([entry("/tmp/abs-evil")], "a path outside the release"),
    "dotdot-name": ([entry("../canary/evil")], "../canary/evil: a path outside the release"),
    "absolute-symlink": ([link("escape", "/etc")], "a symlink to /etc, outside the release"),
    "dotdot-symlink": ([link("up", "../canary")], "up: a symlink to ../canary that leads outside the release"),
    "write-through-symlink": ([link("up", ".."), entry("up/canary/x")], "up/canary/x: a path that leads outside"),
    "link-made-bad-by-later-member": ([link("l", "x/../.."), entry("x/keep")],
                                      "l: a symlink to x/../.. that leads outside the release"),
    "dotdot-above-unknown": ([link("l", "data/..")], "goes .. above data, which is no directory of the archive"),
    "absolute-hardlink": ([entry("hard", tarfile.LNKTYPE, linkname="/etc/passwd")],
                          "a hard link to /etc/passwd that leads outside"),
    "hardlink-through-symlink": ([link("c", "../canary"), entry("hard", tarfile.LNKTYPE, linkname="c/f")],
                                 "a hard link to c/f that leads outside the release"),
    "hardlink-to-later-member": ([entry("hard", tarfile.LNKTYPE, linkname="later"), entry("later")],
                                 "a hard link to later, which is no earlier file of the archive"),
    "fifo": ([entry("fifo", tarfile.FIFOTYPE)], "a device, fifo or other special file"),
    "device": ([entry("null", tarfile.CHRTYPE)], "a device, fifo or other special file"),
    "second-member-replaces-a-link": ([link("s", "sub"), entry("sub/f"), entry("s")],
                                      "s: a second member at s: it would write through the first"),
    "dir-over-a-link": ([link("s", "sub"), entry("sub/f"), entry("s", tarfile.DIRTYPE, mode=0o777)],
                        "a second member at s"),
    "inside-a-file": ([entry("f"), entry("f/x")], "f/x: written inside f, which is a file"),
    "through-a-file": ([entry("f"), entry("f/x/y")], "f/x/y: a path that goes through f, which is a file"),
    "dangling-link-as-dir": ([link("l", "nothing"), entry("l/x")], "which leads to no earlier member"),
    "symlink-loop": ([link("a", "b"), link("b", "a"), entry("a/x")], "follows more than 40 symlinks"),
    "too-deep": ([entry("d/" * 300 + "x")], "is too long or too deep"),
    "too-long-through-links": ([entry("a/" * 200 + "f"), link("s", "a/" * 200 + "../" * 200),
                                link("t", "s/" * 30 + "x"), entry("t/y")], "is too long or too deep"),
    "case-only-difference": ([entry("Lib/x"), entry("lib/y")], "lib/y: the same name as Lib but for case"),
}


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_archives_reaching_outside_are_refused_and_nothing_is_written(tmp_path, canary, python, case):
    members, said = ESCAPES[case]
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("dashboard/__init__.py")] + members + [entry("after.py")])
    line, dest = command(tmp_path, tar, python)
    before = tree(tmp_path)
    out = run(line)
    assert out.returncode == 1, out.stderr
    assert said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("unpack: refused %s: " % tar)
    assert not dest.exists() and not os.path.lexists("/tmp/abs-evil")
    assert tree(tmp_path) == before  # the canary untouched, nothing new beside the target, the upload kept


def test_the_old_python_has_no_data_filter():
    """The case the checker exists for: nothing else stands between such a Python and the archive."""
    if not os.path.exists(OLD_PYTHON):
        pytest.skip("needs Debian's python3")
    assert old_python_has_no_filter()


def release_tree(dest):
    names = {}
    for folder, _dirs, files in os.walk(dest):
        for name in files:
            path = os.path.join(folder, name)
            names[os.path.relpath(path, dest)] = os.lstat(path).st_mode
    return names


def no_group_or_other_bits(dest):
    """Every directory and file under dest (links aside: their mode means nothing) is its owner's alone."""
    bad = []
    for folder, dirs, files in os.walk(dest):
        for path in [folder] + [os.path.join(folder, n) for n in dirs + files]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                bad.append((path, oct(mode)))
    return bad


@pytest.mark.parametrize("python", PYTHONS)
def test_a_real_release_unpacks_whole_and_private(tmp_path, python):
    package = release.pack(None, False, tmp_path)
    out, dest = unpack(tmp_path, package.path, python, umask=0)
    assert out.returncode == 0, out.stderr
    listed = manifest.read(str(dest))
    assert "remote/host/releases/unpack.py" in listed and "dashboard/__main__.py" in listed
    assert json.loads((dest / "_unpack.json").read_text())["files"] == len(listed) + 2  # + REVISION, MANIFEST
    assert no_group_or_other_bits(dest) == []
    assert not package.path.exists()  # the upload is removed once unpacked


@pytest.mark.parametrize("python", PYTHONS)
def test_modes_are_masked_to_the_user_whatever_the_umask(tmp_path, python):
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("bin", tarfile.DIRTYPE, mode=0o777), entry("bin/tool", mode=0o4777),
                   entry("bin/plain", mode=0o666), entry("lib/deep/mod.py", mode=0o664),
                   entry("lib/run.sh", mode=0o751), entry("odd", mode=0o055), entry("ro", mode=0o444),
                   entry("inside", tarfile.SYMTYPE, linkname="bin/tool"),
                   entry("again", tarfile.LNKTYPE, linkname="bin/plain")])
    out, dest = unpack(tmp_path, tar, python, umask=0)
    assert out.returncode == 0, out.stderr
    modes = {name: oct(mode & 0o7777) for name, mode in release_tree(dest).items() if name != "_unpack.json"}
    assert modes == {"bin/tool": "0o700", "bin/plain": "0o600", "lib/deep/mod.py": "0o600", "lib/run.sh": "0o700",
                     "odd": "0o600", "ro": "0o600", "inside": oct(0o777), "again": "0o600"}
    for folder in ("", "bin", "lib", "lib/deep"):  # named in the tar, or made on the way
        assert oct(os.stat(dest / folder).st_mode & 0o7777) == "0o700", folder
    assert no_group_or_other_bits(dest) == []
    assert os.readlink(dest / "inside") == "bin/tool"  # a link inside the release is fine
    assert (dest / "again").read_bytes() == b"x"


@pytest.mark.parametrize("python", PYTHONS)
def test_links_that_stay_inside_are_kept(tmp_path, python):
    """What a bot's source may hold: links up and down its own tree, resolved through earlier members."""
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("pkg/__main__.py"), link("pkg/main.py", "__main__.py"), link("top", "pkg/../pkg"),
                   link("pkg/up", ".."), entry("pkg/up/via_link.txt"), link("dangling", "not/yet/there")])
    out, dest = unpack(tmp_path, tar, python)
    assert out.returncode == 0, out.stderr
    assert (dest / "via_link.txt").is_file() and (dest / "top" / "main.py").read_bytes() == b"x"
    assert os.readlink(dest / "dangling") == "not/yet/there"


def test_a_partly_unpacked_release_is_removed(tmp_path):
    """A failure while writing (here: a name too long for the filesystem) leaves no half release."""
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("ok.py"), entry("x" * 300)])
    out, dest = unpack(tmp_path, tar, sys.executable)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not dest.exists() and tar.exists()
