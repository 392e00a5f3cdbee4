"""Who stands down, decided from the hosts' answers (remote/fencing.py's decide) and checked again on
the host under its lock (`ctl epoch`, epochs.settle): the issue's decision table row by row, the
tie between equal epochs, migration from before epochs, and the compare-and-set a failover makes."""

import json
import os
import time

import pytest
from dashproc import ROOT, ctl_run

from remote import fencing
from remote.host.common import epochs, wire

BOT = "0123456789ab"


def record(epoch, holder, since=1.0e9, by="op@laptop"):
    return {"epoch": epoch, "bot_id": BOT, "active_host": holder, "since": since, "by": by}


def answer(running, role=None, epoch=None):
    """A host's status answer as ctl status sends it (``epoch``: a record, "garbled", or None: no file)."""
    if epoch == "garbled":
        rec = {"epoch": 0, "garbled": True}
    elif epoch is None:
        rec = {"epoch": 0, "missing": True}
    else:
        rec = epoch
    unit = {"bot_id": BOT, "shard_count": 1, "shards": [0], "state": "running", "pid": 42, "started_at": 1.0}
    return {"ok": True, "now": 2.0, "bot": {"env_bot_id": BOT, "running": unit if running else None, "role": role,
                                            "epoch": rec}}


def kinds(steps):
    return sorted((s.host, s.kind) for s in steps)


def test_garbled_and_running_with_no_known_epoch_elsewhere_keeps_running_and_warns():
    steps, _ = fencing.decide({"pi": answer(True, "active", "garbled"), "phone": answer(False, "standby")}, {})
    assert kinds(steps) == [("pi", "note")] and "nothing was stopped" in steps[0].line


def test_garbled_and_running_beside_an_active_host_with_a_known_epoch_stands_down():
    steps, _ = fencing.decide({"pi": answer(True, "active", "garbled"),
                               "phone": answer(True, "active", record(3, "phone"))}, {})
    assert kinds(steps) == [("pi", "fence")] and "epoch 3 belongs to phone" in steps[0].line


def test_garbled_standby_gets_the_file_rewritten_and_nothing_else():
    steps, _ = fencing.decide({"pi": answer(False, "standby", "garbled"),
                               "phone": answer(True, "active", record(1, "phone"))}, {})
    assert kinds(steps) == [("pi", "fence")]  # on a standby host, `ctl epoch` only rewrites the record


def test_garbled_on_both_stops_nothing_and_says_epochs_unknown():
    steps, _ = fencing.decide({"pi": answer(True, "active", "garbled"), "phone": answer(True, "active", "garbled")},
                              {})
    assert [s.kind for s in steps] == ["note"] and "epochs unknown: run `invoke failover --to" in steps[0].line


def test_a_stale_active_host_stands_down_for_the_epoch_this_machine_remembers():
    """The partition: phone took the bot over (epoch 2) while pi was away; phone is unreachable now."""
    steps, best = fencing.decide({"pi": answer(True, "active", record(1, "pi"))}, {BOT: record(2, "phone")})
    assert kinds(steps) == [("pi", "fence")] and best[BOT]["active_host"] == "phone"


def test_equal_epochs_the_host_whose_name_sorts_first_keeps_the_bot():
    steps, best = fencing.decide({"pi": answer(True, "active", record(4, "pi")),
                                  "phone": answer(True, "active", record(4, "phone"))}, {})
    assert kinds(steps) == [("pi", "fence")] and best[BOT]["active_host"] == "phone"  # b"phone" < b"pi"


def test_a_bot_from_before_epochs_gets_epoch_1_on_the_host_that_runs_it():
    steps, best = fencing.decide({"pi": answer(True, "active"), "phone": answer(False, "standby")}, {})
    assert ("pi", "record") in kinds(steps) and best[BOT]["epoch"] == 1 and best[BOT]["active_host"] == "pi"
    assert kinds(steps) == [("pi", "record")]  # phone never had the bot: a start there is the guard's to refuse


def test_a_current_host_and_an_unreachable_one_need_nothing():
    steps, _ = fencing.decide({"pi": answer(True, "active", record(5, "pi")),
                               "phone": {"ok": False, "error": "timed out"}}, {BOT: record(5, "pi")})
    assert steps == []


def test_a_hostile_answer_is_epoch_0_and_never_wins():
    hostile = answer(True, "active", {"epoch": 10 ** 30, "active_host": "x", "since": 1.0})
    steps, best = fencing.decide({"evil": hostile, "pi": answer(True, "active", record(2, "pi"))}, {})
    assert best[BOT]["active_host"] == "pi" and kinds(steps) == [("evil", "fence")]


def test_a_failover_cut_short_after_its_compare_and_set_is_named_with_the_command_that_ends_it():
    steps, _ = fencing.decide({"pi": answer(False, "standby", record(3, "phone")),
                               "phone": answer(False, "standby", record(2, "pi"))}, {})
    notes = [s.line for s in steps if s.kind == "note"]
    assert notes and "epoch 3 belongs to phone" in notes[0] and "run `invoke failover --to phone`" in notes[0]


# ------------------------------------------------------------------ the host's half, for real (ctl)
def ctl_epoch(app, options, name="pi"):
    out = ctl_run(ROOT, "epoch", app, options, settings={"name": name, "bot_command": "python bot.py"},
                  protocol=wire.SINCE["epoch"], protocols=[wire.OLDEST, wire.PROTOCOL])
    return out.returncode, json.loads(out.stdout.splitlines()[-1])


def test_the_compare_and_set_refuses_a_second_failover_naming_who_moved_the_bot(tmp_path):
    app = tmp_path / "app"
    code, doc = ctl_epoch(app, {"record": record(1, "pi")})
    assert code == 0 and doc["epoch"]["epoch"] == 1
    code, doc = ctl_epoch(app, {"record": record(2, "phone", by="alice@laptop"), "expect": 1})
    assert code == 0 and doc["epoch"]["active_host"] == "phone"
    assert (app / "run" / "bot-role").read_text().strip() == "standby"
    code, doc = ctl_epoch(app, {"record": record(2, "vps", by="bob@desk"), "expect": 1})
    assert code == 1 and "the bot was moved meanwhile: epoch 2 belongs to phone" in doc["error"]
    assert "(moved by alice@laptop)" in doc["error"]
    assert epochs.read(str(app / "run" / "bot-epoch.json"))["active_host"] == "phone"  # unchanged by the loser
    assert os.stat(app / "run" / "bot-epoch.json").st_mode & 0o777 == 0o600
    log = (app / "logs" / "supervisor.log").read_text()
    assert "fenced: epoch 2 belongs to phone since " in log


def test_a_host_never_takes_a_lower_epoch_and_a_garbled_file_reads_as_0(tmp_path):
    app = tmp_path / "app"
    assert ctl_epoch(app, {"record": record(5, "pi")})[0] == 0
    code, doc = ctl_epoch(app, {"record": record(3, "phone")})
    assert code == 0 and not doc["fenced"] and doc["epoch"]["epoch"] == 5  # it knows better: nothing changed
    code, doc = ctl_epoch(app, {"record": record(4, "pi")})
    assert code == 1 and "knows a later epoch" in doc["error"]
    (app / "run" / "bot-epoch.json").write_text("{not json")
    assert epochs.read(str(app / "run" / "bot-epoch.json")) == {"epoch": 0, "garbled": True}
    code, doc = ctl_epoch(app, {"record": {"epoch": True, "active_host": "x", "since": 1}})
    assert code == 2 and "wrong shape" in doc["error"]


@pytest.mark.parametrize("since", [time.time(), 0.0])
def test_the_clock_is_shown_never_compared(tmp_path, since):
    app = tmp_path / "app"
    assert ctl_epoch(app, {"record": record(2, "pi", since=8.0e9)})[0] == 0
    code, doc = ctl_epoch(app, {"record": record(3, "phone", since=since)})
    assert code == 0 and doc["epoch"]["epoch"] == 3  # a wrong clock on either side changes nothing


def test_a_record_naming_a_host_outside_the_inventory_or_another_bot_is_not_believed():
    """A hostile host claims the bot for a name that sorts first ("!"), or sends another bot's record."""
    liar = answer(True, "active", record(2, "!"))
    other_bot = answer(True, "active", dict(record(9, "phone"), bot_id="fedcba987654"))
    steps, best = fencing.decide({"evil": liar, "phone": other_bot, "pi": answer(True, "active", record(2, "pi"))},
                                 {}, names=["evil", "phone", "pi"])
    assert best[BOT]["active_host"] == "pi" and ("pi", "fence") not in kinds(steps)


@pytest.mark.parametrize("bad", [{"since": 1e300}, {"since": -1.0}, {"epoch": 2 ** 31}, {"active_host": "\ud800"}])
def test_a_record_that_would_break_a_clock_or_a_counter_reads_as_garbled(bad):
    assert not epochs.valid(dict(record(2, "pi"), **bad))
    assert epochs.in_answer(answer(True, "active", dict(record(2, "pi"), **bad))) == {"epoch": 0, "garbled": True}


def test_the_hosts_own_dashboard_words_its_role_and_epoch_as_status_does(tmp_path):
    from dashboard.app import bot_epoch
    from remote.host.common.files import Layout, write_json
    from remote.host.supervision import bot

    paths = Layout(str(tmp_path / "app"))
    paths.make()
    write_json(paths.config, {"name": "pi"})
    assert bot_epoch(paths.app_dir) == "role initial, no epoch yet"
    epochs.write(paths.bot_epoch, record(4, "pi"))
    assert bot_epoch(paths.app_dir) == "role initial, epoch 4"
    epochs.write(paths.bot_epoch, record(5, "phone"))
    bot.write_role(paths.bot_role, "standby")
    assert bot_epoch(paths.app_dir).startswith("role standby, fenced: epoch 5 belongs to phone since ")
    (tmp_path / "app" / "run" / "bot-epoch.json").write_text("[")
    assert bot_epoch(paths.app_dir) == "role standby, epoch unreadable (counts as 0)"


def test_a_new_token_carries_the_epoch_over_to_the_new_bot_id(tmp_path):
    from remote.host.common.files import Layout
    from remote.host.supervision import guard

    paths = Layout(str(tmp_path / "app"))
    paths.make()
    epochs.write(paths.bot_epoch, record(7, "pi"))
    guard.take_epoch(paths, {"name": "pi"}, "fedcba987654", {"epochs": {}, "by": "op@laptop"})
    kept = epochs.read(paths.bot_epoch)
    assert kept["epoch"] == 7 and kept["bot_id"] == "fedcba987654" and kept["active_host"] == "pi"
    guard.take_epoch(paths, {"name": "pi"}, "fedcba987654", {"epochs": {}})  # the same id again: nothing moves
    assert epochs.read(paths.bot_epoch)["epoch"] == 7
