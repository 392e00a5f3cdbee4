"""Tables and JSON for the terminal. The only module of remote/ that makes text for people.

Every string a host sends (names, messages, errors, STATUS lines, log lines) reaches the terminal
through ``escape`` alone: each field is escaped before it is joined into a line or padded into a
column, so a host's newline cannot start a row that looks like another host's, and its ESC cannot
move the cursor, recolour or retitle the terminal. ``_fmt`` and ``table`` are the two ways a
renderer builds a line, and both escape every field.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import IO, Any, Dict, Iterable, List, Optional, Sequence

from remote.host.common import epochs

#: what a host's text must not bring to a terminal as it is: C0 and C1 controls and DEL (escape
#: sequences start with one), the invisible marks that reorder or hide text (bidi overrides and
#: isolates, zero-width marks, line and paragraph separators), lone surrogates (printing one raises),
#: and the backslash itself, so that what is shown reads back one way only
_MARKS = r"\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff"
_FIELD = re.compile(r"[\\\x00-\x1f%s]" % _MARKS)
_TEXT = re.compile(r"[\\\x00-\x08\x0b-\x1f%s]" % _MARKS)  # a log's text: its tabs and newlines stay
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return ("\\x%02x" if ord(char) < 0x100 else "\\u%04x") % ord(char)


def escape(value: Any) -> str:
    """One field from a host as one line of plain text: control characters, bidi marks and the
    backslash shown as escapes (``\\n``, ``\\r``, ``\\x1b``, ``\\u202e``, ``\\\\``)."""
    return _FIELD.sub(_visible, value if isinstance(value, str) else str(value))


def escape_text(text: str) -> str:
    """Text of many lines (a log as it streams): as ``escape``, but its newlines and tabs kept. Each
    character is escaped alone, so a chunk may end anywhere."""
    return _TEXT.sub(_visible, text)


_DIRECTIVE = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[sdifgeEr]")


def _fmt(template: str, *fields: Any) -> str:
    """``template % fields`` with every field escaped; numbers stay numbers for %d and %.1f. A host
    that sends text, NaN or 1e400 where a number goes gets its field shown as sent (escaped), never
    a traceback that would hide every other host's rows."""
    values = tuple(f if isinstance(f, (int, float)) and not isinstance(f, bool) else escape(f) for f in fields)
    try:
        return template % values
    except (TypeError, ValueError, OverflowError):
        return _DIRECTIVE.sub("%s", template) % tuple(escape(f) for f in fields)


def _number(value: Any) -> Optional[float]:
    """``value`` when it is a finite number (a host's field, untrusted), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) and abs(value) < 1e15 else None
    except OverflowError:  # an int too large for a float
        return None


def error_line(exc: BaseException) -> str:
    """A task's one line for a SulfurError, whose message may quote a host (its stderr, its answer)."""
    return "error: " + escape(exc)


def progress_line(name: str, line: str) -> str:
    """A host's progress line ("pi: switching to ..."), with its newline."""
    return _fmt("%s: %s", name, line) + "\n"


class TerminalStream:
    """An out_stream that passes a host's output (a log) on with control characters made visible."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: str) -> None:
        self.stream.write(escape_text(data))

    def flush(self) -> None:
        self.stream.flush()


def log_header(name: str) -> str:
    """`invoke logs` of several hosts: the line before each host's log."""
    return _fmt("==> %s <==", name)


class _EscapingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))


def log_handler(stream: IO[str]) -> logging.Handler:
    """For the fleet's warnings ("pi: the page was not told of a change: ..."), which quote what a
    link met: each record one line, escaped, as Python's last-resort handler would write it otherwise."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_EscapingFormatter("%(message)s"))
    return handler


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to the widest cell; each cell escaped first, so every row is one line."""
    rows = [["-" if v is None or v == "" else escape(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    last = len(headers) - 1
    lines = ["  ".join(h.ljust(w) if i < last else h for i, (h, w) in enumerate(zip(headers, widths)))]
    for row in rows:
        lines.append("  ".join(v.ljust(w) if i < last else v for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(line.rstrip() for line in lines)


def as_json(docs: List[Dict[str, Any]]) -> str:
    return json.dumps(docs, indent=2)


def hosts_table(hosts: list) -> str:
    return table(["NAME", "ADDRESS", "USER", "PLATFORM", "GROUPS"],
                 [[h.name, h.address, "-" if h.is_local else h.user, h.platform, ",".join(h.groups)]
                  for h in hosts])


def _short(text: Any, width: int = 60) -> Any:
    return text if not isinstance(text, str) or len(text) <= width else text[: width - 3] + "..."


def port_table(docs: List[Dict[str, Any]]) -> str:
    rows = []
    for d in docs:
        if not d.get("ok") and d.get("state") is None:
            rows.append([d["host"], d.get("port"), "error", None, None, d.get("error"), None, None])
            continue
        via = d.get("method") or "none worked"
        tw = d.get("time_wait")
        listeners, seen = d.get("listeners") or [{}], set()
        for item in listeners:
            command = item.get("cmdline") or item.get("process")
            if item and not item.get("pid"):
                command = "(owner not visible) " + item.get("address", "")
            elif item.get("role"):  # our stack's processes by what they are; --json has the command lines
                if item["role"] in seen:
                    continue  # one row per role (an IPv4 and an IPv6 socket, say)
                seen.add(item["role"])
                command = "ours: %s" % item["role"]
            elif item.get("managed"):
                command = "[ours] %s" % command
            rows.append([d["host"], d["port"], d["state"], item.get("pid"), item.get("user"),
                         _short(command), via, tw])
    return table(["HOST", "PORT", "STATE", "PID", "USER", "COMMAND", "VIA", "TIME_WAIT"], rows)


def free_table(docs: List[Dict[str, Any]]) -> str:
    rows = []
    for d in docs:
        stopped = ", ".join("pid %s (%s)" % (s["pid"], s["signal"]) for s in d.get("stopped", []))
        if d.get("ok"):
            detail = ("stopped " + stopped) if stopped else "nothing to stop"
            rows.append([d["host"], d.get("port"), "freed" if stopped else "free", detail])
        else:
            result = "refused" if d.get("refused") else "error"
            rows.append([d["host"], d.get("port"), result, d.get("error")])
    return table(["HOST", "PORT", "RESULT", "DETAIL"], rows)


def doctor_report(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        if not d.get("ok"):
            out.append(_fmt("%s: unreachable or failed: %s", d["host"], d.get("error")))
            continue
        route = " -> ".join(map(str, d.get("route") or []))
        if route:
            out.append(_fmt("%s: via %s", d["host"], route))
        works = [m["method"] + ("" if m["owner"] else " (no owner)") for m in d["methods"] if m["ok"]]
        broken = ["%s (%s)" % (m["method"], m["detail"]) for m in d["methods"] if not m["ok"]]
        disk = d.get("disk_free")
        out.extend([
            _fmt("%s:", d["host"]),
            _fmt("  reachable   yes%s%s", ", auth ok" if d.get("auth") else " (local)",
                 ", via %s" % route if route else ""),
            _fmt("  platform    %s  (%s, user %s)", d["platform"], d["uname"], d["user"]),
            _fmt("  python      %s  %s", d["python"], d["python_path"]),
            _fmt("  port tools  %s", ", ".join(works) or "none"),
            _fmt("  not usable  %s", ", ".join(broken) or "-"),
            _fmt("  app_dir     %s  (%s, %s)", d["app_dir"], "exists" if d["app_dir_exists"] else "not created yet",
                 "writable" if d["app_dir_writable"] else "NOT writable"),
            "  disk free   %s" % ("%.1f GiB" % (disk / 2**30) if disk is not None else "unknown"),
            _fmt("  autostart   %s", ", ".join(d.get("autostart") or []) or "not installed (invoke autostart)"),
        ] + _android(d.get("android")) + _epoch_lines(d)
            + ([_fmt("  warning     %s", d["warning"])] if d.get("warning") else []))
    return "\n".join(out)


def _epoch_lines(d: Dict[str, Any]) -> List[str]:
    """doctor: the bot's epoch here, and boot_wait recommended on a host the bot was moved away from."""
    info = d.get("bot_epoch")
    if not isinstance(info, dict):
        return []
    if info.get("garbled"):
        return [_fmt("  bot epoch   UNREADABLE (run/bot-epoch.json): it counts as 0; invoke failover --to the host "
                     "that should run the bot writes it again")]
    line = _fmt("  bot epoch   %s, the bot belongs to %s", info.get("epoch"), info.get("active_host"))
    if info.get("active_host") != d["host"] and not info.get("boot_wait"):
        line += _fmt("; the bot was moved away from here: set boot_wait: 30s on %s in the inventory, so that at "
                     "boot its bot waits for an epoch check (then invoke restart --host %s)", d["host"], d["host"])
    return [line]


def _notes(d: Dict[str, Any]) -> List[str]:
    """A host's loud notes (a --takeover that mattered) under its line."""
    return [_fmt("    %s", note) for note in d.get("notes") or []]


def _android(info: Any) -> List[str]:
    if not info:
        return []
    return ([_fmt("  wake lock   %s", info.get("wake_lock")), _fmt("  phantom     %s", info.get("phantom_killer"))]
            + [_fmt("  note        %s", note) for note in info.get("notes") or []])


def restart_lines(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        out.extend(_notes(d))
        if d.get("ok"):
            if d.get("action", "").startswith("stopped") or d.get("action") == "not running":
                out.append(_fmt("%s: %s", d["host"], d["action"]))
            elif d.get("pid") and d.get("url"):
                note = "" if d["action"] == "restarted" else " [%s]" % d["action"]
                out.append(_fmt("%s: dashboard up at %s (pid %s, %.1f s)%s", d["host"], d["url"], d["pid"],
                                d.get("elapsed", 0), note))
            else:
                out.append(_fmt("%s: %s", d["host"], d.get("action", "ok")))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def _uptime(svc: Dict[str, Any], now: Any) -> str:
    started, now = _number(svc.get("started_at")), _number(now)
    if svc.get("state") not in ("running", "orphaned") or not started or now is None:
        return "-"
    seconds = int(now - started)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60) if seconds >= 3600 else "%dm%02ds" % divmod(seconds, 60)


def _supervisor_row(d: Dict[str, Any]) -> List[Any]:
    sup = d.get("supervisor") or {}
    state = sup.get("state") or ("running" if sup.get("running") else "stopped")
    when = None
    if state == "dead" and _number(sup.get("last_seen")):
        try:
            when = "dead since %s" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sup["last_seen"]))
        except (OverflowError, OSError, ValueError):
            when = "dead"
    return [d["host"], "supervisor", state, sup.get("pid") or sup.get("last_pid"),
            _uptime({"state": state, "started_at": sup.get("started_at")}, d.get("now", 0)), None, None, None, when]


def _bot_detail(svc: Dict[str, Any]) -> str:
    """What the bot said (STATUS=), or why it does not run, and its shards if it has several: one
    cell, which ``table`` escapes."""
    parts = [svc.get("reason") if svc.get("state") != "running" else None, svc.get("status")]
    if (svc.get("shard_count") or 1) > 1:
        parts.append("shards %s/%s" % (",".join(map(str, svc.get("shards") or [])), svc["shard_count"]))
    budget = svc.get("budget") or {}
    if budget.get("used"):
        parts.append("starts %s/%s in 24 h" % (budget["used"], budget.get("limit")))
    return "; ".join(_short(p, 70) for p in parts if p)


def status_table(docs: List[Dict[str, Any]]) -> str:
    rows, notes = [], []
    for d in docs:
        if not d.get("ok"):
            rows.append([d["host"], "-", "error", None, None, None, None, None, d.get("error")])
            continue
        services, epoch = d.get("services") or {}, epochs.answer_text(d, d.get("host"))
        rows.append(_supervisor_row(d))
        for name, svc in services.items():
            bot = name == "bot"
            rows.append([d["host"], name, svc.get("state"), svc.get("pid"), _uptime(svc, d.get("now", 0)),
                         svc.get("restarts"), svc.get("last_exit"), svc.get("bot_id") if bot else None,
                         "; ".join(filter(None, [_bot_detail(svc), epoch])) if bot else None])
            if svc.get("state") == "failed" and svc.get("last_error"):
                notes.append(_fmt("%s %s failed; last lines:", d["host"], name))
                notes.extend(_fmt("    %s", line) for line in svc["last_error"])
    headers = ["HOST", "SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "BOT-ID", "DETAIL"]
    return "\n".join([table(headers, rows)] + notes)


def dev_stack_note(host: Any) -> str:
    """Said before a task without --host acts on `invoke dev`'s stack rather than the inventory's local host."""
    return _fmt("this machine: acting on the running dev stack of invoke dev (app dir %s); --host local is "
                "the inventory's local host", host.app_dir)


def termux_setup(lines: List[str]) -> str:
    """add-host --termux: the phone's one-time setup, indented to be pasted."""
    return "Once, on the phone, in Termux (paste these):\n" + "\n".join(_fmt("    %s", line) for line in lines)


def not_reachable(name: str, problem: Any, values: Dict[str, Any]) -> str:
    """add-host of a host that is down: written, but its key is not checked yet; how to do that later."""
    return _fmt("warning: %s is not reachable yet: %s. Once it is up, run invoke add-host %s --hostname %s%s again "
                "to check and trust its key", name, problem, name, values["hostname"],
                " --port %s" % values["port"] if "port" in values else "")


def packed_line(package: Any, wheels: bool) -> str:
    """deploy: one package made (one per bot source), then what it left out."""
    packing = _fmt("packing: %.1f MB%s%s", package.size / 2**20, ", commit %s" % package.commit[:12]
                   if package.commit else "", ", with wheels" if wheels else "")
    return packing + "\n" + not_shipped_line(package.not_shipped)


def not_shipped_line(names: List[str], width: int = 200) -> str:
    """deploy and deploy --plan: what packing left out because it may hold secrets, on one line of about
    ``width`` characters whatever the number (names only: a file's contents are never read for this)."""
    shown: List[str] = []
    for name in names:
        text = _short(escape(name))
        if shown and sum(len(s) + 2 for s in shown) + len(text) > width:
            break
        shown.append(text)
    more = ", ... and %d more" % (len(names) - len(shown)) if len(names) > len(shown) else ""
    return "skipped %d file%s that may hold secrets%s" % (len(names), "" if len(names) == 1 else "s",
                                                          ": " + ", ".join(shown) + more if names else "")


def batch_line(number: int, total: int, hosts: List[Any]) -> str:
    """deploy --serial: a batch starts."""
    return _fmt("batch %d of %d: %s", number, total, ", ".join(h.name for h in hosts))


def failover_line(step: Dict[str, Any]) -> str:
    """One step of `invoke failover` (and of the fleet page's), its host's last lines under it."""
    return "\n".join([_fmt("%s: %s", step["host"], step["step"])]
                     + [_fmt("    %s", text) for text in step.get("log_tail") or []])


def deploy_lines(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        out.extend(_notes(d))
        if d.get("ok"):
            venv = "reused venv" if d.get("venv_reused") else "new venv, %s packages" % d.get("packages")
            out.append(_fmt("%s: deployed %s (%s), dashboard pid %s healthy in %.1f s; %.1f s in all%s",
                            d["host"], d["stamp"], venv, d.get("pid"), d.get("healthy_in", 0), d.get("elapsed", 0),
                            "; previous %s" % d["previous"] if d.get("previous") else ""))
        elif d.get("skipped"):
            out.append(_fmt("%s: %s", d["host"], d.get("error")))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def _changes(kind: str, sign: str, some: Dict[str, Any]) -> List[str]:
    lines = [_fmt("      %s %s", sign, name) for name in some["names"]]
    if some["count"] > len(some["names"]):
        lines.append(_fmt("      %s ... and %d more %s", sign, some["count"] - len(some["names"]), kind))
    return lines


def _env_line(env: Any) -> str:
    """One line (unescaped: plan_lines escapes it as one field)."""
    if env is None:
        return ".env: not sent (no --env-file): shared/.env stays as it is"
    said = ["%s %s" % (kind, ", ".join(env[kind])) for kind in ("added", "changed", "removed") if env[kind]]
    return ".env: " + ("; ".join(said) if said else "no key would change")


def plan_lines(docs: List[Dict[str, Any]]) -> str:
    """deploy --plan: per host, what would change (names only: never a value of .env)."""
    out: List[str] = []
    for d in docs:
        if "files" not in d:
            out.extend(_failed(d))
            continue
        running = d["running"]
        now = "nothing yet (first deploy)" if d.get("first_deploy") else "%s (commit %s)" % (
            running["stamp"], (running.get("commit") or "none")[:12])
        out.append(_fmt("%s: running %s; would ship commit %s", d["host"], now,
                        (d["shipping"].get("commit") or "none")[:12]))
        files = d["files"]
        counts = ", ".join("%d %s" % (files[k]["count"], k) for k in ("added", "changed", "removed"))
        out.append("    files: %s" % counts)
        for kind, sign in (("added", "+"), ("changed", "~"), ("removed", "-")):
            out.extend(_changes(kind, sign, files[kind]))
        out.append("    " + not_shipped_line(d["shipping"].get("not_shipped") or []))
        venv = d["venv"]
        out.append(_fmt("    venv: %s", "reused venvs/%s (same requirements)" % venv["digest"] if venv["reused"]
                        else "new venvs/%s would be built (requirements changed)" % venv["digest"]))
        out.append(_fmt("    %s", _env_line(d.get("env"))))
        hooks = ["%s: %s%s" % (h["hook"], (h["run"].strip().splitlines() or [""])[0],
                               " (also on rollback)" if h["on_rollback"] else "") for h in d.get("hooks") or []]
        out.append(_fmt("    hooks: %s", "; ".join(hooks) if hooks else "none"))
        disk = d["disk"]
        out.append(_fmt("    disk: %.0f MB free in %s, about %.0f MB needed%s", disk["free"] / 2**20, disk["path"],
                        disk["needed"] / 2**20, "" if disk["fits"] else ": NOT ENOUGH"))
        check = d.get("bot")
        if check is not None:
            out.append(_fmt("    bot: %s", "REFUSED (it runs elsewhere)" if check["refused"] else "; ".join(
                check["notes"]) or "runs nowhere else: the exactly-once check passes"))
        if not d.get("ok"):
            out.extend(_failed(d))
    return "\n".join(out)


def releases_table(docs: List[Dict[str, Any]]) -> str:
    rows = []
    for d in docs:
        if not d.get("ok"):
            rows.append([d["host"], "error", None, None, d.get("error")])
        for r in d.get("releases") or []:
            rows.append([d["host"], r["stamp"], (r.get("commit") or "")[:12] or None, r.get("by"),
                         " ".join(w for w, on in (("current", r["current"]), ("FAILED", r.get("failed"))) if on)])
    return table(["HOST", "RELEASE", "COMMIT", "BY", ""], rows)


def _failed(d: Dict[str, Any]) -> List[str]:
    return ([_fmt("%s: FAILED: %s", d["host"], d.get("error"))]
            + [_fmt("    %s", line) for line in d.get("log_tail") or []])


def rollback_lines(docs: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for d in docs:
        if d.get("ok"):
            out.append(_fmt("%s: now on %s (was %s), dashboard pid %s", d["host"], d["stamp"], d["previous"], d["pid"]))
            if d.get("data_snapshot"):
                out.append(_fmt("%s: the bot's data as it was before %s was deployed: snapshot %s (invoke restore "
                                "--host %s --from %s)", d["host"], d["previous"], d["data_snapshot"], d["host"],
                                d["data_snapshot"]))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def autostart_lines(docs: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for d in docs:
        if d.get("ok"):
            out.append(_fmt("%s: %s %s", d["host"], d["action"], d["path"]))
            out.extend(_fmt("    note: %s", note) for note in d.get("notes") or [])
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def fleet_line(hosts: int, url: str, opener: str) -> str:
    """invoke fleet's first line: where the page is, and the private file that signs the browser in."""
    return ("fleet: %d hosts, page at %s   (Ctrl+C stops); sign in by opening %s (private, mode 600: the "
            "one-time token is never on a command line)" % (hosts, url, opener))
