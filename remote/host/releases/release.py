"""Host side of releases: install, switch, deploy (verify, roll back), rollback, list, prune.

A deploy is one ctl command holding the host's operator lock
from the leftovers' cleanup to the health check, so two deploys never interleave. What a user keeps
is never touched: shared/ (.env, data) is linked into releases, not copied; `current` and the
previous release are never pruned; a failed release is kept, and named, for inspection.
"""

import calendar
import os
import shutil
import subprocess
import sys
import time

from remote.host import CODE_DIR
from remote.host.common.errors import Failure
from remote.host.common.files import Layout, current_stamp, read_json, redactor, write_json
from remote.host.common.paths import STAMP, inside, is_stamp, plain, remove, shared_problem, stamp_problem
from remote.host.common.system import open_paths
from remote.host.data import ops, snapshot, store  # at the top: the release this ctl runs from is renamed mid-deploy
from remote.host.releases import hooks, manifest
from remote.host.supervision import guard
from remote.host.supervision.inbox import ask
from remote.host.supervision.stack import operator_lock, restart_locked, service_state, stack_config, wait_bot_up

BOT_GRACE = 3.0  # a bot that never said READY=1, still running this long after the switch, counts as healthy
RUN_TIMEOUT = 900


def progress(message):
    """A line the operator shows as this host's progress (the last line of output is the JSON result).

    Never raises: an operator gone away (a cut link, Ctrl+C twice) must not stop a deploy half way;
    it goes on to its end, switched and healthy or rolled back, under the host lock."""
    try:
        print("progress: " + message, flush=True)
    except (OSError, ValueError):
        pass


def stamps(paths):
    try:
        return sorted(n for n in os.listdir(paths.releases) if is_stamp(n))
    except OSError:
        return []


# ------------------------------------------------------------------------------------ leftovers


def in_use():
    """Files our processes hold open and directories they work in: an upload still in flight, or
    another deploy's unpacked release waiting for the lock, is one of them."""
    return {target for _, target in open_paths(with_cwd=True)}


def clean_leftovers(paths, keep):
    """Half releases of interrupted deploys: .partial-* dirs and .incoming-* uploads that no process
    holds open or works in any more (a cut SSH connection, a killed deploy)."""
    base, removed = paths.releases, []
    busy = in_use()
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        path = os.path.realpath(os.path.join(base, name))
        if path == os.path.realpath(keep) or not name.startswith((".partial-", ".incoming-")):
            continue
        if any(b == path or b.startswith(path + os.sep) for b in busy):  # open, or a file in it is
            continue
        remove(base, os.path.join(base, name))  # the entry itself: a link goes, never what it points at
        removed.append(name)
    return removed


def _digest(paths, python):
    """venvs/<hash>: the requirements' text and the interpreter; same hash, same environment."""
    texts = []
    for path in paths:
        with open(path, "rb") as handle:
            texts.append(handle.read())
    return manifest.venv_digest(texts, python, sys.version)


def _pip_failure(out):
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    hint = ""
    if any("no matching distribution" in line.lower() or "could not find a version" in line.lower()
           for line in lines):
        hint = (" (no package or wheel fits this host: on Termux install compiled ones with pkg, e.g. "
                "pkg install python-cryptography; a host without internet needs deploy --wheels)")
    return "pip failed%s: %s" % (hint, " | ".join(lines[-3:]))


def environment(paths, release):
    """venvs/<hash>, built once per requirements and reused by every release (a rollback never builds)."""
    requirements = [os.path.join(release, "dashboard", "requirements.txt")]
    if os.path.exists(os.path.join(release, "requirements.txt")):
        requirements.append(os.path.join(release, "requirements.txt"))
    digest = _digest(requirements, sys.executable)
    venv = os.path.join(paths.venvs, digest)
    wheels = os.path.join(release, "_wheels")
    if os.path.exists(os.path.join(venv, ".complete")):
        return digest, True, 0
    remove(paths.venvs, venv, ignore_errors=True)  # half built by an interrupted deploy
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
    if out.returncode != 0:
        remove(paths.venvs, venv, ignore_errors=True)
        raise Failure("cannot create a virtual environment: %s" % (out.stderr.strip().splitlines() or ["?"])[-1])
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if os.path.isdir(wheels):
        pip += ["--no-index", "--find-links", wheels]
    for req in requirements:
        pip += ["-r", req]
    count = sum(_requirement_count(req) for req in requirements)
    progress("installing %d requirements into venvs/%s" % (count, digest))
    out = subprocess.run(pip, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if out.returncode != 0:
        remove(paths.venvs, venv, ignore_errors=True)
        raise Failure(_pip_failure(out.stdout + out.stderr))
    open(os.path.join(venv, ".complete"), "w").close()
    packages = len([n for n in os.listdir(_site_packages(venv)) if n.endswith(".dist-info")])
    return digest, False, packages


def _requirement_count(path):
    with open(path) as handle:
        return sum(1 for line in handle if line.strip() and not line.startswith("#"))


def _site_packages(venv):
    lib = os.path.join(venv, "lib")
    return os.path.join(lib, os.listdir(lib)[0], "site-packages")


def relink(link, target):
    """Point ``link`` at ``target`` atomically: a new symlink renamed over the old name."""
    tmp = "%s.tmp-%d" % (link, os.getpid())
    os.symlink(target, tmp)
    os.replace(tmp, link)


def check_shared(paths, release, shared):
    """Failure unless every shared_paths entry is a plain relative name that stays inside shared/ and
    inside the release once the links already on this host are followed: whatever the operator sent,
    checked before anything is removed or linked."""
    problem = shared_problem(paths.shared, release, shared)
    if problem:
        raise Failure("shared_paths: %s" % problem)


def install(paths, release, stamp, shared):
    """Environment, links into shared/, then the release renamed into place under a free stamp."""
    check_shared(paths, release, shared)
    if not is_stamp(stamp):
        raise Failure("deploy: stamp %r is not a release name" % (stamp,))
    digest, reused, packages = environment(paths, release)
    remove(release, os.path.join(release, "_wheels"), ignore_errors=True)
    relink(os.path.join(release, ".venv"), os.path.relpath(os.path.join(paths.venvs, digest), release))
    os.makedirs(paths.shared, mode=0o700, exist_ok=True)
    os.chmod(paths.shared, 0o700)  # .env and the bot's data: this user's alone
    store.repair(paths, shared or [])  # a restore cut short: its data linked, never hidden by a new directory
    for name in [".env"] + list(shared or []):
        target = os.path.join(paths.shared, name)
        if name != ".env":
            os.makedirs(target, exist_ok=True)
        linked = os.path.join(release, name)
        if os.path.isdir(linked) and not os.path.islink(linked):
            remove(release, linked)  # the source's copy: shared/ is what the host keeps
        os.makedirs(os.path.dirname(linked), exist_ok=True)
        relink(linked, os.path.relpath(target, os.path.dirname(linked)))
    while os.path.exists(os.path.join(paths.releases, stamp)):  # two deploys in one second
        stamp = next_stamp(stamp)
    os.rename(release, os.path.join(paths.releases, stamp))
    return {"stamp": stamp, "venv": digest, "venv_reused": reused, "packages": packages}


def next_stamp(stamp):
    """The UTC stamp one second later. timegm, not mktime: a stamp is UTC whatever the host's timezone."""
    return time.strftime(STAMP, time.gmtime(calendar.timegm(time.strptime(stamp, STAMP)) + 1))


def switch_to(paths, stamp):
    """current -> releases/<stamp>, atomically. Returns the stamp it pointed at before."""
    if not os.path.isdir(os.path.join(paths.releases, stamp)):
        raise Failure("no release %s on this host (invoke releases lists them)" % stamp)
    previous = current_stamp(paths)
    relink(paths.current, os.path.join("releases", stamp))
    return previous


def mark(paths, stamp, result, reason=None):
    """The release's own record of how its deploy went: DEPLOY.json, {"result": "ok"|"failed", ...};
    what it held already (the data's snapshot before the deploy) is kept."""
    path = os.path.join(paths.releases, stamp, "DEPLOY.json")
    write_json(path, dict(read_json(path), result=result, reason=reason,
                          at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))


def protect_data(paths, settings, stamp, shared):
    """A before-deploy snapshot of the bot's data, before any hook runs (migrations are where data
    dies), named in the new release's DEPLOY.json so that a rollback names it; None without data."""
    if not shared or not (snapshot.data_files(paths, shared) or snapshot.read_data_id(paths)):
        return None
    taken = ops.take(paths.app_dir, dict(settings, shared_paths=list(shared)), "before-deploy")["snapshot"]
    write_json(os.path.join(paths.releases, stamp, "DEPLOY.json"), {"data_snapshot": taken["stamp"]})
    progress("the bot's data kept as snapshot %s (before-deploy)" % taken["stamp"])
    return taken["stamp"]


def failed(paths, stamp):
    return read_json(os.path.join(paths.releases, stamp, "DEPLOY.json")).get("result") == "failed"


def record(paths, stamp, commit, by, result):
    """revisions.log: one line per deploy or rollback, like Capistrano's."""
    line = "%s stamp=%s commit=%s by=%s result=%s\n" % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), stamp, commit or "-", by or "-", result)
    with open(paths.revisions, "a") as handle:
        handle.write(line)


def prune(paths, keep, protect):
    """Keep the newest ``keep`` releases; failed ones go first, and never the ones in ``protect``
    (current, previous)."""
    old = [s for s in stamps(paths) if s not in protect]
    old.sort(key=lambda s: (not failed(paths, s), s))
    removed = old[:max(0, len(stamps(paths)) - keep)]
    for stamp in removed:
        remove(paths.releases, os.path.join(paths.releases, stamp), ignore_errors=True)
    used = {os.path.basename(os.path.realpath(os.path.join(paths.releases, s, ".venv"))) for s in stamps(paths)}
    venvs = paths.venvs
    for digest in os.listdir(venvs) if os.path.isdir(venvs) else []:
        if digest not in used:
            remove(venvs, os.path.join(venvs, digest), ignore_errors=True)
    return removed


# ------------------------------------------------------------------------------------ verify


def verify(paths, config, timeout):
    """Restart the stack on the new current, then the health check: dashboard and bot."""
    replaced = service_state(paths, "bot").get("pid")
    result = restart_locked(paths, config, timeout=timeout)
    if config.get("bot_command"):
        started = time.monotonic()
        wait_bot_up(paths, BOT_GRACE, timeout, config, not_pid=replaced)
        result.setdefault("timings", {})["bot"] = time.monotonic() - started
    return result


class _Steps:
    """Seconds spent in each step of a deploy, on the monotonic clock, for the answer's timings."""

    def __init__(self):
        self.timings, self.last = {}, time.monotonic()

    def done(self, name):
        now = time.monotonic()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def _unpack_time(release):
    """The unpack step's own figure, left in the release by remote.host.releases.unpack."""
    path = os.path.join(release, "_unpack.json")
    seconds = read_json(path).get("seconds")
    if os.path.exists(path):
        remove(release, path)
    return seconds


def _hook(spec, name, paths, where, timeout, env_file=None, rolling_back=False, **extra):
    """Run hook ``name`` of ``spec`` in the release directory ``where`` when it applies to this step;
    ``extra`` goes into its environment as SULFUR_<KEY> (release, previous)."""
    command = hooks.wanted(spec, name, rolling_back)
    if command:
        env = hooks.environment(paths, where, env_file, hook=name, rollback="1" if rolling_back else "0",
                                **extra)
        hooks.run(name, command, where, env, timeout, progress, redactor(paths, env_file))


def deploy(app_dir, settings, stamp, commit=None, keep=5, shared=(), env_incoming=None, timeout=20.0,
           lock_timeout=120.0, by=None, checks=None, hook_spec=None, hook_timeout=hooks.DEFAULT_TIMEOUT):
    """Install the release this ctl runs from, switch to it, verify it; roll back when it fails."""
    started = time.monotonic()
    paths = Layout(app_dir)
    env_incoming = os.path.expanduser(env_incoming) if env_incoming else None
    partial = CODE_DIR  # this ctl runs from the release it installs (unpacked by the operator's exec)
    _check_request(paths, partial, stamp, shared, env_incoming)
    paths.make()
    with operator_lock(paths, lock_timeout, "deploy %s" % stamp):
        steps = _Steps()
        unpacked = _unpack_time(partial)
        try:  # before anything changes: the bot it would start (with the .env it brings) runs elsewhere
            notes = guard.check(paths, stack_config(app_dir, settings), checks, env_incoming)
        except Failure:
            _discard(paths, partial, env_incoming)
            raise
        removed = clean_leftovers(paths, partial)
        if removed:
            progress("removed leftovers of an interrupted deploy: %s" % ", ".join(removed))
        steps.done("prepare")
        try:
            installed = install(paths, partial, stamp, shared)
        except BaseException:
            _discard(paths, partial, env_incoming)
            raise
        stamp = installed["stamp"]
        release = os.path.join(paths.releases, stamp)
        steps.done("venv")
        try:  # `current` has not moved: a failure here changes nothing the host serves
            data_snapshot = protect_data(paths, settings, stamp, shared)
            _hook(hook_spec, "before_switch", paths, release, hook_timeout, env_incoming, release=stamp,
                  previous=current_stamp(paths))
        except Failure as exc:
            _discard(paths, None, env_incoming)
            mark(paths, stamp, "failed", str(exc))
            record(paths, stamp, commit, by, "failed before the switch")
            raise Failure("release %s: %s; current is untouched (%s); the failed release is kept in releases/%s"
                          % (stamp, exc, current_stamp(paths) or "no release", stamp), exc.log_tail) from None
        steps.done("before_switch")
        env_backup = _apply_env(paths, env_incoming, stamp)
        progress("switching to %s" % stamp)
        previous = switch_to(paths, stamp)
        steps.done("switch")
        # after the switch: current/.venv exists now, even on a first deploy; it runs from current, always
        config = stack_config(app_dir, dict(settings, code_dir=paths.current, python=None))
        what = "failed its health check (%s)"
        try:
            health = verify(paths, config, timeout)
            steps.timings.update(health.pop("timings", {}))
            steps.last = time.monotonic()
            what = "%s"  # the hook's failure says which hook
            _hook(hook_spec, "after_switch", paths, release, hook_timeout, release=stamp, previous=previous)
            steps.done("after_switch")
        except BaseException as exc:  # a Failure, or anything else once current has moved: roll back
            if not isinstance(exc, Failure):
                exc = Failure("%s: %s" % (type(exc).__name__, exc))
            mark(paths, stamp, "failed", str(exc))  # before anything else: a rollback must never pick it
            rolled = _roll_back(paths, config, previous, env_backup, timeout, hook_spec, hook_timeout, stamp)
            record(paths, stamp, commit, by, "failed, " + rolled)
            raise Failure("release %s %s; %s; the failed release is kept in releases/%s"
                          % (stamp, what % exc, rolled, stamp), exc.log_tail) from None
        mark(paths, stamp, "ok")
        record(paths, stamp, commit, by, "ok")
        pruned = prune(paths, keep, {stamp, previous})
        timings = dict(steps.timings, unpack=unpacked) if unpacked is not None else steps.timings
        return dict(installed, ok=True, previous=previous, pruned=pruned, pid=health["pid"],
                    data_snapshot=data_snapshot, healthy_in=health["elapsed"], elapsed=time.monotonic() - started,
                    notes=notes or [], timings=timings)


def _check_request(paths, partial, stamp, shared, env_incoming):
    """Refuse, before anything changes, a deploy that would remove or link outside app_dir: run from
    anything but an unpacked release of this app_dir (it renames and removes the directory it runs
    from), a stamp that is not a release name, an upload that is not this deploy's, shared_paths that
    leave shared/. A refused request's own unpacked release goes; nothing else is touched."""
    if not _unpacked_here(paths, partial):
        raise Failure("deploy runs from a release unpacked in %s/.partial-*, not from %s: use invoke deploy"
                      % (paths.releases, partial))
    try:
        if stamp_problem(stamp):
            raise Failure("deploy: stamp %s" % stamp_problem(stamp))
        if env_incoming and not _uploaded_here(paths, env_incoming):
            raise Failure("deploy: env_incoming %r is not an upload in %s/.env.incoming-*: nothing was changed"
                          % (env_incoming, paths.shared))
        check_shared(paths, partial, shared)
    except Failure:
        _discard(paths, partial, None)
        raise


def _unpacked_here(paths, partial):
    return (os.path.basename(partial).startswith(".partial-") and inside(paths.releases, partial)
            and os.path.realpath(os.path.dirname(partial)) == os.path.realpath(paths.releases))


def _uploaded_here(paths, path):
    """The .env this deploy's operator uploaded: a file of its own in shared/, never a link or elsewhere."""
    return (plain(path) and os.path.basename(path).startswith(".env.incoming-") and not os.path.islink(path)
            and os.path.isfile(path)
            and os.path.realpath(os.path.dirname(path) or ".") == os.path.realpath(paths.shared))


def _discard(paths, partial, env_incoming):
    """What a deploy brought and will not use: its unpacked release, its uploaded .env (both checked
    to be this deploy's own before: remove() refuses anything else)."""
    if partial:
        remove(paths.releases, partial, ignore_errors=True)
    if env_incoming and os.path.exists(env_incoming):
        remove(paths.shared, env_incoming)


def _apply_env(paths, incoming, stamp):
    """The uploaded .env replaces shared/.env (mode 600); the old one is kept to roll back."""
    if not incoming:
        return None
    target = os.path.join(paths.shared, ".env")
    backup = None
    if os.path.exists(target):
        backup = "%s.before-%s" % (target, stamp)
        shutil.copy2(target, backup)
    os.chmod(incoming, 0o600)
    os.replace(incoming, target)
    return backup


def _roll_back(paths, config, previous, env_backup, timeout, hook_spec=None, hook_timeout=hooks.DEFAULT_TIMEOUT,
               failed_stamp=None):
    """Back to ``previous`` after a failed release; its on_rollback hooks run, and their failure is
    said but does not stop the way back (staying on a failed release is worse)."""
    if env_backup:
        os.replace(env_backup, os.path.join(paths.shared, ".env"))
    if not previous:  # a first deploy has nothing to go back to: stop rather than serve a broken release
        os.unlink(paths.current)
        try:
            ask(paths, "stop", "all", timeout)
        except Failure:
            pass
        return "no previous release to go back to: the stack is stopped"
    release, said = os.path.join(paths.releases, previous), []

    def hook(name):
        try:
            _hook(hook_spec, name, paths, release, hook_timeout, rolling_back=True, release=previous,
                  previous=failed_stamp)
        except Failure as exc:
            said.append("; its %s" % exc)

    hook("before_switch")
    switch_to(paths, previous)
    try:
        restart_locked(paths, config, timeout=timeout)
    except Failure as exc:
        return "rolled back to %s, which did not come up either: %s" % (previous, exc)
    hook("after_switch")
    return "rolled back to %s, which is serving%s" % (previous, "".join(said))


def rollback(app_dir, settings, to=None, timeout=20.0, lock_timeout=120.0, by=None, force=False, checks=None,
             hook_spec=None, hook_timeout=hooks.DEFAULT_TIMEOUT):
    """Switch to ``to`` (default: the newest healthy release older than current) and restart on it.
    Hooks with on_rollback run: before_switch may refuse the switch, after_switch is reported."""
    paths = Layout(app_dir)
    if to is not None and stamp_problem(to):
        raise Failure("rollback --to: %s; invoke releases lists them" % stamp_problem(to))
    with operator_lock(paths, lock_timeout, "rollback"):
        current, known = current_stamp(paths), stamps(paths)
        target = to
        if not target:
            older = [s for s in known if current and s < current and not failed(paths, s)]
            if not older:
                raise Failure("no healthy release older than the current one (%s) to roll back to" % current)
            target = older[-1]
        elif failed(paths, target) and not force:
            raise Failure("release %s failed its deploy (%s): roll back to it with --force only"
                          % (target, read_json(os.path.join(paths.releases, target, "DEPLOY.json")).get("reason")))
        config = stack_config(app_dir, settings)
        guard.check(paths, config, checks)
        release = os.path.join(paths.releases, target)
        if not os.path.isdir(release):
            raise Failure("no release %s on this host (invoke releases lists them)" % target)
        try:
            _hook(hook_spec, "before_switch", paths, release, hook_timeout, rolling_back=True, release=target,
                  previous=current)
        except Failure as exc:
            raise Failure("rollback to %s refused: %s; current is untouched (%s)" % (target, exc, current),
                          exc.log_tail) from None
        previous = switch_to(paths, target)
        health = restart_locked(paths, config, timeout=timeout)
        record(paths, target, None, by, "rollback from %s" % previous)
        try:
            _hook(hook_spec, "after_switch", paths, release, hook_timeout, rolling_back=True, release=target,
                  previous=previous)
        except Failure as exc:
            raise Failure("rolled back to %s, which is serving, but its %s" % (target, exc), exc.log_tail) from None
        before = read_json(os.path.join(paths.releases, previous or "", "DEPLOY.json")).get("data_snapshot")
        return {"ok": True, "stamp": target, "previous": previous, "pid": health["pid"], "data_snapshot": before}


def list_releases(app_dir):
    paths = Layout(app_dir)
    current, out = current_stamp(paths), []
    for stamp in stamps(paths):
        info = read_json(os.path.join(paths.releases, stamp, "REVISION.json"))
        out.append({"stamp": stamp, "commit": info.get("commit"), "by": info.get("by"),
                    "current": stamp == current, "failed": failed(paths, stamp)})
    return {"ok": True, "releases": out}
