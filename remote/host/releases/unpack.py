"""Unpack a release tar into a new directory, refusing anything that would reach outside it.

Sent inside the command, like the agent, before the release it unpacks exists. The check is this
module's own and always runs, on every Python the host side supports: ``check_members`` walks the
members in order and keeps a model of what the earlier ones made (directories, files, symlinks and
their targets, hard links), and resolves every member's path and every link through that model, never
through the disk. Resolving on disk is what let the chain ``d -> .``, ``up -> d/..``, ``up/x`` write
outside on Pythons without tarfile's data filter (Debian 12's 3.11.2), and what made older data filters
bypassable (CVE-2025-4517). Where tarfile has the data filter it still runs, as a second layer.
Every file and directory unpacked is this user's alone (modes masked to 0o700 / 0o600): tarfile sets
each member's mode itself, so a umask alone would not do it.

    unpack TAR DEST    (the tar is removed once unpacked; nothing is left in DEST when it is refused)
"""

import json
import os
import shutil
import stat
import sys
import tarfile
import time

#: what the kernel follows before it gives up (ELOOP): a longer chain is refused, not resolved
MAX_HOPS = 40
#: names a resolution may step through, and how deep a real path may go: far beyond any release, and
#: a crafted archive cannot make the check itself slow (each step costs the depth)
MAX_STEPS, MAX_DEPTH = 4096, 256


class UnsafeMember(Exception):
    """A member that must not be unpacked; the message names it."""


class _Refused(Exception):
    """Why a path cannot be resolved safely; the caller names the member."""


def _parts(text):
    """A path's names, without the empty and "." ones ("a//./b/" -> ["a", "b"])."""
    return [part for part in text.split("/") if part not in ("", ".")]


class Model:
    """What the members checked so far have made, keyed by real path (a tuple of names below the
    target, no symlink in it): "dir", "file" (hard links too) or "link" (with its target). The root,
    (), is a directory. A name is never made twice (but for a directory named again): tarfile would
    write through what is already there, so a later member could turn an earlier check's answer."""

    def __init__(self, what="the release"):
        self.what = what
        self.kinds = {(): "dir"}
        self.targets = {}
        self.folded = {(): ()}  # on a case-insensitive filesystem "A" and "a" are one name: refused

    def resolve(self, start, text, follow_last, strict, hops=None):
        """The real path ``text`` names, read from the directory ``start`` through the model. Raises
        _Refused when it leaves the target, or when it goes ".." above a name the model does not know
        as a directory (what that name will be is not known: a link a deploy adds later, or nothing).
        ``strict`` (a path something is written to): every directory on the way must exist by then,
        as the kernel needs, and a symlink used as a directory must lead to one."""
        hops = hops if hops is not None else [0, 0]  # symlinks followed, names stepped through
        at = list(start)
        parts = _parts(text)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            hops[1] += 1
            if hops[1] > MAX_STEPS or len(at) >= MAX_DEPTH:
                raise _Refused("is too long or too deep (over %d names, or %d directories)" % (MAX_STEPS, MAX_DEPTH))
            if part == "..":
                if not at:
                    raise _Refused("leads outside %s" % self.what)
                if self.kinds.get(tuple(at)) != "dir":
                    raise _Refused("goes .. above %s, which is no directory of the archive" % "/".join(at))
                at.pop()
                continue
            key = tuple(at) + (part,)
            kind = self.kinds.get(key)
            if kind == "link" and (follow_last or not last):
                hops[0] += 1
                if hops[0] > MAX_HOPS:
                    raise _Refused("follows more than %d symlinks" % MAX_HOPS)
                target = self.targets[key]
                if target.startswith("/"):
                    raise _Refused("goes through the symlink %s to %s, outside %s" % ("/".join(key), target, self.what))
                at = list(self.resolve(key[:-1], target, True, strict, hops))
                reached = self.kinds.get(tuple(at))
                if strict and (reached is None or (not last and reached != "dir")):
                    raise _Refused("goes through the symlink %s, which leads to no %s of the archive"
                                   % ("/".join(key), "directory" if not last else "earlier member"))
            elif kind == "file" and not last:
                raise _Refused("goes through %s, which is a file" % "/".join(key))
            else:
                at.append(part)
        return tuple(at)

    def _record(self, key, kind, name):
        folded = tuple(part.casefold() for part in key)
        if self.folded.get(folded, key) != key:
            raise UnsafeMember("%s: the same name as %s but for case" % (name, "/".join(self.folded[folded])))
        self.folded[folded] = key
        self.kinds[key] = kind

    def add(self, member):
        """Check one member against what the earlier ones made, then record what it makes."""
        name = member.name
        parts = _parts(name)
        if name.startswith("/") or ".." in parts:
            raise UnsafeMember("%s: a path outside %s" % (name, self.what))
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeMember("%s: a device, fifo or other special file" % name)
        if not parts:
            if member.isdir():
                return  # "./": the target itself
            raise UnsafeMember("%s: not a directory, in place of the target itself" % name)
        try:
            parent = self.resolve((), "/".join(parts[:-1]), True, True)
        except _Refused as exc:
            raise UnsafeMember("%s: a path that %s" % (name, exc)) from None
        if self.kinds.get(parent, "dir") != "dir":
            raise UnsafeMember("%s: written inside %s, which is a file" % (name, "/".join(parent)))
        for depth in range(1, len(parent) + 1):  # the directories tarfile makes on the way
            if parent[:depth] not in self.kinds:
                self._record(parent[:depth], "dir", name)
        key = parent + (parts[-1],)
        if key in self.kinds:
            if member.isdir() and self.kinds[key] == "dir":
                return
            raise UnsafeMember("%s: a second member at %s: it would write through the first"
                               % (name, "/".join(key)))
        if member.issym():
            if not member.linkname or member.linkname.startswith("/"):
                raise UnsafeMember("%s: a symlink to %s, outside %s" % (name, member.linkname or "nothing",
                                                                         self.what))
            self.targets[key] = member.linkname
        elif member.islnk():
            self._hard_link(member)
        self._record(key, "link" if member.issym() else "dir" if member.isdir() else "file", name)

    def _hard_link(self, member):
        """A hard link names an earlier file of the archive, from the target's top (os.link follows
        symlinks, so the model does too)."""
        linkname = member.linkname
        try:
            if linkname.startswith("/"):
                raise _Refused("leads outside %s" % self.what)
            target = self.resolve((), linkname, True, True)
        except _Refused as exc:
            raise UnsafeMember("%s: a hard link to %s that %s" % (member.name, linkname, exc)) from None
        if self.kinds.get(target) != "file":
            raise UnsafeMember("%s: a hard link to %s, which is no earlier file of the archive"
                               % (member.name, linkname))

    def check_links(self):
        """Once every member is in: each symlink as it will be on disk, resolved through the whole model
        (a later member can change what an earlier link leads to)."""
        for key in sorted(k for k, kind in self.kinds.items() if kind == "link"):
            try:
                self.resolve(key[:-1], self.targets[key], True, False)
            except _Refused as exc:
                raise UnsafeMember("%s: a symlink to %s that %s" % ("/".join(key), self.targets[key], exc)) from None


def safe_mode(member):
    """The member's mode kept to its owner: 0o700 for a directory or a file its owner may run, else 0o600."""
    return 0o700 if member.isdir() or member.mode & stat.S_IXUSR else 0o600


def check_members(members, what="the release"):
    """The members, checked in order against what the earlier ones made (``Model``), with their modes
    and owners made safe; UnsafeMember, naming the first bad one, when any must not be unpacked."""
    model = Model(what)
    for member in members:
        model.add(member)
        if not member.issym():
            member.mode = safe_mode(member)
        member.uid = member.gid = 0  # unpacked as whoever runs this, never as the tar's owners
        member.uname = member.gname = ""
    model.check_links()
    return list(members)


def mask_modes(dest):
    """Every directory and file under ``dest`` its owner's alone (the data filter and os.makedirs leave
    directories to the umask). Symlinks are skipped: chmod would follow them."""
    for folder, _dirs, files in os.walk(dest):
        os.chmod(folder, 0o700)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o700 if mode & stat.S_IXUSR else 0o600)


def extract(tar, members, dest):
    """Unpack members that check_members passed into ``dest``, a new empty directory: tarfile's data
    filter as a second layer where it has one, then every mode masked (mask_modes)."""
    old_umask = os.umask(0o077)  # what tarfile makes before it sets a mode, and what os.makedirs makes
    try:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members, filter="data")
        else:
            tar.extractall(dest, members)
        mask_modes(dest)
    finally:
        os.umask(old_umask)


def unpack(tar_path, dest):
    started = time.monotonic()
    tar_path, dest = os.path.abspath(tar_path), os.path.abspath(dest)
    with tarfile.open(tar_path) as tar:
        members = check_members(tar.getmembers())  # before anything is written
        os.makedirs(dest, 0o700)
        os.chdir(dest)  # working in it marks it as in use: another deploy's cleanup leaves it alone
        try:
            extract(tar, members, dest)
        except BaseException:  # never half a release: what failed to unpack is removed
            os.chdir("/")
            shutil.rmtree(dest, ignore_errors=True)
            raise
    os.unlink(tar_path)
    with open(os.path.join(dest, "_unpack.json"), "w") as handle:  # the deploy's timings read (and remove) it
        json.dump({"seconds": time.monotonic() - started, "files": len(members)}, handle)
    os.chmod(os.path.join(dest, "_unpack.json"), 0o600)


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
