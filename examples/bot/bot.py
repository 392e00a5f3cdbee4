"""The example Sulfur bot: /ping, a /count kept in SQLite under data/, a latency STATUS line, and
WATCHDOG pings only while Discord's gateway is alive.

    python examples/bot/bot.py          # DISCORD_TOKEN (or BOT_TOKEN, TOKEN) set: a real bot
    python examples/bot/bot.py          # no token: demo mode, simulated events, no network

Demo mode imports nothing but the standard library, so `make dev` shows dashboard and bot without a
token or discord.py. It talks to the supervisor as a systemd service would (sd_notify): READY=1
once connected (again after a reconnect), STATUS=... with what it is doing, WATCHDOG=1 when
WATCHDOG_USEC is set, and only while the gateway answers (see Gateway), so that a bot whose
connection is dead but whose process runs is restarted. Its data is data/count.sqlite, in the
release's data/ (the inventory's `shared_paths: [data]` keeps it across deploys and carries it along
on failover). The token comes from the environment (shared/.env) and is never printed.
Shards come from SHARD_COUNT and SHARD_IDS. Demo knobs for trying the supervisor out:
EXAMPLE_BOT_DEMO=1 (demo mode even with a token), EXAMPLE_BOT_CRASH_AFTER=S (exit 1 after S s),
EXAMPLE_BOT_HANG_AFTER=S (stop the heartbeat after S s, as a bot stalled by Android's Doze would).
"""

import math
import os
import random
import socket
import sqlite3
import sys
import time

#: Discord's gateway asks for a heartbeat about every 41.25 s; two of them missed is a dead link
GATEWAY_SILENCE = 2 * 41.25 + 10
DATA = os.path.join("data", "count.sqlite")


def sd_notify(message):
    """The ten stdlib lines of sd_notify (the `sdnotify` package does the same)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), path)
        except OSError:
            pass


def watchdog_interval():
    """Half the watchdog period, as systemd advises; None when the supervisor set no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def shards():
    count = int(os.environ.get("SHARD_COUNT", "1"))
    ids = [int(i) for i in os.environ.get("SHARD_IDS", "0").split(",") if i.strip()]
    return count, ids


class Gateway:
    """Is the gateway alive? discord.py has no public heartbeat hook, so: its latency (the last
    heartbeat's round trip) is a finite number, and it has changed within GATEWAY_SILENCE seconds
    (each acknowledged heartbeat measures it anew; a dead link leaves the last value, or none)."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.value, self.changed = clock, None, None

    def observe(self, latency):
        if latency is not None and math.isfinite(latency) and latency != self.value:
            self.value, self.changed = latency, self.clock()

    def alive(self):
        return self.changed is not None and self.clock() - self.changed <= GATEWAY_SILENCE


def bump(path=DATA, name="count"):
    """One more in the counter ``name`` (created at 0): its new value. SQLite in WAL mode, one short
    transaction, so that sulfur-ops' snapshot of data/ is consistent at any moment."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with sqlite3.connect(path, timeout=10) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))
        return db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]


def log(text):
    print("%s bot[%d] %s" % (time.strftime("%H:%M:%S"), os.getpid(), text), flush=True)


def demo():
    """Simulated events: a guild count, latency, commands; the heartbeat pings the watchdog."""
    count, ids = shards()
    crash_after = float(os.environ.get("EXAMPLE_BOT_CRASH_AFTER") or 0)
    hang_after = float(os.environ.get("EXAMPLE_BOT_HANG_AFTER") or 0)
    beat = watchdog_interval() or 1.0
    started = time.monotonic()
    log("demo mode (no token, or EXAMPLE_BOT_DEMO=1): simulated events, no network; shards %s of %d"
        % (",".join(map(str, ids)), count))
    sd_notify("READY=1\nSTATUS=demo: connected")
    guilds, next_event = 12, time.monotonic()
    while True:
        up = time.monotonic() - started
        if crash_after and up >= crash_after:
            log("demo: crashing as asked (EXAMPLE_BOT_CRASH_AFTER=%s)" % crash_after)
            return 1
        if hang_after and up >= hang_after:
            log("demo: hanging as asked (EXAMPLE_BOT_HANG_AFTER=%s): no more heartbeats" % hang_after)
            while True:
                time.sleep(3600)
        latency = random.randint(30, 90)
        sd_notify("WATCHDOG=1\nSTATUS=%d guilds, %d ms" % (guilds, latency))
        if time.monotonic() >= next_event:
            log(random.choice(["/ping from demo-user: pong (%d ms)" % latency, "guild joined: demo-guild-%d"
                               % guilds, "message seen in #general", "heartbeat ack %d ms" % latency,
                               "/count from demo-user: %s" % (bump() if os.path.isdir("data") else "no data/")]))
            next_event = time.monotonic() + 2
        time.sleep(beat)


def real(token):
    import asyncio

    import discord  # only here: demo mode runs without it
    from discord import app_commands

    count, ids = shards()
    client = discord.AutoShardedClient(intents=discord.Intents.default(), shard_count=count, shard_ids=ids)
    tree = app_commands.CommandTree(client)

    gateway = Gateway()

    @tree.command(description="Is the bot alive? Answers with its latency.")
    async def ping(interaction):
        await interaction.response.send_message("pong (%.0f ms)" % (client.latency * 1000))

    @tree.command(description="Counts: one more each time, kept across restarts, deploys and failovers.")
    async def count(interaction):
        value = await client.loop.run_in_executor(None, bump)  # off the event loop (Python 3.8 has no to_thread)
        await interaction.response.send_message("%d" % value)

    async def heartbeat():
        beat = watchdog_interval() or 5.0
        while True:
            gateway.observe(client.latency)
            if gateway.alive():  # no WATCHDOG=1 while the gateway is silent: the supervisor restarts us
                sd_notify("WATCHDOG=1\nSTATUS=%d guilds, %.0f ms" % (len(client.guilds), client.latency * 1000))
            else:
                sd_notify("STATUS=gateway silent")
            await asyncio.sleep(beat)

    @client.event
    async def on_ready():  # again after a reconnect that could not resume
        await tree.sync()
        log("connected as %s, %d guilds" % (client.user, len(client.guilds)))
        sd_notify("READY=1\nSTATUS=connected")
        if not getattr(client, "heartbeat_task", None):
            client.heartbeat_task = client.loop.create_task(heartbeat())

    @client.event
    async def on_resumed():
        sd_notify("READY=1\nSTATUS=resumed")

    client.run(token, log_handler=None)
    return 0


def main():
    token = next((os.environ[k] for k in ("DISCORD_TOKEN", "BOT_TOKEN", "TOKEN") if os.environ.get(k)), None)
    if not token or os.environ.get("EXAMPLE_BOT_DEMO"):
        return demo()
    return real(token)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C in `invoke dev`'s terminal reaches the whole group: a quiet stop
        sys.exit(0)
