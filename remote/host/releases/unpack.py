"""Unpack a release tar into a new directory, refusing anything that would reach outside it.

Sent inside the command, like the agent, before the release it unpacks exists. Where tarfile has
the "data" filter (Python 3.12, and 3.8.17, 3.9.17, 3.10.12, 3.11.4 and later) it does the checks; an
older interpreter (a Pi or a phone may have one) gets the same checks here: no absolute or ../ names,
no link pointing outside, no device or fifo, no setuid, setgid or sticky bit, nothing writable by others.

    unpack TAR DEST    (the tar is removed once unpacked)
"""

import json
import os
import stat
import sys
import tarfile
import time


class UnsafeMember(Exception):
    """A member that must not be unpacked; the message names it."""


def _inside(dest, path):
    dest = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(dest, path))
    return target == dest or target.startswith(dest + os.sep)


def check_member(member, dest):
    """The member, with its mode made safe; UnsafeMember when it must not be unpacked at all."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise UnsafeMember("%s: a path outside the release" % name)
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeMember("%s: a device, fifo or other special file" % name)
    if member.issym():
        target = os.path.join(os.path.dirname(name), member.linkname)
        if member.linkname.startswith("/") or not _inside(dest, target):
            raise UnsafeMember("%s: a symlink to %s, outside the release" % (name, member.linkname))
    if member.islnk() and (member.linkname.startswith("/") or not _inside(dest, member.linkname)):
        raise UnsafeMember("%s: a hard link to %s, outside the release" % (name, member.linkname))
    member.mode &= ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    member.uid = member.gid = 0  # unpacked as whoever runs this, never as the tar's owners
    member.uname = member.gname = ""
    return member


def unpack(tar_path, dest):
    started = time.monotonic()
    tar_path, dest = os.path.abspath(tar_path), os.path.abspath(dest)
    os.makedirs(dest)
    os.chdir(dest)  # working in it marks it as in use: another deploy's cleanup leaves it alone
    with tarfile.open(tar_path) as tar:
        members = [check_member(m, dest) for m in tar.getmembers()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members, filter="data")
        else:
            tar.extractall(dest, members)
    os.unlink(tar_path)
    with open(os.path.join(dest, "_unpack.json"), "w") as handle:  # the deploy's timings read (and remove) it
        json.dump({"seconds": time.monotonic() - started, "files": len(members)}, handle)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: unpack TAR DEST", file=sys.stderr)
        return 2
    try:
        unpack(args[0], args[1])
    except (UnsafeMember, tarfile.TarError, OSError) as exc:
        print("unpack: refused %s: %s" % (args[0], exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
