"""The example Sulfur bot: a /ping command, a latency STATUS line, WATCHDOG pings from its heartbeat.

    python examples/bot/bot.py          # DISCORD_TOKEN (or BOT_TOKEN, TOKEN) set: a real bot
    python examples/bot/bot.py          # no token: demo mode, simulated events, no network

Demo mode imports nothing but the standard library, so `make dev` shows dashboard and bot without a
token or discord.py. It talks to the supervisor as a systemd service would (sd_notify): READY=1
once connected, STATUS=... with what it is doing, WATCHDOG=1 from its heartbeat when WATCHDOG_USEC
is set. Shards come from SHARD_COUNT and SHARD_IDS. Demo knobs for trying the supervisor out:
EXAMPLE_BOT_DEMO=1 (demo mode even with a token), EXAMPLE_BOT_CRASH_AFTER=S (exit 1 after S s),
EXAMPLE_BOT_HANG_AFTER=S (stop the heartbeat after S s, as a bot stalled by Android's Doze would).
"""

import os
import random
import socket
import sys
import time


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
                               % guilds, "message seen in #general", "heartbeat ack %d ms" % latency]))
            next_event = time.monotonic() + 2
        time.sleep(beat)


def real(token):
    import asyncio

    import discord  # only here: demo mode runs without it
    from discord import app_commands

    count, ids = shards()
    client = discord.AutoShardedClient(intents=discord.Intents.default(), shard_count=count, shard_ids=ids)
    tree = app_commands.CommandTree(client)

    @tree.command(description="Is the bot alive? Answers with its latency.")
    async def ping(interaction):
        await interaction.response.send_message("pong (%.0f ms)" % (client.latency * 1000))

    async def heartbeat():
        beat = watchdog_interval() or 5.0
        while True:
            sd_notify("WATCHDOG=1\nSTATUS=%d guilds, %.0f ms" % (len(client.guilds), client.latency * 1000))
            await asyncio.sleep(beat)

    @client.event
    async def on_ready():
        await tree.sync()
        log("connected as %s, %d guilds" % (client.user, len(client.guilds)))
        sd_notify("READY=1")
        client.loop.create_task(heartbeat())

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
