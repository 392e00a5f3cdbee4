"""The bot's rules on injected clocks: the start budget over a day of crashes, login spacing, a clock
step and a reboot, shards, the watchdog and STATUS lines. A day runs in milliseconds here; the real
supervisor applying them is exercised in tests/test_bot_local.py and tests/test_bot_ssh.py."""

import hashlib

import pytest
from dashproc import Clock, Running

from remote.host.common.errors import BadRequest
from remote.host.common.files import Layout
from remote.host.supervision import bot
from remote.host.supervision.loop import DEFAULTS
from remote.host.supervision.service import RestartPolicy, Service


def keeper(tmp_path, mono, wall, limit=50, **cfg):
    paths = Layout(str(tmp_path))
    paths.make()
    k = bot.Keeper(dict(DEFAULTS, bot_command="bot", bot_starts_per_day=limit, **cfg), paths, mono)
    k.budget = bot.StartBudget(paths.bot_starts, limit, wall=wall, mono=mono, boot="boot-1")
    return k


def test_a_bot_crashing_61_s_after_each_start_spends_its_budget_in_a_day_and_starts_again_when_it_slides(tmp_path):
    mono, wall = Clock(5000.0), Clock(1.7e9)
    k = keeper(tmp_path, mono, wall)
    svc = Service("bot", ["bot"], {}, "/", "/nonexistent", RestartPolicy.from_config(DEFAULTS), mono)
    starts, first_spent = [], None
    day_end = mono() + 24 * 3600
    while mono() < day_end:
        decision, reason, seconds = k.gate()
        if decision == "wait":
            mono.advance(seconds)
            wall.advance(seconds)
            continue
        if decision == "spent":
            first_spent = first_spent or (len(starts), reason)
            mono.advance(seconds)
            wall.advance(seconds)
            break
        assert decision == "start"
        k.started()
        starts.append(mono())
        svc.running(Running())
        mono.advance(61)
        wall.advance(61)
        delay = svc.exited(1, ["boom"])
        assert delay == 1.0  # 61 s up: the policy alone forgets the failures and never gives up
        mono.advance(delay)
        wall.advance(delay)
    assert first_spent == (50, "start budget spent (50 in 24 h)")
    assert all(b - a >= bot.MIN_SPACING for a, b in zip(starts, starts[1:]))
    # the window slid past the first start: one more is allowed, then spent again
    assert mono() - starts[0] >= 24 * 3600
    assert k.gate()[0] == "start"
    k.started()
    assert k.gate()[0] in ("spent", "wait")


def test_two_starts_are_kept_5_s_apart_whatever_the_backoff(tmp_path):
    mono, wall = Clock(100.0), Clock(1.7e9)
    k = keeper(tmp_path, mono, wall)
    k.started()
    mono.advance(1.0)
    decision, reason, seconds = k.gate()
    assert (decision, seconds) == ("wait", 4.0) and "5 s apart" in reason
    mono.advance(4.0)
    assert k.gate()[0] == "start"


def test_a_clock_step_neither_erases_nor_fills_the_record(tmp_path):
    mono, wall = Clock(100.0), Clock(1.7e9)
    k = keeper(tmp_path, mono, wall, limit=3)
    for _ in range(3):
        k.started()
        mono.advance(10)
    wall.advance(48 * 3600)  # NTP steps the clock two days ahead
    assert k.budget.used() == 3 and k.gate()[0] == "spent"
    wall.advance(-96 * 3600)  # and back
    assert k.budget.used() == 3
    mono.advance(24 * 3600)
    assert k.budget.used() == 0


def test_the_record_survives_a_reboot_and_ages_at_least_by_the_uptime(tmp_path):
    mono, wall = Clock(100.0), Clock(1.7e9)
    paths = Layout(str(tmp_path))
    paths.make()
    before = bot.StartBudget(paths.bot_starts, 5, wall=wall, mono=mono, boot="boot-1")
    before.record()
    before.record()
    # a reboot: a new boot id, the monotonic clock from 0, the wall clock one hour on
    mono2, wall2 = Clock(30.0), Clock(1.7e9 + 3600)
    after = bot.StartBudget(paths.bot_starts, 5, wall=wall2, mono=mono2, boot="boot-2")
    assert after.used() == 2
    # a Pi without a clock boots in the past: the starts still count, aged by the uptime only
    behind = bot.StartBudget(paths.bot_starts, 5, wall=Clock(1.0e9), mono=Clock(60.0), boot="boot-3")
    assert behind.used() == 2
    later = bot.StartBudget(paths.bot_starts, 5, wall=Clock(1.7e9 + 25 * 3600), mono=Clock(600.0), boot="boot-4")
    assert later.used() == 0


def test_reset_budget_forgets_the_starts(tmp_path):
    mono, wall = Clock(100.0), Clock(1.7e9)
    k = keeper(tmp_path, mono, wall, limit=1)
    k.started()
    mono.advance(10)
    assert k.gate()[0] == "spent"
    bot.reset_budget(k.budget.path, 1)
    k.budget = bot.StartBudget(k.budget.path, 1, wall=wall, mono=mono, boot="boot-1")
    assert k.gate()[0] == "start"


def test_the_role_file_wins_over_the_inventorys_standby(tmp_path):
    mono, wall = Clock(100.0), Clock(1.7e9)
    k = keeper(tmp_path, mono, wall, standby=True)
    assert k.gate()[0] == "standby"
    bot.write_role(k.role_path, "active")
    assert k.gate()[0] == "start"
    bot.write_role(k.role_path, "standby")
    assert k.gate()[0] == "standby"


@pytest.mark.parametrize("spec, count, shards", [(None, 4, [0, 1, 2, 3]), ("0-1", 4, [0, 1]), ("3", 4, [3]),
                                                 ("0,2-3", 4, [0, 2, 3]), (2, 4, [2])])
def test_shards(spec, count, shards):
    assert bot.parse_shards(spec, count) == shards


@pytest.mark.parametrize("spec", ["4", "2-1", "a", "-1"])
def test_bad_shards_are_refused(spec):
    with pytest.raises(BadRequest):
        bot.parse_shards(spec, 4)


def test_overlap_is_same_bot_and_a_shard_in_common():
    one = {"bot_id": "a" * 12, "shard_count": 2, "shards": [0]}
    assert bot.overlaps(one, dict(one))
    assert not bot.overlaps(one, dict(one, shards=[1]))
    assert not bot.overlaps(one, dict(one, bot_id="b" * 12))
    assert bot.overlaps(one, dict(one, shards=[1], shard_count=3))  # different counts: different guild sets


def test_the_bot_id_is_12_hex_of_sha256_and_the_token_is_chosen_by_name():
    env = {"BOT_TOKEN": "secret-one", "DISCORD_TOKEN": "secret-two"}
    assert bot.token(env) == "secret-two" and bot.token(env, "BOT_TOKEN") == "secret-one"
    assert bot.bot_id("secret-one") == hashlib.sha256(b"secret-one").hexdigest()[:12]
    assert bot.token({}) is None and bot.bot_id(None) is None


def test_liveness_watchdog_and_status_lines():
    clock = Clock(10.0)
    live = bot.Liveness(3, clock)
    assert live.environment() == {"WATCHDOG_USEC": "3000000"}
    clock.advance(2.9)
    assert not live.overdue()
    live.heard([b"WATCHDOG=1", b"STATUS=12 guilds\x1b[31m, 45 ms" + b"x" * 300])
    assert live.status.startswith("12 guilds[31m, 45 ms") and len(live.status) == bot.STATUS_MAX
    clock.advance(2.9)
    assert not live.overdue()
    clock.advance(0.2)
    assert live.overdue()
    assert not bot.Liveness(0, clock).overdue() and bot.Liveness(0, clock).environment() == {}
