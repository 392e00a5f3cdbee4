"""Unpacking a release on a host whose Python has no tarfile data filter (Debian 12's 3.11.2 has none).

The unpacker runs as deploy runs it: sent inside the command, with the host's interpreter.
"""

import io
import os
import subprocess
import tarfile

import pytest
from dashproc import local_inventory

from remote import agentcalls
from remote.inventory import load

OLD_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(not os.path.exists(OLD_PYTHON), reason="needs Debian's python3")


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


def unpack(tmp_path, tar):
    host = load(local_inventory(tmp_path / "inventory.yml", tmp_path / "app")).select()[0]
    host.python = OLD_PYTHON
    dest = tmp_path / "release"
    unpacker = agentcalls.host_command(host, "remote.host.releases.unpack")
    out = subprocess.run("%s %s %s" % (unpacker, tar, dest), shell=True,
                         capture_output=True, text=True, cwd=tmp_path)
    return out, dest


@pytest.mark.parametrize("bad, said", [
    (entry("escape", tarfile.SYMTYPE, linkname="/etc"), "a symlink to /etc, outside the release"),
    (entry("up", tarfile.SYMTYPE, linkname="../../outside"), "outside the release"),
    (entry("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), "a hard link to /etc/passwd"),
    (entry("../evil.py"), "a path outside the release"),
    (entry("fifo", tarfile.FIFOTYPE), "a device, fifo or other special file"),
])
def test_members_reaching_outside_are_refused_before_anything_is_written(tmp_path, bad, said):
    assert old_python_has_no_filter()  # the case this code exists for
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("dashboard/__init__.py"), bad, entry("after.py")])
    out, dest = unpack(tmp_path, tar)
    assert out.returncode == 1 and said in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (dest / "dashboard" / "__init__.py").exists() and not (tmp_path / "evil.py").exists()


def test_setuid_and_world_writable_bits_are_dropped(tmp_path):
    tar = tmp_path / "release.tar.gz"
    make_tar(tar, [entry("bin/tool", mode=0o4777), entry("inside", tarfile.SYMTYPE, linkname="bin/tool")])
    out, dest = unpack(tmp_path, tar)
    assert out.returncode == 0, out.stderr
    assert os.stat(dest / "bin" / "tool").st_mode & 0o7777 == 0o755
    assert os.readlink(dest / "inside") == "bin/tool"  # a link inside the release is fine
    assert not tar.exists()  # the upload is removed once unpacked
