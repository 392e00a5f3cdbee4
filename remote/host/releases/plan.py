"""`deploy --plan` on one host: what a deploy would change there, found without writing anything.

Sent inside the command like the agent (a host with no release, or an older one, can be planned).
The request carries the manifest of the release to ship, its requirements' text and, with
--env-file, the new .env's text; the answer names files and .env keys, never a value or a hash of
one (a hash would let a weak token be guessed off-line). With the inventory's settings and what the
other hosts run, it also runs the exactly-once check a deploy would (guard.check, the same code):
a plan says when the deploy would be refused for its bot.
"""

import os
import shutil
import sys

from remote.host.common import wire
from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import Layout, current_stamp, parse_env, read_env_file, read_json
from remote.host.common.system import existing_parent
from remote.host.releases import manifest
from remote.host.supervision import guard


def bot_check(paths, settings, checks, env_text):
    """{"refused": the deploy's refusal or None, "notes": its TAKEOVER lines}; None unasked."""
    if not settings or not checks:
        return None
    try:
        notes = guard.check(paths, settings, checks, dotenv=parse_env(env_text) if env_text is not None else None)
        return {"refused": None, "notes": notes or []}
    except Failure as exc:
        return {"refused": str(exc), "notes": []}


def plan(app_dir, files, requirements, env_text=None, needed=0, settings=None, checks=None):
    """The plan document (contract.PlanAnswer, less the host name and what the operator adds)."""
    paths = Layout(app_dir)
    stamp = current_stamp(paths)
    running = {"stamp": stamp, "commit": None}
    old = {}
    if stamp:
        release = os.path.join(paths.releases, stamp)
        running["commit"] = read_json(os.path.join(release, "REVISION.json")).get("commit")
        old = manifest.read(release)
    digest = manifest.venv_digest(requirements, sys.executable, sys.version)
    reused = os.path.exists(os.path.join(paths.venvs, digest, ".complete"))
    env = None
    if env_text is not None:
        env = manifest.env_changes(read_env_file(os.path.join(paths.shared, ".env")), parse_env(env_text))
    where = existing_parent(paths.releases)
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return {"ok": False, "error": "cannot tell the free space of %s: %s" % (where, exc.strerror)}
    return {"ok": True, "error": None, "running": running, "files": manifest.compare(old, files),
            "first_deploy": stamp is None, "venv": {"digest": digest, "reused": reused}, "env": env,
            "disk": {"path": where, "free": free, "needed": needed, "fits": free >= needed},
            "bot": bot_check(paths, settings, checks, env_text)}


def handle(request):
    try:
        files, requirements = request["files"], request["requirements"]
        if not isinstance(files, dict) or not isinstance(requirements, list):
            raise TypeError("files must be a mapping and requirements a list")
        settings, checks = request.get("settings"), request.get("checks")
        if not isinstance(settings, (dict, type(None))) or not isinstance(checks, (dict, type(None))):
            raise TypeError("settings and checks must be mappings")
        return plan(str(request.get("app_dir") or "~/sulfur"), files, [str(t) for t in requirements],
                    request.get("env_text"), int(request.get("needed") or 0), settings, checks)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("bad plan request: %s" % exc) from None


def main():
    return wire.serve(handle, "plan")
