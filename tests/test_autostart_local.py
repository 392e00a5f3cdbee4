"""Boot scripts and units written with hostile values: an app_dir is data, never shell or unit syntax."""

import json
import os
import subprocess

from dashproc import ROOT, ctl_run

HOSTILE = "sulfur $(touch PWNED) 'q' \"d\" `touch PWNED2` %h $HOME"


def prepare(tmp_path):
    app = tmp_path / HOSTILE
    (app / "run").mkdir(parents=True)
    (app / "run" / "supervisor.json").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    return app, home


def test_the_termux_boot_script_runs_nothing_from_app_dir(tmp_path):
    app, home = prepare(tmp_path)
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    os.symlink("/bin/sh", prefix / "bin" / "sh")
    env = dict(os.environ, HOME=str(home), TERMUX_VERSION="0.118", PREFIX=str(prefix))
    out = ctl_run(ROOT, "autostart", app, env=env)
    doc = json.loads(out.stdout)
    assert doc["ok"], doc
    script = home / ".termux" / "boot" / "sulfur-ops"
    assert doc["path"] == str(script) and os.access(script, os.X_OK)
    run = subprocess.run([str(script)], cwd=tmp_path, env={"PATH": str(prefix / "bin"), "HOME": str(home)},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1  # no release there: `cd` fails and the script stops
    assert not list(tmp_path.rglob("PWNED*")), "the boot script ran a command from app_dir"


def test_the_systemd_unit_escapes_specifiers_and_variables(tmp_path):
    app, home = prepare(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("TERMUX_VERSION", "PREFIX")}
    doc = json.loads(ctl_run(ROOT, "autostart", app, env=dict(env, HOME=str(home))).stdout)
    assert doc["ok"], doc
    unit = (home / ".config" / "systemd" / "user" / "sulfur-ops.service").read_text()
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")][0]
    assert "%%h $$HOME" in exec_start and "%h" not in exec_start.replace("%%h", "")
    assert '\\"d\\"' in exec_start and exec_start.count("\n") == 0


def test_a_newline_in_app_dir_never_reaches_a_unit(tmp_path):
    app, home = prepare(tmp_path)
    evil = tmp_path / "x\nExecStartPre=/bin/touch /tmp/PWNED"
    (evil / "run").mkdir(parents=True)
    (evil / "run" / "supervisor.json").write_text("{}")
    out = ctl_run(ROOT, "autostart", evil, env=dict(os.environ, HOME=str(home)))
    doc = json.loads(out.stdout)
    assert not doc["ok"] and "has control characters" in doc["error"]
    assert not (home / ".config" / "systemd" / "user" / "sulfur-ops.service").exists()


def test_removing_autostart_removes_only_the_file_written_for_this_app_dir(tmp_path):
    """The unit and the boot script are the only files outside app_dir a host task removes, and only
    the ones sulfur-ops wrote for this app_dir: another stack's unit, someone else's boot script and a
    link to a file of theirs stay."""
    app, home = prepare(tmp_path)
    other = tmp_path / "other"
    (other / "run").mkdir(parents=True)
    (other / "run" / "supervisor.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if k not in ("TERMUX_VERSION", "PREFIX")}
    env["HOME"] = str(home)
    unit = home / ".config" / "systemd" / "user" / "sulfur-ops.service"
    boot = home / ".termux" / "boot" / "sulfur-ops"
    boot.parent.mkdir(parents=True)
    boot.write_text("#!/bin/sh\necho someone else's boot script\n")
    assert json.loads(ctl_run(ROOT, "autostart", other, env=env).stdout)["ok"]
    written = unit.read_text()

    doc = json.loads(ctl_run(ROOT, "autostart", app, {"remove": True}, env=env).stdout)
    assert doc["ok"] and unit.read_text() == written and boot.exists()
    assert "left %s in place: sulfur-ops did not write it for %s" % (unit, app) in doc["notes"]
    assert "left %s in place: sulfur-ops did not write it for %s" % (boot, app) in doc["notes"]

    theirs = tmp_path / "theirs.service"
    theirs.write_text(written)  # the very text, behind a link: the link is not what sulfur-ops wrote
    unit.unlink()
    unit.symlink_to(theirs)
    assert json.loads(ctl_run(ROOT, "autostart", other, {"remove": True}, env=env).stdout)["ok"]
    assert unit.is_symlink() and theirs.read_text() == written
    unit.unlink()

    assert json.loads(ctl_run(ROOT, "autostart", other, env=env).stdout)["ok"]
    doc = json.loads(ctl_run(ROOT, "autostart", other, {"remove": True}, env=env).stdout)
    assert doc["ok"] and not unit.exists() and boot.exists()  # its own unit goes; the boot script stays
