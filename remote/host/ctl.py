"""`python -S -m remote.host.ctl COMMAND`: the one entry the operator runs on a host (and locally).

Thin on purpose: it reads the request (wire.py), checks the command's options against COMMANDS,
calls the library that does the work (stack, release, autostart) and prints its answer. Run from the
host's current release (or a release being installed, or the checkout for a local dev host), so a
whole restart or deploy is one exec round trip and the same code serves every transport.
"""

import os
import sys

from remote.host.common import names, wire
from remote.host.common.errors import BadRequest, Failure, UnknownCommand
from remote.host.common.files import FreshRedactor, Layout, current_stamp, log_lines
from remote.host.common.logtail import LogFollower
from remote.host.common.paths import inside, plain, shared_paths_problem, stamp_problem
from remote.host.releases import hooks

_LOCK = {"timeout": (float, 20.0), "lock_timeout": (float, 120.0), "by": (str, None)}
#: what the other hosts run, gathered by the operator for the exactly-once check (guard.check)
_CHECKS = {"checks": (dict, None)}
#: deploy hooks (hooks.py): {name: {run, on_rollback}} and their time limit
_HOOKS = {"hooks": (dict, None), "hook_timeout": (float, hooks.DEFAULT_TIMEOUT)}
_START = dict(_CHECKS, force=(bool, False), grace=(float, 3.0), timeout=(float, 20.0))
#: command -> its options: name -> (type, default). Settings go to the commands in SETTINGS_COMMANDS.
COMMANDS = {
    "restart": dict(_START, service=(str, "all")),
    "start": dict(_START, service=(str, "all"), reset_budget=(bool, False)),
    "stop": {"service": (str, "all"), "timeout": (float, 20.0)},
    "status": {"token_env": (str, None)},
    "logs": {"service": (str, "dashboard"), "lines": (int, 50), "follow": (bool, False)},
    "watch": {"since": (float, None), "token_env": (str, None)},
    "dev": dict(_CHECKS, force=(bool, False), grace=(float, 3.0)),
    "deploy": dict(_LOCK, **_CHECKS, **_HOOKS, stamp=(str, None), commit=(str, None), keep=(int, 5), shared=(list, []),
                   env_incoming=(str, None)),
    "rollback": dict(_LOCK, **_CHECKS, **_HOOKS, to=(str, None), force=(bool, False)),
    "releases": {},
    "ping": {},
    "autostart": {"remove": (bool, False)},
    "role": dict(_CHECKS, role=(str, None), settle=(float, 5.0), timeout=(float, 20.0)),
    #: the bot's epoch as the operator knows it (roles.settle): kept, compared, or a reason to stand down
    "epoch": {"record": (dict, None), "expect": (int, None), "timeout": (float, 20.0)},
    #: the bot's data (remote/host/data): a snapshot kept here or streamed on stdout, a restore from a
    #: kept one or from stdin, the list of what is kept, one kept archive on stdout
    "snapshot": {"reason": (str, "manual"), "stream": (bool, False), "level": (int, None)},
    "restore": {"stamp": (str, None), "replica_of": (str, None), "stream": (bool, False), "force": (bool, False),
                "reason": (str, "before-restore"), "lock_timeout": (float, 120.0), "by": (str, None)},
    "backups": {},
    "backup-read": {"stamp": (str, None), "replica_of": (str, None)},
    #: shared/.env: its key names (no set/unset), or a change of some keys (their values on stdin, in the request)
    "env": dict(_CHECKS, set=(dict, None), unset=(list, None), restart=(bool, True), lock_timeout=(float, 120.0),
                timeout=(float, 20.0), by=(str, None)),
    #: the bot's etcd lease, moved here by failover --to (leasectl.claim)
    "lease": {"from_host": (str, None), "record": (dict, None), "timeout": (float, 20.0)},
    #: a one-off command in the current release (oneoff.py): its words exec'd as given, or with sh -c
    "run": {"argv": (list, None), "shell": (bool, False), "timeout": (float, 300.0), "lock": (bool, True),
            "lock_timeout": (float, 120.0), "by": (str, None)},
    "replica-put": {"stamp": (str, None), "replica_of": (str, None), "archive_sha256": (str, None), "keep": (int, 2)},
}
SETTINGS_COMMANDS = ("restart", "start", "dev", "deploy", "rollback", "role", "epoch", "autostart", "snapshot",
                     "restore", "env", "lease")
#: commands whose stdout carries an archive's bytes: their answer goes to stderr's last line
BINARY_OUT = ("snapshot", "backup-read")
SERVICES = names.TARGETS


def options(command, given):
    """The command's options with defaults filled in; BadRequest for an unknown or ill-typed one."""
    spec = COMMANDS[command]
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise BadRequest("%s takes no option %s (it takes: %s)" % (command, ", ".join(unknown),
                                                                  ", ".join(sorted(spec)) or "none"))
    out = {}
    for name, (kind, default) in spec.items():
        value = given.get(name, default)
        if value is not None and kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and not isinstance(value, kind):
            raise BadRequest("%s: option %s must be %s, not %r" % (command, name, kind.__name__, value))
        out[name] = value
    known = names.LOGS if command == "logs" else SERVICES
    if "service" in out and out["service"] not in known:
        raise BadRequest("unknown service %r (known: %s)" % (out["service"], ", ".join(known)))
    if command == "deploy" and not out["stamp"]:
        raise BadRequest("deploy needs a stamp")
    _check_names(command, out)
    if "hooks" in out:
        out["hooks"] = hooks.normalize(out["hooks"])
        if out["hook_timeout"] <= 0:
            raise BadRequest("hook_timeout must be greater than 0, not %r" % out["hook_timeout"])
    if command == "role" and out["role"] not in ("active", "standby"):
        raise BadRequest("role must be active or standby, not %r" % out["role"])
    return out


def _check_names(command, out):
    """The paths a deploy or rollback will act on, by their text, whatever the operator sent: a
    release name only, shared_paths inside shared/ (release.py checks them again against the links
    on disk before anything is removed or linked)."""
    if command == "deploy" and stamp_problem(out["stamp"]):
        raise BadRequest("deploy: stamp %s" % stamp_problem(out["stamp"]))
    if command == "deploy" and shared_paths_problem(out["shared"]):
        raise BadRequest("deploy: shared_paths: %s; nothing was changed" % shared_paths_problem(out["shared"]))
    if command == "rollback" and out["to"] is not None and stamp_problem(out["to"]):
        raise BadRequest("rollback: to: %s; invoke releases lists them" % stamp_problem(out["to"]))


def dispatch(command, app_dir, opts, settings, stdin):
    """The command's library, imported here: each ctl call pays only for what it runs (a host's
    watch, status or logs start in half the time without the deploy and autostart code)."""
    from remote.host.supervision import stack

    if command in ("restart", "start"):
        return stack.restart(app_dir, settings, opts["service"], opts["force"], opts["grace"], opts["timeout"],
                             start_only=command == "start", checks=opts["checks"],
                             reset_budget=opts.get("reset_budget", False))
    if command == "stop":
        return stack.stop(app_dir, opts["service"], opts["timeout"])
    if command == "status":
        return stack.status(app_dir, opts["token_env"])
    if command == "lease":
        from remote.host.supervision import leasectl

        return leasectl.claim(Layout(app_dir), stack.stack_config(app_dir, settings), opts["from_host"],
                              opts["record"], opts["timeout"])
    if command == "ping":  # what this host speaks (the answer carries its protocols) and runs
        return {"ok": True, "release": current_stamp(Layout(app_dir))}
    if command == "role":
        from remote.host.supervision import roles

        return roles.set_role(app_dir, settings, opts["role"], opts["checks"], opts["settle"], opts["timeout"])
    if command == "epoch":
        from remote.host.supervision import roles

        return roles.settle(app_dir, settings, opts["record"], opts["expect"], opts["timeout"])
    if command in ("deploy", "rollback", "releases"):
        return _release(command, app_dir, opts, settings)
    if command == "env":
        from remote.host.releases import envfile

        if opts["set"] is None and opts["unset"] is None:
            return envfile.listing(app_dir)
        return envfile.change(app_dir, settings, opts["set"] or {}, opts["unset"] or [], opts["restart"],
                              opts["checks"], opts["lock_timeout"], opts["timeout"], opts["by"])
    if command in ("snapshot", "restore", "backups", "backup-read", "replica-put"):
        return _data(command, app_dir, opts, settings, stdin)
    if command == "run":
        from remote.host.releases import oneoff

        return oneoff.run(app_dir, opts["argv"], opts["shell"], opts["timeout"], opts["lock"], opts["lock_timeout"],
                          opts["by"], stdin)
    if command == "autostart":
        from remote.host.common import epochs
        from remote.host.releases import autostart

        epochs.write_boot_wait(Layout(app_dir), settings.get("boot_wait"))
        return autostart.autostart(app_dir, opts["remove"])
    if command == "logs":
        return logs(app_dir, opts["service"], opts["lines"], opts["follow"], stdin)
    if command == "watch":  # JSON lines until the operator goes away
        from remote.host.supervision import watch

        return watch.watch(app_dir, opts["since"], stdin, opts["token_env"])
    return stack.dev(app_dir, settings, opts["force"], opts["grace"], opts["checks"])  # execs the supervisor


def binary_stdout():
    """The archive's way out: fd 1 for bytes only, and everything printed after (the answer, a hook's
    words) to stderr, where the operator reads the answer as its last line."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return out


def _data(command, app_dir, opts, settings, stdin):
    from remote.host.data import ops

    if command == "backups":
        return ops.listing(app_dir)
    if command == "replica-put":
        return ops.replica_put(app_dir, stdin, opts["replica_of"], opts["stamp"], opts["archive_sha256"], opts["keep"])
    if command == "snapshot":
        if not opts["stream"]:
            return ops.take(app_dir, settings, opts["reason"])
        with binary_stdout() as out:
            return ops.take(app_dir, settings, opts["reason"], out=out, level=opts["level"])
    if command == "backup-read":
        path, doc = ops.archive(app_dir, opts["stamp"], opts["replica_of"])
        with ops.verified(path, doc) as source, binary_stdout() as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
        return {"ok": True, "snapshot": ops._short(doc)}
    args = (opts["force"], opts["reason"], opts["lock_timeout"], opts["by"])
    if opts["stream"]:
        return ops.restore_data(app_dir, settings, stdin, *args)
    path, doc = ops.archive(app_dir, opts["stamp"], opts["replica_of"])
    with ops.verified(path, doc) as source:
        return ops.restore_data(app_dir, settings, source, *args)


def _release(command, app_dir, opts, settings):
    from remote.host.releases import release

    if command == "deploy":
        return release.deploy(app_dir, settings, opts["stamp"], opts["commit"], opts["keep"], opts["shared"],
                              opts["env_incoming"], opts["timeout"], opts["lock_timeout"], opts["by"], opts["checks"],
                              opts["hooks"], opts["hook_timeout"])
    if command == "rollback":
        return release.rollback(app_dir, settings, opts["to"], opts["timeout"], opts["lock_timeout"], opts["by"],
                                opts["force"], opts["checks"], opts["hooks"], opts["hook_timeout"])
    return release.list_releases(app_dir)


def logs(app_dir, service, lines, follow, stdin):
    """Text, not JSON: the last lines, then (--follow) new ones until the operator goes away."""
    paths = Layout(app_dir)
    follower = LogFollower(paths.log(service)) if follow else None  # first: a line written meanwhile is its to show
    for line in log_lines(paths, service, lines, follower.offset if follower else None):
        print(line)
    sys.stdout.flush()
    if follower:
        redact = FreshRedactor(paths)
        while not stdin.closed(0.25):
            for line in redact(follower.poll()):
                print(line, flush=True)
    return None


def read(argv, stdin):
    """(command, request): the command named on the command line and the request that goes with it.
    The request is read first, so that even "unknown command" is answered in the agreed protocol."""
    if argv[1:2] == ["--request"] and len(argv) == 3:
        request = wire.read_request_file(argv[2])
        _remove_request_file(argv[2], request.get("app_dir"))
    elif len(argv) == 1:
        request = stdin.request()
    else:
        raise BadRequest("usage: python -m remote.host.ctl COMMAND [--request FILE] (the request on stdin)")
    if argv[0] not in COMMANDS:
        raise UnknownCommand("unknown command %r: this release speaks protocol %s and knows %s" % (
            argv[0], wire.span(wire.OLDEST, wire.PROTOCOL), ", ".join(COMMANDS)))
    if request.get("command", argv[0]) != argv[0]:
        raise BadRequest("the request is for %r, the command line says %r" % (request.get("command"), argv[0]))
    if not isinstance(request.get("app_dir"), str) or not request["app_dir"]:
        raise BadRequest("the request names no app_dir")
    return argv[0], request


def _remove_request_file(path, app_dir):
    """The request file is removed once read (it holds settings) when it lies in app_dir/run/, where
    `invoke dev` writes it; a file anywhere else is left alone: no command line deletes outside app_dir."""
    if not isinstance(app_dir, str) or not app_dir:
        return
    run = Layout(app_dir).run
    if plain(path) and os.path.isfile(path) and not os.path.islink(path) and inside(run, os.path.dirname(path) or "."):
        try:
            os.unlink(path)
        except OSError:
            pass


def main(argv=None):
    os.umask(0o077)  # state, logs and settings (a webhook URL) are this user's alone
    stdin = wire.Stdin()
    try:
        command, request = read(sys.argv[1:] if argv is None else argv, stdin)
        opts = options(command, request.get("options") or {})
        settings = request.get("settings") if command in SETTINGS_COMMANDS else None
        out = dispatch(command, request["app_dir"], opts, settings or {}, stdin)
    except Failure as exc:  # BadRequest and ProtocolMismatch too, each with its own exit status
        return wire.answer(wire.failure(exc), exc.exit_code)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    except Exception as exc:  # a bind error, a full disk: one line for the operator, never a traceback
        return wire.answer({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "kind": "failed",
                                "log_tail": []})
    return 0 if out is None else wire.answer(out)


if __name__ == "__main__":
    sys.exit(main())
