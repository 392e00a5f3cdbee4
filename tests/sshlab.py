"""Real SSH test hosts: one network namespace per host, each with its own address and its own port 5000,
an OpenSSH server with a generated host key, a non-root user, and a profile:

- linux:  sshd as root on 22, every port tool present;
- termux: sshd run *as the user* on 8022, PATH = a PREFIX/bin with `python` (no python3), `ss` and
          `netstat` that fail with Android's messages, no fuser, TERMUX_VERSION and PREFIX set, and
          /proc mounted with subset=pid,hidepid=invisible so /proc/net is gone as on Android 10+;
- bare:   sshd as root on 22, ss/lsof/netstat/fuser/nc masked in a mount namespace.

Needs root (namespaces, mounts, users). Everything made is removed by `Lab.close()`; namespaces left
by a crashed run are removed when the next lab starts. Addresses are 10.213.N.2 inside namespace N,
10.213.N.1 on this side: traffic never leaves the machine.
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

NS_PREFIX = "slab-"
SUBNET = "10.213"
USERS = {"linux": "sulfur-linux", "termux": "sulfur-termux", "bare": "sulfur-bare"}
PORT_TOOLS = ("ss", "lsof", "netstat", "fuser", "nc", "ncat", "netcat")
ANDROID_SS = 'echo "Cannot open netlink socket: Permission denied" >&2; exit 1'
ANDROID_NETSTAT = 'echo "netstat: /proc/net/tcp: Permission denied" >&2; exit 1'
TERMUX_TOOLS = ("sh", "cat", "ls", "id", "uname", "sleep", "kill", "whoami", "lsof", "env", "mkdir", "rm")


def sh(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def available() -> Optional[str]:
    """None when a lab can be built here, else why not (the tests skip with that reason)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts, test users)"
    for tool in ("ip", "unshare", "setpriv", "ssh-keygen"):
        if not shutil.which(tool):
            return "needs %s" % tool
    if not os.path.exists("/usr/sbin/sshd"):
        return "needs openssh-server (make test installs it as root)"
    if not os.path.exists("/usr/bin/python3"):
        return "needs Debian's /usr/bin/python3 for the test users"
    return None


def remove_stale_namespaces() -> None:
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NS_PREFIX):
            kill_namespace(name)


def kill_namespace(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", ns, check=False)


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--create-home", "--shell", "/bin/sh", name)
    sh("usermod", "-p", "*", name)  # no password, but not locked: sshd refuses locked accounts
    return pwd.getpwnam(name)


class Host:
    def __init__(self, lab: "Lab", index: int, name: str, profile: str, behind: Optional["Host"] = None) -> None:
        self.lab, self.index, self.name, self.profile = lab, index, name, profile
        self.behind = behind  # reachable only from this host's namespace, never from the operator
        self.ns = "%s%d-%d" % (NS_PREFIX, os.getpid(), index)
        self.address = "%s.%d.2" % (SUBNET, index)
        self.port = 8022 if profile == "termux" else 22
        self.user = ensure_user(USERS[profile])
        self.dir = lab.dir / name
        self.app_dir = "%s/app-%s" % (self.user.pw_dir, name)
        self.sshd: Optional[subprocess.Popen] = None
        self.children: List[subprocess.Popen] = []
        self.prefix = self.dir / "data/data/com.termux/files/usr"

    # ------------------------------------------------------------------------------ set-up
    def create(self) -> None:
        self.dir.mkdir(mode=0o755)
        host_side, ns_side = "sl%dh%d" % (self.index, os.getpid() % 1000), "sl%dc%d" % (
            self.index, os.getpid() % 1000)
        self.link = host_side
        sh("ip", "netns", "add", self.ns)
        # a namespace deleted a moment ago (the last lab of this process) frees its links later, in the kernel
        deadline = time.monotonic() + 10
        while sh("ip", "link", "show", host_side, check=False).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        sh("ip", "link", "del", host_side, check=False)
        sh("ip", "link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        sh("ip", "link", "set", ns_side, "netns", self.ns)
        # behind another host: this end of the link lives in that host's namespace, not the operator's
        outer = ["ip", "netns", "exec", self.behind.ns] if self.behind else []
        if self.behind:
            sh("ip", "link", "set", host_side, "netns", self.behind.ns)
        sh(*outer, "ip", "addr", "add", "%s.%d.1/30" % (SUBNET, self.index), "dev", host_side)
        sh(*outer, "ip", "link", "set", host_side, "up")
        self.netns("ip", "addr", "add", "%s/30" % self.address, "dev", ns_side)
        self.netns("ip", "link", "set", ns_side, "up")
        self.netns("ip", "link", "set", "lo", "up")
        key = self.dir / "host_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), "-C", self.name)
        if self.profile == "termux":
            os.chown(key, self.user.pw_uid, self.user.pw_gid)
            self._termux_prefix()
        self.host_key = (self.dir / "host_key.pub").read_text().split()[:2]
        shutil.rmtree(self.app_dir, ignore_errors=True)
        self.start_sshd()

    def _termux_prefix(self) -> None:
        bin_dir = self.prefix / "bin"
        bin_dir.mkdir(parents=True)
        os.symlink("/usr/bin/python3", bin_dir / "python")
        for tool in TERMUX_TOOLS:
            found = shutil.which(tool, path="/usr/bin:/bin")
            if found:
                os.symlink(found, bin_dir / tool)
        for tool, body in (("ss", ANDROID_SS), ("netstat", ANDROID_NETSTAT)):
            (bin_dir / tool).write_text("#!/bin/sh\n%s\n" % body)
            (bin_dir / tool).chmod(0o755)
        for path in [self.dir] + list(self.dir.rglob("*")):
            os.lchown(path, self.user.pw_uid, self.user.pw_gid)

    def sshd_config(self) -> Path:
        lines = [
            "Port %d" % self.port, "ListenAddress %s" % self.address, "HostKey %s" % (self.dir / "host_key"),
            "PidFile none", "AuthorizedKeysFile %s" % self.lab.authorized_keys, "StrictModes no",
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "AllowUsers %s" % self.user.pw_name, "LogLevel VERBOSE",
            "MaxSessions 100", "MaxStartups 200", "Subsystem sftp internal-sftp",
        ]
        if self.profile == "termux":
            lines.append("SetEnv PATH=%s/bin TERMUX_VERSION=0.118.0 PREFIX=%s" % (self.prefix, self.prefix))
        path = self.dir / "sshd_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def sshd_argv(self) -> List[str]:
        sshd = ["/usr/sbin/sshd", "-D", "-f", str(self.sshd_config()), "-E", str(self.sshd_log)]
        if self.profile == "linux":
            return ["ip", "netns", "exec", self.ns] + sshd
        # bare: no port tool anywhere; termux: only PREFIX/bin's (the agent also looks in /usr/bin)
        masks = sorted({os.path.realpath(p) for t in PORT_TOOLS
                        for p in ("/usr/bin/" + t, "/usr/sbin/" + t, "/bin/" + t, "/sbin/" + t)
                        if os.path.exists(p)})
        script = "".join("mount --bind /dev/null %s && " % m for m in masks)
        if self.profile == "bare":
            script += 'exec "$@"'
        else:
            script += ("mount -t proc -o subset=pid,hidepid=invisible proc /proc && "
                       'exec setpriv --reuid %d --regid %d --init-groups "$@"'
                       % (self.user.pw_uid, self.user.pw_gid))
        return ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private",
                "/bin/sh", "-c", script, "sh"] + sshd

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    def start_sshd(self) -> None:
        heard = self._listening_lines()
        self.sshd = subprocess.Popen(self.sshd_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                log = self.sshd_log.read_text() if self.sshd_log.exists() else ""
                raise RuntimeError("sshd of %s exited %s: %s" % (self.name, self.sshd.returncode, log))
            if self.behind:  # the operator has no route to it: its log says when it listens
                if self._listening_lines() > heard:
                    return
                time.sleep(0.05)
                continue
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd of %s did not listen within 15 s" % self.name)

    def _listening_lines(self) -> int:
        return self.sshd_log.read_text().count("Server listening on") if self.sshd_log.exists() else 0

    def stop_sshd(self) -> None:
        if self.sshd and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(10)

    def bots(self) -> List[int]:
        """Live example bots (examples/bot/bot.py, copied anywhere) of this host's user."""
        from dashproc import processes

        return processes(lambda argv: any(word.endswith(b"bot.py") for word in argv), self.user.pw_uid)

    def a_day_of_history(self, restarts: Tuple[int, ...] = ()) -> None:
        """24 h in the host's ring as its supervisor would have written them: a daily swell of CPU
        and load with noise, RSS creeping, and the dashboard restarted ``restarts`` hours ago."""
        import math
        import random

        from remote.host.common import history

        ring = str(Path(self.app_dir, "run", "history.bin"))
        os.makedirs(os.path.dirname(ring), exist_ok=True)
        now, noise = int(time.time()), random.Random(self.index)
        record = dict.fromkeys(history.FIELDS, 0)
        for step in range(history.SLOTS):
            t = now - (history.SLOTS - step) * history.INTERVAL
            day = 1 + math.sin(2 * math.pi * step / history.SLOTS)
            done = sum(1 for hours in restarts if t >= now - hours * 3600)
            history.write(ring, dict(record, t=t, serving=1, load=int(20 + 40 * day + noise.random() * 30),
                                     dashboard_cpu=int(5 + 20 * day + noise.random() * 25), dashboard_rss=42000
                                     + step, bot_cpu=int(10 + 30 * day + noise.random() * 40),
                                     bot_rss=61000 + step // 2, supervisor_cpu=noise.choice((0, 1, 2)),
                                     supervisor_rss=15500, dashboard_restarts=done, mem_used=480000 + step * 5,
                                     mem_total=1000000, battery=-1 if self.profile != "termux" else 60 + int(30 * day)))
        os.chown(ring, self.user.pw_uid, self.user.pw_gid)

    def kill_sshd(self) -> None:
        """`pkill -9 sshd` on the host, as a Termux user stops it: the listener and every session it
        serves (a systemd stop would leave the sessions); start_sshd() brings it back."""
        ns = os.stat("/run/netns/" + self.ns).st_ino
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.stat("/proc/%s/ns/net" % entry).st_ino == ns and \
                        Path("/proc", entry, "comm").read_text().strip() == "sshd":
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue
        if self.sshd:
            self.sshd.wait(10)

    # ------------------------------------------------------------------------------ use
    def netns(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *argv, **kwargs)

    def spawn_as_user(self, argv: List[str], **kwargs) -> subprocess.Popen:
        """A process of the host's user inside the host's namespace (e.g. a foreign listener)."""
        full = ["ip", "netns", "exec", self.ns, "setpriv", "--reuid", str(self.user.pw_uid), "--regid",
                str(self.user.pw_gid), "--init-groups"] + argv
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, **kwargs)
        self.children.append(proc)
        return proc

    def spawn_as_root(self, argv: List[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv, stdin=subprocess.DEVNULL, **kwargs)
        self.children.append(proc)
        return proc

    def wait_listening(self, port: int = 5000, address: Optional[str] = None, timeout: float = 15) -> None:
        target = address or self.address
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((target, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nothing listens on %s:%d in %s" % (target, port, self.name))

    def known_hosts_line(self) -> str:
        where = self.address if self.port == 22 else "[%s]:%d" % (self.address, self.port)
        return "%s %s %s\n" % (where, self.host_key[0], self.host_key[1])

    def inventory_entry(self) -> Dict[str, object]:
        entry: Dict[str, object] = {"hostname": self.address, "port": self.port, "user": self.user.pw_name,
                                    "platform": "termux" if self.profile == "termux" else "linux",
                                    "app_dir": self.app_dir}
        entry["python"] = "python" if self.profile == "termux" else "/usr/bin/python3"
        if self.behind:
            entry["jump"] = self.behind.name
        return entry

    def kill_children(self) -> None:
        """Every process a test started on this host (listeners, loads) is gone afterwards."""
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.children.clear()

    def close(self) -> None:
        self.kill_children()
        self.stop_sshd()
        if getattr(self, "link", None):  # now, not when the kernel gets round to the namespace's links
            sh("ip", "link", "del", self.link, check=False)
        kill_namespace(self.ns)
        shutil.rmtree(self.app_dir, ignore_errors=True)


class Lab:
    """A set of test hosts plus the operator's side: a client key, known_hosts, inventories."""

    def __init__(self) -> None:
        remove_stale_namespaces()
        # a packet for a lab address with no host (or one behind another host) never leaves the machine
        sh("ip", "route", "replace", "blackhole", "%s.0.0/16" % SUBNET)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.dir = Path(tempfile.mkdtemp(prefix="sulfur-lab-"))
        self.dir.chmod(0o755)  # the termux profile's sshd runs as its user and reads files here
        self.client_key = self.dir / "client_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key), "-C", "operator")
        self.authorized_keys = self.dir / "authorized_keys"
        shutil.copy(str(self.client_key) + ".pub", self.authorized_keys)
        self.authorized_keys.chmod(0o644)
        self.known_hosts = self.dir / "known_hosts"
        self.inventory_path: Optional[Path] = None
        self.hosts: Dict[str, Host] = {}
        self._next = 1

    def add(self, profile: str, name: Optional[str] = None, behind: Optional[Host] = None) -> Host:
        index = self._next
        self._next += 1
        host = Host(self, index, name or "%s%d" % (profile, index), profile, behind)
        self.hosts[host.name] = host
        try:
            host.create()
        except Exception:
            host.close()
            raise
        with open(self.known_hosts, "a") as handle:
            handle.write(host.known_hosts_line())
        return host

    def inventory(self, hosts: List[Host], path: Optional[Path] = None, extra_hosts: str = "",
                  known_hosts: Optional[Path] = None, policy: str = "strict") -> Path:
        """Write an inventory.yml naming ``hosts`` (plus raw YAML in extra_hosts)."""
        lines = ["defaults:", "  identity_file: %s" % self.client_key,
                 "  known_hosts: %s" % (known_hosts or self.known_hosts), "  host_key_policy: %s" % policy,
                 "  connect_timeout: 5"]
        lines.append("hosts:")
        for host in hosts:
            entry = ", ".join("%s: %s" % (k, v) for k, v in host.inventory_entry().items())
            lines.append("  %s: {%s}" % (host.name, entry))
        lines += ["  " + line for line in extra_hosts.splitlines() if line.strip()]
        path = path or self.dir / "inventory.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        for host in reversed(list(self.hosts.values())):  # hosts behind others first
            host.close()
        sh("ip", "route", "del", "blackhole", "%s.0.0/16" % SUBNET, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def install_release(self, stop: bool = True) -> None:
        """A real release on every host, by `invoke deploy`'s own code (this checkout's host side, its
        venv from wheels built here); stopped afterwards unless ``stop`` is false."""
        import tempfile

        from remote import ctlcalls, release
        from remote.connections import open_runner
        from remote.inventory import load

        package = release.pack(None, True, Path(tempfile.mkdtemp(dir=self.dir)))
        for host in load(self.inventory_path).select(every=True):
            with open_runner(host) as runner:
                doc = release.deploy_host(runner, host, package, lambda line: None)
                assert doc["ok"], doc
                if stop:
                    assert ctlcalls.stop(runner, host)["ok"]


@contextlib.contextmanager
def lab_with(*profiles: str) -> Iterator[Lab]:
    """A lab with one host per profile, named after it, and lab.inventory_path naming them all."""
    lab = Lab()
    try:
        for profile in profiles:
            lab.add(profile, profile)
        lab.inventory_path = lab.inventory(list(lab.hosts.values()))
        yield lab
    finally:
        lab.close()
