"""Hosts of one bot on this machine for the etcd lease's tests and bench: app dirs of one inventory,
each reaching a real etcd cluster (tests/etcdlab.py) through TCP forwarders of its own, so that one
host's link to etcd can be cut and its requests and bytes counted; and a sampler that counts the
fleet's bots every 0.1 s (a stopped process, state T, is not a running bot)."""

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import etcdlab
from dashproc import ROOT, free_port, invoke, wait_for

EXAMPLE = ROOT / "examples" / "bot" / "bot.py"


def process_state(pid):
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Counter:
    """Which hosts run a bot of this fleet, every 0.1 s: [(monotonic time, {host: pid})]."""

    def __init__(self, tag):
        self.tag, self.samples, self.done = tag.encode(), [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def now(self):
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path("/proc", entry, "cmdline").read_bytes()
                env = Path("/proc", entry, "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(EXAMPLE).encode() not in cmd or cmd.split(b"\0")[0].endswith(b"sh"):
                continue
            for item in env:
                if item.startswith(self.tag + b"="):
                    if process_state(int(entry)) not in (None, "T", "Z", "t"):
                        found[item.split(b"=", 1)[1].decode()] = int(entry)
        return found

    def _run(self):
        while not self.done.is_set():
            self.samples.append((time.monotonic(), self.now()))
            time.sleep(0.1)

    def most(self):
        return max((len(found) for _, found in self.samples), default=0)

    def first(self, host, after=0.0):
        return next((t for t, found in self.samples if t >= after and host in found), None)

    def last(self, host):
        return max((t for t, found in self.samples if host in found), default=None)

    def stop(self):
        self.done.set()
        self.thread.join(5)


class Fleet:
    def __init__(self, tmp_path, cluster, names, bot_commands=None, passwords=None, extra="", ttl=5):
        self.tmp, self.cluster, self.names, self.ttl = tmp_path, cluster, list(names), ttl
        self.tag = "SULFUR_TEST_FLEET_%s" % tmp_path.name.replace("-", "_")
        self.proxies = {n: [etcdlab.Proxy(port) for port in cluster.client_ports] for n in names}
        lines = ["hosts:"]
        for n in names:
            app = tmp_path / n
            (app / "shared").mkdir(parents=True)
            password = (passwords or {}).get(n, etcdlab.PASSWORD)
            (app / "shared" / ".env").write_text("BOT_TOKEN=token-%s\nEXAMPLE_BOT_DEMO=1\nETCD_PASSWORD=%s\n%s=%s\n"
                                                 % (tmp_path.name, password, self.tag, n))
            command = (bot_commands or {}).get(n, "%s %s" % (sys.executable, EXAMPLE))
            lines.append("  %s: {connection: local, app_dir: %s, dashboard_port: %d, bot_command: '%s'%s}"
                         % (n, app, free_port(), command, extra))
        self.inventory = tmp_path / "inventory.yml"
        self.inventory.write_text("\n".join(lines) + "\n")
        self.counter = Counter(self.tag)

    def coordinate(self, name):
        """The coordination section as one host sees the cluster: through its own forwarders."""
        return "coordination:\n  etcd: [%s]\n  ca: %s\n  user: %s\n  lease_ttl: %ds\n" % (
            ", ".join(p.endpoint for p in self.proxies[name]), self.cluster.ca, etcdlab.USER, self.ttl)

    def invoke(self, *args, host=None):
        """invoke on some hosts, each with the endpoints of its own forwarders (one inventory per host)."""
        outs = []
        for name in (host or ",".join(self.names)).split(","):
            path = self.tmp / ("inventory-%s.yml" % name)
            path.write_text(self.inventory.read_text() + self.coordinate(name))
            outs.append(invoke(path, *args, "--host", name))
        return outs

    def invoke_all(self, *args):
        """invoke with the whole fleet in one inventory (a failover), through host a's forwarders."""
        path = self.tmp / "inventory-all.yml"
        path.write_text(self.inventory.read_text() + self.coordinate(self.names[0]))
        return invoke(path, *args)

    def start(self, host=None):
        for out in self.invoke("restart", host=host):
            assert out.returncode == 0, out.stdout + out.stderr

    def page(self, name):
        """The host's dashboard page (no DASHBOARD_TOKEN here: it opens without signing in)."""
        port = json.loads((self.tmp / name / "run" / "state.json").read_text())["supervisor"]["port"]
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10) as answer:
            return answer.read().decode()

    def bot(self, name):
        try:
            return json.loads((self.tmp / name / "run" / "state.json").read_text())["services"]["bot"]
        except (OSError, ValueError, KeyError):
            return {}

    def running(self):
        return self.counter.now()

    def one_runs(self, timeout=None):
        timeout = self.ttl + 10 if timeout is None else timeout
        found = wait_for(lambda: len(self.running()) == 1 and self.running(), timeout, "one bot in the fleet")
        return next(iter(found))

    def pid(self, name, what="supervisor"):
        return int((self.tmp / name / "run" / ("%s.pid" % what)).read_text().split()[0])

    def cut(self, name, cut=True):
        for proxy in self.proxies[name]:
            (proxy.cut.set if cut else proxy.cut.clear)()

    def log(self, name):
        return (self.tmp / name / "logs" / "supervisor.log").read_text()

    def close(self):
        self.counter.stop()
        for name in self.names:
            self.cut(name, False)
            for signo in (signal.SIGCONT,):
                for what in ("supervisor", "bot"):
                    try:
                        os.kill(self.pid(name, what), signo)
                    except (OSError, ValueError):
                        pass
        self.invoke("stop")
        for pid in self.counter.now().values():
            os.kill(pid, signal.SIGKILL)
        for proxies in self.proxies.values():
            for proxy in proxies:
                proxy.close()


@contextlib.contextmanager
def on_the_lab(ttl):
    """The SSH lab's linux and termux hosts (tests/sshlab.py) running the example bot (demo mode) under
    a lease on a 3-member etcd they reach over their own links: it listens on this side of linux's
    link, and termux gets a route to it through its own. Releases installed, stacks stopped."""
    import sshlab

    with sshlab.lab_with("linux", "termux") as lab:
        linux, termux = lab.hosts["linux"], lab.hosts["termux"]
        gateway = "%s.%d.1" % (sshlab.SUBNET, linux.index)
        termux.netns("ip", "route", "add", gateway + "/32", "via", "%s.%d.1" % (sshlab.SUBNET, termux.index))
        cluster = etcdlab.Cluster(address=gateway)
        lab.inventory_path = lab.dir / "lease-inventory.yml"
        try:
            cluster.start()
            cluster.enable_auth()
            shutil.copy(EXAMPLE, lab.dir / "bot.py")
            (lab.dir / "bot.py").chmod(0o644)
            text = lab.inventory(list(lab.hosts.values()), path=lab.inventory_path).read_text()
            for name in lab.hosts:
                text = text.replace("  %s: {" % name, "  %s: {bot_command: 'python %s/bot.py', " % (name, lab.dir))
            text += "coordination:\n  etcd: [%s]\n  ca: %s\n  user: %s\n  lease_ttl: %ds\n" % (
                ", ".join(cluster.endpoints), cluster.ca, etcdlab.USER, ttl)
            lab.inventory_path.write_text(text)
            lab.install_release()
            for host in lab.hosts.values():
                path = Path(host.app_dir, "shared", ".env")
                path.write_text("BOT_TOKEN=the-lease-bot-token\nEXAMPLE_BOT_DEMO=1\nETCD_PASSWORD=%s\n"
                                % etcdlab.PASSWORD)
                os.chown(path, host.user.pw_uid, host.user.pw_gid)
                path.chmod(0o600)
            lab.cluster = cluster
            yield lab
        finally:
            invoke(lab.inventory_path, "stop", "--all")
            for host in lab.hosts.values():
                for pid in host.bots():
                    os.kill(pid, signal.SIGKILL)
            cluster.close()


def lab_bot(host):
    """The bot's state on a lab host, as its supervisor last wrote it ({} before it did)."""
    try:
        return json.loads(Path(host.app_dir, "run", "state.json").read_text())["services"]["bot"]
    except (OSError, ValueError, KeyError):
        return {}


def link(host, up):
    """The host's link (this side of its veth pair) up or down: SSH and etcd both go with it."""
    import sshlab

    sshlab.sh("ip", "link", "set", "sl%dh%d" % (host.index, os.getpid() % 1000), "up" if up else "down")
