"""24 hours of a host's figures, sampled every 10 s by the supervisor into a fixed-size ring file.

run/history.bin holds one 40-byte record per 10 s slot (8640 slots: 345 KB, whatever the uptime): the
wall time, whether the dashboard serves, CPU % and RSS of the supervisor, the dashboard and the bot
(from /proc/PID, which Termux lets a user read for its own processes), their restart counters (a
restart shows as a step), the load, memory in use and, on Termux with termux-api, the battery. A
record's slot is its time / 10 modulo the ring, so a write is one pwrite and the file never grows;
records older than 24 h, or from a clock that went back, are skipped when read.
"""

import json
import os
import shutil
import struct
import subprocess
import threading
import time

from remote.host.common import names
from remote.host.common.system import stat_fields

INTERVAL = 10
SLOTS = 24 * 3600 // INTERVAL
MAGIC = b"SOH1"
HEADER = struct.Struct("<4sHHI")  # magic, record size, interval, slots
SERVICES = names.SAMPLED  # the record below has room for exactly these three
RECORD = struct.Struct("<IBHIHHIHHIHHIIb")  # t, serving, 3 x (cpu, rss, restarts), load, mem used, total, battery
FIELDS = ("t", "serving") + tuple("%s_%s" % (s, k) for s in SERVICES for k in ("cpu", "rss", "restarts")) + (
    "load", "mem_used", "mem_total", "battery")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def path(paths):
    return os.path.join(paths.run, "history.bin")


def _cpu_ticks(pid):
    fields = stat_fields(pid)
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_kb(pid):
    with open("/proc/%d/statm" % pid) as handle:
        return int(handle.read().split()[1]) * _PAGE // 1024


def _memory():
    """(used, total) in KB from /proc/meminfo; (0, 0) where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            info = dict((line.split(":")[0], int(line.split()[1])) for line in handle if line.split()[1:2])
        total = info["MemTotal"]
        return total - info.get("MemAvailable", info.get("MemFree", 0)), total
    except (OSError, KeyError, ValueError, IndexError):
        return 0, 0


class Battery:
    """termux-battery-status in a thread of its own, once a minute: it takes a second or more, and the
    supervisor's loop must not wait for it. -1 where there is none."""

    def __init__(self):
        self.percent = -1
        tool = shutil.which("termux-battery-status")
        if tool:
            threading.Thread(target=self._poll, args=(tool,), daemon=True).start()

    def _poll(self, tool):
        while True:
            try:
                out = subprocess.run([tool], capture_output=True, text=True, timeout=20)
                self.percent = int(json.loads(out.stdout).get("percentage", -1))
            except (OSError, ValueError, subprocess.TimeoutExpired, AttributeError):
                self.percent = -1
            time.sleep(60)


class Sampler:
    """Called from the supervisor's loop; writes a record when a slot's 10 s have passed."""

    def __init__(self, paths, clock=time.monotonic, wall=time.time):
        self.file, self.clock, self.wall = path(paths), clock, wall
        self.last, self.ticks, self.battery = None, {}, Battery()

    def from_supervisor(self, sup):
        """A sample of ``sup``'s own process and its services, when one is due. Never raises: the
        figures are never worth the supervisor."""
        if not self.due():  # called on every turn of the loop: nothing more unless a sample is due
            return None
        try:
            pids, restarts = {"supervisor": os.getpid()}, {}
            for name, svc in sup.services.items():
                pids[name] = getattr(svc.proc, "pid", None) if svc.state == "running" else None
                restarts[name] = svc.restarts
            dashboard = sup.services.get("dashboard")
            return self.maybe(pids, restarts, dashboard is not None and dashboard.state == "running")
        except Exception:
            return None

    def due(self):
        return self.last is None or self.clock() - self.last >= INTERVAL

    def maybe(self, pids, restarts, serving):
        """``pids``: service -> pid (or None), ``restarts``: service -> count."""
        if not self.due():
            return None
        now = self.clock()
        elapsed, self.last = (now - self.last) if self.last is not None else None, now
        values = {"t": int(self.wall()), "serving": 1 if serving else 0}
        for name in SERVICES:
            pid = pids.get(name)
            cpu = rss = 0
            try:
                if pid:
                    ticks, rss = _cpu_ticks(pid), _rss_kb(pid)
                    before = self.ticks.get(pid)
                    if before is not None and elapsed:
                        cpu = int(round(1000.0 * (ticks - before) / _TICK / elapsed))  # 0.1 % units
                    self.ticks[pid] = ticks
            except (OSError, ValueError, IndexError):
                pass
            values.update({name + "_cpu": min(cpu, 65535), name + "_rss": min(rss, 2**32 - 1),
                           name + "_restarts": min(restarts.get(name, 0), 65535)})
        self.ticks = {pid: t for pid, t in self.ticks.items() if pid in pids.values()}
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Android hides /proc/loadavg from apps
            load = 0.0
        used, total = _memory()
        values.update(load=min(int(load * 100), 65535), mem_used=used, mem_total=total, battery=self.battery.percent)
        write(self.file, values)
        return values


def write(file, values):
    """One record into its slot (the file made, with its header, on first use; mode 600)."""
    record = RECORD.pack(*(values[name] for name in FIELDS))
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < HEADER.size:
            os.pwrite(fd, HEADER.pack(MAGIC, RECORD.size, INTERVAL, SLOTS), 0)
        os.pwrite(fd, record, HEADER.size + (values["t"] // INTERVAL % SLOTS) * RECORD.size)
    finally:
        os.close(fd)


def read(file, since=None, now=None):
    """The records of the last 24 h (newer than ``since``), oldest first, as dicts of FIELDS."""
    now = time.time() if now is None else now
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    if len(data) < HEADER.size or HEADER.unpack_from(data)[:2] != (MAGIC, RECORD.size):
        return []
    low = max(now - SLOTS * INTERVAL, since or 0)
    out = []
    for offset in range(HEADER.size, len(data) - RECORD.size + 1, RECORD.size):
        values = RECORD.unpack_from(data, offset)
        if low < values[0] <= now + INTERVAL:
            out.append(dict(zip(FIELDS, values)))
    out.sort(key=lambda r: r["t"])
    return out


def columns(records):
    """Records as {field: [values]}: a third of the JSON of a list of dicts, for the backlog."""
    return {name: [r[name] for r in records] for name in FIELDS}


def thin(cols, points=1440):
    """Every n-th sample of each column, the newest always kept, for about ``points`` in all: a
    chart has fewer pixels than a day has samples. Restart counters only grow between two kept
    samples, so a restart still shows as a step."""
    count = len(cols.get("t", []))
    step = max(1, -(-count // points))
    return {name: list(values[::-1][::step][::-1]) for name, values in cols.items()}
