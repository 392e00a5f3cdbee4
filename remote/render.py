"""Tables and JSON for the terminal. The only module of remote/ that makes text for people."""

from __future__ import annotations

import json
import re
import time
from typing import IO, Any, Dict, Iterable, List, Sequence

#: what a remote string must not bring to a terminal: C0 and C1 controls (escape sequences start with
#: one), and the invisible marks that reorder or hide text
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def for_terminal(text: str) -> str:
    """``text`` with every control character but newline and tab made visible as '?'."""
    return _CONTROL.sub("?", text)


class TerminalStream:
    """An out_stream that passes a host's output on with control characters made harmless."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: str) -> None:
        self.stream.write(for_terminal(data))

    def flush(self) -> None:
        self.stream.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [["-" if v is None or v == "" else for_terminal(str(v)).replace("\n", "?").replace("\t", " ")
             for v in row] for row in rows]
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
            out.append("%s: unreachable or failed: %s" % (d["host"], d.get("error")))
            continue
        if d.get("route"):
            out.append("%s: via %s" % (d["host"], " -> ".join(d["route"])))
        works = [m["method"] + ("" if m["owner"] else " (no owner)") for m in d["methods"] if m["ok"]]
        broken = ["%s (%s)" % (m["method"], m["detail"]) for m in d["methods"] if not m["ok"]]
        disk = d.get("disk_free")
        out.append("\n".join([
            "%s:" % d["host"],
            "  reachable   yes%s%s" % (", auth ok" if d.get("auth") else " (local)",
                                    ", via %s" % " -> ".join(d["route"]) if d.get("route") else ""),
            "  platform    %s  (%s, user %s)" % (d["platform"], d["uname"], d["user"]),
            "  python      %s  %s" % (d["python"], d["python_path"]),
            "  port tools  %s" % (", ".join(works) or "none"),
            "  not usable  %s" % (", ".join(broken) or "-"),
            "  app_dir     %s  (%s, %s)" % (
                d["app_dir"], "exists" if d["app_dir_exists"] else "not created yet",
                "writable" if d["app_dir_writable"] else "NOT writable"),
            "  disk free   %s" % ("%.1f GiB" % (disk / 2**30) if disk is not None else "unknown"),
            "  autostart   %s" % (", ".join(d.get("autostart") or []) or "not installed (invoke autostart)"),
        ] + _android(d.get("android")) + (["  warning     %s" % d["warning"]] if d.get("warning") else [])))
    return "\n".join(out)


def _notes(d: Dict[str, Any]) -> List[str]:
    """A host's loud notes (a --takeover that mattered) under its line."""
    return ["    " + note for note in d.get("notes") or []]


def _android(info: Any) -> List[str]:
    if not info:
        return []
    return (["  wake lock   %s" % info.get("wake_lock"), "  phantom     %s" % info.get("phantom_killer")]
            + ["  note        %s" % note for note in info.get("notes") or []])


def restart_lines(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        out.extend(_notes(d))
        if d.get("ok"):
            if d.get("action", "").startswith("stopped") or d.get("action") == "not running":
                out.append("%s: %s" % (d["host"], d["action"]))
            elif d.get("pid") and d.get("url"):
                note = "" if d["action"] == "restarted" else " [%s]" % d["action"]
                out.append("%s: dashboard up at %s (pid %s, %.1f s)%s" % (d["host"], d["url"], d["pid"],
                                                                         d.get("elapsed", 0), note))
            else:
                out.append("%s: %s" % (d["host"], d.get("action", "ok")))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def _uptime(svc: Dict[str, Any], now: float) -> str:
    if svc.get("state") not in ("running", "orphaned") or not svc.get("started_at"):
        return "-"
    seconds = int(now - svc["started_at"])
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60) if seconds >= 3600 else "%dm%02ds" % divmod(seconds, 60)


def _supervisor_row(d: Dict[str, Any]) -> List[Any]:
    sup = d.get("supervisor") or {}
    state = sup.get("state") or ("running" if sup.get("running") else "stopped")
    when = None
    if state == "dead" and sup.get("last_seen"):
        when = "dead since %s" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sup["last_seen"]))
    return [d["host"], "supervisor", state, sup.get("pid") or sup.get("last_pid"),
            _uptime({"state": state, "started_at": sup.get("started_at")}, d.get("now", 0)), None, None, None, when]


def _bot_detail(svc: Dict[str, Any]) -> str:
    """What the bot said (STATUS=), or why it does not run, and its shards if it has several."""
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
        services = d.get("services") or {}
        rows.append(_supervisor_row(d))
        for name, svc in services.items():
            bot = name == "bot"
            rows.append([d["host"], name, svc.get("state"), svc.get("pid"), _uptime(svc, d.get("now", 0)),
                         svc.get("restarts"), svc.get("last_exit"), svc.get("bot_id") if bot else None,
                         _bot_detail(svc) if bot else None])
            if svc.get("state") == "failed" and svc.get("last_error"):
                notes.append("%s %s failed; last lines:" % (d["host"], name))
                notes.extend("    " + line for line in svc["last_error"])
    headers = ["HOST", "SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "BOT-ID", "DETAIL"]
    return "\n".join([table(headers, rows)] + notes)


def dev_stack_note(host: Any) -> str:
    """Said before a task without --host acts on `invoke dev`'s stack rather than the inventory's local host."""
    return ("this machine: acting on the running dev stack of invoke dev (app dir %s); --host local is "
            "the inventory's local host" % host.app_dir)


def termux_setup(lines: List[str]) -> str:
    """add-host --termux: the phone's one-time setup, indented to be pasted."""
    return "Once, on the phone, in Termux (paste these):\n" + "\n".join("    " + line for line in lines)


def not_reachable(name: str, problem: Any, values: Dict[str, Any]) -> str:
    """add-host of a host that is down: written, but its key is not checked yet; how to do that later."""
    return for_terminal("warning: %s is not reachable yet: %s. Once it is up, run invoke add-host %s "
                        "--hostname %s%s again to check and trust its key" % (
                            name, problem, name, values["hostname"],
                            " --port %s" % values["port"] if "port" in values else ""))


def packed_line(package: Any, wheels: bool) -> str:
    """deploy: one package made (one per bot source), then what it left out."""
    packing = "packing: %.1f MB%s%s" % (package.size / 2**20, ", commit %s" % package.commit[:12] if package.commit
                                        else "", ", with wheels" if wheels else "")
    return packing + "\n" + not_shipped_line(package.not_shipped)


def not_shipped_line(names: List[str], width: int = 200) -> str:
    """deploy and deploy --plan: what packing left out because it may hold secrets, on one line of about
    ``width`` characters whatever the number (names only: a file's contents are never read for this)."""
    shown: List[str] = []
    for name in names:
        text = _short(for_terminal(name).replace("\n", "?").replace("\t", " "))
        if shown and sum(len(s) + 2 for s in shown) + len(text) > width:
            break
        shown.append(text)
    more = ", ... and %d more" % (len(names) - len(shown)) if len(names) > len(shown) else ""
    return "skipped %d file%s that may hold secrets%s" % (len(names), "" if len(names) == 1 else "s",
                                                          ": " + ", ".join(shown) + more if names else "")


def batch_line(number: int, total: int, hosts: List[Any]) -> str:
    """deploy --serial: a batch starts."""
    return "batch %d of %d: %s" % (number, total, ", ".join(h.name for h in hosts))


def failover_line(step: Dict[str, Any]) -> str:
    line = "%s: %s" % (step["host"], step["step"])
    return "\n".join([line] + ["    " + text for text in step.get("log_tail") or []])


def deploy_lines(docs: List[Dict[str, Any]]) -> str:
    out = []
    for d in docs:
        out.extend(_notes(d))
        if d.get("ok"):
            venv = "reused venv" if d.get("venv_reused") else "new venv, %s packages" % d.get("packages")
            out.append("%s: deployed %s (%s), dashboard pid %s healthy in %.1f s; %.1f s in all%s" % (
                d["host"], d["stamp"], venv, d.get("pid"), d.get("healthy_in", 0), d.get("elapsed", 0),
                "; previous %s" % d["previous"] if d.get("previous") else ""))
        elif d.get("skipped"):
            out.append("%s: %s" % (d["host"], d.get("error")))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def _changes(kind: str, sign: str, some: Dict[str, Any]) -> List[str]:
    lines = ["      %s %s" % (sign, name) for name in some["names"]]
    if some["count"] > len(some["names"]):
        lines.append("      %s ... and %d more %s" % (sign, some["count"] - len(some["names"]), kind))
    return lines


def _env_line(env: Any) -> str:
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
        out.append("%s: running %s; would ship commit %s" % (d["host"], now,
                                                               (d["shipping"].get("commit") or "none")[:12]))
        files = d["files"]
        counts = ", ".join("%d %s" % (files[k]["count"], k) for k in ("added", "changed", "removed"))
        out.append("    files: %s" % counts)
        for kind, sign in (("added", "+"), ("changed", "~"), ("removed", "-")):
            out.extend(_changes(kind, sign, files[kind]))
        out.append("    " + not_shipped_line(d["shipping"].get("not_shipped") or []))
        venv = d["venv"]
        out.append("    venv: %s" % ("reused venvs/%s (same requirements)" % venv["digest"] if venv["reused"]
                                     else "new venvs/%s would be built (requirements changed)" % venv["digest"]))
        out.append("    " + _env_line(d.get("env")))
        hooks = ["%s: %s%s" % (h["hook"], h["run"].strip().splitlines()[0], " (also on rollback)" if h["on_rollback"]
                                else "") for h in d.get("hooks") or []]
        out.append("    hooks: %s" % ("; ".join(hooks) if hooks else "none"))
        disk = d["disk"]
        out.append("    disk: %.0f MB free in %s, about %.0f MB needed%s" % (
            disk["free"] / 2**20, disk["path"], disk["needed"] / 2**20, "" if disk["fits"] else ": NOT ENOUGH"))
        check = d.get("bot")
        if check is not None:
            out.append("    bot: %s" % ("REFUSED (it runs elsewhere)" if check["refused"] else "; ".join(
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
    return ["%s: FAILED: %s" % (d["host"], d.get("error"))] + ["    " + line for line in d.get("log_tail") or []]


def rollback_lines(docs: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for d in docs:
        if d.get("ok"):
            out.append("%s: now on %s (was %s), dashboard pid %s" % (d["host"], d["stamp"], d["previous"], d["pid"]))
        else:
            out.extend(_failed(d))
    return "\n".join(out)


def autostart_lines(docs: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for d in docs:
        if d.get("ok"):
            out.append("%s: %s %s" % (d["host"], d["action"], d["path"]))
            out.extend("    note: " + note for note in d.get("notes") or [])
        else:
            out.extend(_failed(d))
    return "\n".join(out)
