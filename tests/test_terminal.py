"""A host's text on the operator's terminal: every string a host sends goes through render.escape, field
by field, so a newline cannot forge another host's row and ESC cannot reach the terminal.

The renderers are the real ones, fed documents of the shapes hosts answer with, whose strings carry
the attack; the CLI tests run the real `invoke`, against this machine as a `connection: local` host.
"""

import inspect
import io
import logging
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from dashproc import ROOT, interrupt, invoke, local_inventory

from remote import render

EVIL = "\nFORGED\r\x1b[2J\x1b]0;title\x07\u202e"
SHOWN = "\\nFORGED\\r\\x1b[2J\\x1b]0;title\\x07\\u202e"  # what the terminal gets instead
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # all that may not pass (\n aside)


def test_escape_shows_every_control_bidi_mark_and_backslash_as_an_escape():
    assert render.escape("a\nb\rc\x1bd\te\x00\x7f\x9b") == "a\\nb\\rc\\x1bd\\te\\x00\\x7f\\x9b"
    assert render.escape("\u202a\u202e\u2066\u2069\u200f") == "\\u202a\\u202e\\u2066\\u2069\\u200f"
    # the backslash too, so that a host's own text "\n" cannot pass for an escaped newline
    assert render.escape("C:\\new") == "C:\\\\new" and render.escape("C:\\new") != render.escape("C:\new")
    assert render.escape("\ud800") == "\\ud800"  # a lone surrogate (JSON allows it) would make print() raise
    assert render.escape("pi ✓ ünïcode") == "pi ✓ ünïcode"
    assert render.escape(None) == "None" and render.escape(12) == "12"
    # a log keeps its lines and tabs; everything else as in a field
    assert render.escape_text("a\tb\nc\r\x1b[31md\\\n") == "a\tb\nc\\r\\x1b[31md\\\\\n"


def test_a_log_stream_is_escaped_wherever_its_chunks_are_cut():
    out = io.StringIO()
    stream = render.TerminalStream(out)
    text = "ok\n\x1b[2J\rgone\r\n"
    for i in range(len(text)):
        stream.write(text[i])
    assert out.getvalue() == render.escape_text(text) == "ok\n\\x1b[2J\\rgone\\r\n"


def _rows(text):
    return text.split("\n")


def test_status_rows_stay_one_line_each_and_show_what_the_host_sent():
    """A host whose service name, state, bot STATUS and error carry a newline, CR and ESC forges nothing."""
    forged = "\npi         supervisor  running  1    0m01s   -        -          -       -"
    docs = [
        {"host": "evil", "ok": True, "now": 100.0, "supervisor": {"state": "running", "pid": 9, "started_at": 90},
         "services": {"dashboard" + forged: {"state": "running\r\x1b[2K", "pid": 10, "started_at": 95,
                                             "restarts": 0, "last_exit": "\x1b]0;pwned\x07"},
                      "bot": {"state": "running", "pid": 11, "started_at": 95, "restarts": 0,
                              "bot_id": "abc\x1b[8m", "status": "12 guilds" + forged}}},
        {"host": "phone", "ok": False, "error": "ctl failed: boom" + forged + "\r\x1b[2J"},
        {"host": "pi", "ok": True, "now": 100.0, "supervisor": {"state": "running", "pid": 1, "started_at": 99},
         "services": {}},
    ]
    lines = _rows(render.status_table(docs))
    assert len(lines) == 1 + 3 + 1 + 1  # header, evil's supervisor, dashboard and bot, phone's error, pi's supervisor
    assert [line.split()[0] for line in lines[1:]] == ["evil", "evil", "evil", "phone", "pi"]
    text = "\n".join(lines)
    assert not RAW.search(text)
    assert "dashboard\\npi         supervisor" in text and "running\\r\\x1b[2K" in text
    assert "\\x1b]0;pwned\\x07" in text and "abc\\x1b[8m" in text and "boom\\npi" in text


def test_a_failed_services_last_lines_are_one_line_each():
    doc = {"host": "evil", "ok": True, "now": 0, "supervisor": {"running": True},
           "services": {"bot": {"state": "failed", "last_error": ["Traceback\r\x1b[1A", "x" + EVIL]}}}
    lines = _rows(render.status_table([doc]))
    assert lines[-3:] == ["evil bot failed; last lines:", "    Traceback\\r\\x1b[1A", "    x" + SHOWN]


def test_port_status_rows_stay_one_line_each():
    docs = [{"host": "evil", "ok": True, "port": 8080, "state": "in use", "method": "ss" + EVIL, "time_wait": 0,
             "listeners": [{"pid": 7, "user": "me\r", "cmdline": "\x1b]0;pwned\x07\x1b[2J -c x" + EVIL},
                           {"pid": 8, "user": "u", "role": "dashboard" + EVIL},
                           {"address": "127.0.0.1:8080\n"}]},
            {"host": "phone", "ok": False, "port": 8080, "error": "no route" + EVIL}]
    lines = _rows(render.port_table(docs))
    assert len(lines) == 1 + 3 + 1 and [line.split()[0] for line in lines[1:]] == ["evil"] * 3 + ["phone"]
    text = "\n".join(lines)
    assert not RAW.search(text)
    assert "\\x1b]0;pwned\\x07\\x1b[2J -c x\\nFORGED" in text and "ours: dashboard\\nFORGED" in text
    assert "no route" + SHOWN in text and "127.0.0.1:8080\\n" in text


def test_errors_and_their_log_tails_are_one_line_each():
    docs = [{"host": "evil", "ok": False, "error": "deploy failed" + EVIL, "log_tail": ["a\rb", "\x1b[2Jc"],
             "notes": ["TAKEOVER" + EVIL]}]
    for renderer in (render.restart_lines, render.deploy_lines, render.rollback_lines, render.autostart_lines):
        lines = _rows(renderer(docs))
        assert lines[-3:] == ["evil: FAILED: deploy failed" + SHOWN, "    a\\rb", "    \\x1b[2Jc"]
        assert lines[:-3] in ([], ["    TAKEOVER" + SHOWN])
    step = {"host": "evil", "step": "FAILED to start the bot: x" + EVIL, "ok": False, "log_tail": ["y\r\x1b[1A"]}
    assert _rows(render.failover_line(step)) == ["evil: FAILED to start the bot: x" + SHOWN, "    y\\r\\x1b[1A"]


def test_a_tasks_one_line_error_is_one_line():
    """The tasks' decorator (remote/cli.py): a HostError quoting a host's stderr ends the task with one escaped line."""
    from invoke import Exit

    from remote.cli import one_line_error
    from remote.errors import HostError

    @one_line_error
    def body():
        raise HostError("status failed: boom" + EVIL)

    with pytest.raises(Exit) as caught:
        body()
    assert caught.value.message == "error: status failed: boom" + SHOWN and caught.value.code == 1


def test_the_clis_one_line_error_is_escaped(tmp_path):
    """The real CLI: an error line that quotes a path with a newline and ESC in it stays one line."""
    missing = tmp_path / ("inventory\nerror: FORGED\x1b[2J.yml")
    out = invoke(missing, "status")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "inventory\\nerror: FORGED\\x1b[2J.yml: cannot read the inventory" in out.stderr


def test_the_fleets_warnings_are_one_line_each():
    out = io.StringIO()
    log = logging.getLogger("sulfur.fleet.test")
    handler = render.log_handler(out)
    log.addHandler(handler)
    try:
        log.warning("fleet: %s: the page was not told of a change: %s", "evil", "x" + EVIL)
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == "fleet: evil: the page was not told of a change: x" + SHOWN + "\n"


# ----------------------------------------------------------------------------- every renderer, every field
def _host(name):
    return SimpleNamespace(name=name, address="10.0.0.2", user="pi", is_local=False, platform="linux",
                           groups=["g"], app_dir="/srv/app")


def _samples():
    """Each renderer of host text, with arguments of the shapes it gets (every branch we can reach)."""
    failed = {"host": "h", "ok": False, "error": "e", "log_tail": ["t"]}
    status = {"host": "h", "ok": True, "now": 100, "supervisor": {"state": "dead", "last_pid": 3, "last_seen": 50},
              "services": {"dashboard": {"state": "running", "pid": 4, "started_at": 10, "restarts": 1,
                                         "last_exit": "sig"},
                           "bot": {"state": "failed", "reason": "r", "status": "s", "bot_id": "b", "shard_count": 2,
                                   "shards": [0], "budget": {"used": 2, "limit": 5}, "last_error": ["l"]}}}
    plan = {"host": "h", "ok": False, "error": "e", "running": {"stamp": "s", "commit": "c"},
            "shipping": {"commit": "c"}, "venv": {"reused": False, "digest": "d"},
            "files": {k: {"count": 3, "names": ["n"]} for k in ("added", "changed", "removed")},
            "env": {"added": ["A"], "changed": ["C"], "removed": []},
            "hooks": [{"hook": "before_switch", "run": "r\nsecond", "on_rollback": True}],
            "disk": {"free": 1e9, "path": "p", "needed": 1e6, "fits": True}, "bot": {"refused": False, "notes": ["n"]}}
    doctor = {"host": "h", "ok": True, "route": ["j"], "auth": True, "platform": "p", "uname": "u", "user": "u",
              "python": "3", "python_path": "/p", "app_dir": "/a", "app_dir_exists": True, "app_dir_writable": False,
              "disk_free": 2**30, "autostart": ["a"], "warning": "w",
              "methods": [{"method": "ss", "owner": True, "ok": True}, {"method": "lsof", "ok": False, "detail": "d"}],
              "android": {"wake_lock": "w", "phantom_killer": "p", "notes": ["n"]}}
    return {
        "status_table": [[status, failed]],
        "port_table": [[{"host": "h", "ok": True, "port": 1, "state": "s", "method": "m", "time_wait": 0,
                         "listeners": [{"pid": 1, "user": "u", "cmdline": "c", "managed": True},
                                       {"pid": 2, "role": "r"}, {"address": "a"}]}, failed]],
        "free_table": [[{"host": "h", "ok": True, "port": 1, "stopped": [{"pid": 1, "signal": "s"}]},
                        dict(failed, refused=True)]],
        "doctor_report": [[doctor, failed]],
        "restart_lines": [[{"host": "h", "ok": True, "action": "a", "pid": 1, "url": "u", "notes": ["n"]},
                           {"host": "h", "ok": True, "action": "stopped x"}, failed]],
        "deploy_lines": [[{"host": "h", "ok": True, "stamp": "s", "pid": 1, "previous": "p", "packages": 3,
                           "notes": ["n"]}, dict(failed, skipped=True), failed]],
        "plan_lines": [[plan, failed]],
        "releases_table": [[{"host": "h", "ok": True, "releases": [{"stamp": "s", "commit": "c", "by": "b",
                                                                    "current": True, "failed": True}]}, failed]],
        "rollback_lines": [[{"host": "h", "ok": True, "stamp": "s", "previous": "p", "pid": 1}, failed]],
        "autostart_lines": [[{"host": "h", "ok": True, "action": "a", "path": "p", "notes": ["n"]}, failed]],
        "failover_line": [{"host": "h", "step": "s", "ok": False, "log_tail": ["t"]}],
        "hosts_table": [[_host("h")]],
        "batch_line": [1, 2, [_host("h")]],
        "dev_stack_note": [_host("h")],
        "termux_setup": [["pkg install openssh"]],
        "not_reachable": ["h", "p", {"hostname": "x", "port": "22"}],
        "progress_line": ["h", "l"],
        "log_header": ["h"],
        "error_line": [RuntimeError("e")],
    }


#: the public functions of render that take no host text (or are the escaping itself)
NO_HOST_TEXT = {"as_json", "escape", "escape_text", "fleet_line", "log_handler", "not_shipped_line", "packed_line",
                "table"}


#: the words renderers choose a branch by: the line count is compared with them left as they are
BRANCHES = {"state", "action"}


def _hostile(value, keep=frozenset()):
    if isinstance(value, str):
        return value + EVIL
    if isinstance(value, list):
        return [_hostile(v, keep) for v in value]
    if isinstance(value, dict):
        return {k: v if k in keep else _hostile(v, keep) for k, v in value.items()}
    if isinstance(value, SimpleNamespace):
        return SimpleNamespace(**{k: _hostile(v, keep) for k, v in vars(value).items()})
    if isinstance(value, BaseException):
        return type(value)(_hostile(str(value)))
    return value


def test_every_renderer_escapes_every_field():
    """Each string in each document carries the attack: nothing raw reaches the output, no line starts
    with the forged text, and the text is still there to read. A new renderer must be listed here."""
    samples = _samples()
    public = {name for name, fn in inspect.getmembers(render, inspect.isfunction)
              if fn.__module__ == render.__name__ and not name.startswith("_")}
    assert public - NO_HOST_TEXT == set(samples), "list the new renderer in _samples(), with host text"
    for name, args in samples.items():
        plain = getattr(render, name)(*args)
        text = getattr(render, name)(*_hostile(args))
        assert not RAW.search(plain.replace("\n", "")) and not RAW.search(text), name
        assert "\\nFORGED" in text, name
        assert not [line for line in text.split("\n") if line.lstrip().startswith("FORGED")], name
        same_branches = getattr(render, name)(*_hostile(args, BRANCHES))
        assert same_branches.count("\n") == plain.count("\n"), name  # one line per row, whatever it says
        assert not RAW.search(same_branches), name


# ----------------------------------------------------------------------------- invoke logs, for real
LOG = "plain line\n\x1b[2J\x1b]0;pwned\x07cleared your screen\rover\\n it\n\u202eevil\r\n"


def _env(inventory):
    return dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(inventory.parent / "cache"))


def test_invoke_logs_escapes_a_hosts_log_and_raw_passes_it_as_it_is(tmp_path):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    log = tmp_path / "app" / "logs" / "bot.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(LOG.encode())
    out = invoke(inventory, "logs", "--service", "bot")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("plain line\n\\x1b[2J\\x1b]0;pwned\\x07cleared your screen\\rover\\\\n it\n"
                          "\\u202eevil\\r\n")
    raw = subprocess.run([sys.executable, "-m", "invoke", "logs", "--service", "bot", "--raw"], cwd=ROOT,
                         env=_env(inventory), capture_output=True, timeout=300)  # bytes: text mode would eat \r
    assert raw.returncode == 0 and raw.stdout == LOG.encode()


def test_invoke_logs_follow_escapes_new_lines(tmp_path):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    log = tmp_path / "app" / "logs" / "bot.log"
    log.parent.mkdir(parents=True)
    log.write_text("old\n")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "logs", "--service", "bot", "--follow"], cwd=ROOT,
                            env=_env(inventory), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"old\n"
        time.sleep(0.5)
        with open(log, "a") as handle:
            handle.write("new\x1b[2J\rline\n")
        assert proc.stdout.readline() == b"new\\x1b[2J\\rline\n"
    finally:
        interrupt(proc)  # Ctrl+C


def test_text_nan_or_huge_numbers_where_numbers_go_show_as_sent_and_hide_no_other_host():
    """A host that sends text, NaN or 1e300 for a time or a figure: its row shows what it sent (or
    "-"), and the other hosts' rows are all there (a traceback used to replace the whole table)."""
    docs = [
        {"host": "evil", "ok": True, "now": float("nan"),
         "supervisor": {"state": "dead", "last_seen": 1e300, "started_at": "x", "pid": "p"},
         "services": {"bot": {"state": "running", "pid": 11, "started_at": "yesterday", "restarts": "many"}}},
        {"host": "pi", "ok": True, "now": 100.0, "supervisor": {"state": "running", "pid": 1, "started_at": 99},
         "services": {}},
    ]
    lines = _rows(render.status_table(docs))
    assert [line.split()[0] for line in lines[1:]] == ["evil", "evil", "pi"]
    out = render.deploy_lines([{"host": "evil", "ok": True, "stamp": "s", "pid": 1, "previous": "p",
                                "healthy_in": "fast", "elapsed": float("inf")}])
    assert "fast" in out and "inf" in out and "\n" not in out.strip()
