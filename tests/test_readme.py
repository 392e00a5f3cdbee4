"""The newcomer's check: the README's "Getting started" commands that need no real host, run as they
are written there (`make dev`, then tasks in a second terminal), and their output compared with what
the README shows (same tables, same columns, same rows; pids, times and ports aside)."""

import getpass
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

from dashproc import ROOT

NEEDS_A_HOST = ("add-host", "--all", "deploy", "ssh ", "doctor")
KEPT_COLUMNS = ("HOST", "SERVICE", "STATE", "PORT", "COMMAND")


def getting_started():
    """[(command, [the output lines shown under it])] of the section's console blocks."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Getting started\n", 1)[1].split("\n## ", 1)[0]
    steps = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def normal(lines):
    """Tables: the kept columns of each row (found by the header's positions); other lines: digits
    as 0. Rows sorted: the order of a port's holders is the port tool's."""
    if not lines:
        return []
    header = lines[0]
    if header.split() and all(word.isupper() or "-" in word for word in header.split()):
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        names = header.split()
        bounds = list(zip(names, starts, starts[1:] + [None]))
        rows = [" | ".join(re.sub(r"\d+", "0", line[a:b].strip()) for name, a, b in bounds if name in KEPT_COLUMNS)
                for line in lines[1:]]
        return [" ".join(names)] + sorted(rows)
    return [re.sub(r"\d+", "0", line.replace(getpass.getuser(), "you")) for line in lines]


def wait_health(port, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("make dev: no dashboard on port %d" % port)


def test_the_getting_started_commands_that_need_no_host_do_what_the_readme_shows(tmp_path, port):
    steps = getting_started()
    runnable = [(command, shown) for command, shown in steps if not any(w in command for w in NEEDS_A_HOST)
                and command.startswith(("make dev", ".venv/bin/invoke"))]
    assert [c for c, _ in runnable] == ["make dev", ".venv/bin/invoke status", ".venv/bin/invoke port-status",
                                        ".venv/bin/invoke restart"]
    inventory = tmp_path / "inventory.yml"  # the shipped inventory, on a free port and in a scratch app dir
    text = (ROOT / "inventory.yml").read_text().replace("dashboard_port: 5000", "dashboard_port: %d" % port)
    inventory.write_text(text.replace("    connection: local\n", "    connection: local\n    app_dir: %s\n"
                                      % (tmp_path / "local")))
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), DASHBOARD_APP_DIR=str(tmp_path / "app"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    dev = subprocess.Popen(runnable[0][0].split(), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(dev.stdout), daemon=True)
    reader.start()
    try:
        wait_health(port)
        for command, shown in runnable[1:]:
            out = subprocess.run(command.split(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, (command, out.stdout, out.stderr)
            assert "acting on the running dev stack of invoke dev" in out.stderr
            real = out.stdout.strip().splitlines()
            assert normal(real) == normal(shown), command
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl+C in make dev's terminal
        code = dev.wait(timeout=60)
        reader.join(timeout=10)
    # make itself reports the interrupt (status 2 in a shell, -SIGINT here); what it ran stopped cleanly
    assert code in (2, -signal.SIGINT), "".join(seen)
    assert "Traceback" not in "".join(seen) and any("stopped" in line for line in seen if "supervisor" in line)
    shown = [line for line in runnable[0][1] if line.startswith("supervisor |")]
    real = normal([line.rstrip("\n") for line in seen])
    for line in normal(shown):  # each supervisor line the README shows was printed, in that form
        assert any(re.sub(r"\[\d+\]", "", line) in re.sub(r"\[\d+\]", "", r) for r in real), line


def test_the_reference_documents_every_inventory_key_with_its_default():
    from remote.inventory import HOST_ONLY, SETTINGS

    text = (ROOT / "README.md").read_text()
    block = text.split("\n## Inventory\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    documented = dict(re.findall(r"^  ([a-z_]+): (\S+)", block, re.M))
    missing = sorted(set(SETTINGS) - set(documented))
    assert not missing, "README's Inventory block lacks %s" % ", ".join(missing)
    for key, (_, default, _) in SETTINGS.items():
        shown = documented[key]
        types = SETTINGS[key][0]
        if hasattr(types, "parse"):  # a duration or a size: shown as a user writes it (6h, 1GiB)
            assert types.parse(shown, allow_off=types.allow_off) == default, (key, shown, default)
        elif default is not None and not isinstance(default, bool) and key not in ("user", "python"):
            assert shown == str(default), (key, shown, default)
    assert all(word in text for word in HOST_ONLY)
