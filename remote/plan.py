"""`invoke deploy --plan`: what a deploy would do on each host, asked of the host, written nowhere.

The release's contents are listed and hashed here (no tar is built); each host compares them with
the release it runs (remote/host/releases/plan.py, sent inside the command), tells whether its venv would be
reused, and which .env keys the --env-file would change, by name only. What the inventory says (hooks,
commits) is added here, and the names packing would leave out (they may hold secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from remote.host.releases import hooks

from . import agentcalls
from .connections import Runner
from .ctlcalls import stack_settings
from .fanout import DEFAULT_PARALLEL, on_hosts
from .inventory import Host
from .release import Contents, contents, space_needed


def would_run(host: Host) -> List[Dict[str, Any]]:
    """The host's hooks, in the order a deploy runs them."""
    spec = hooks.normalize(host.hooks)
    return [dict(spec[name], hook=name) for name in hooks.NAMES if name in spec]


def plan_host(runner: Runner, host: Host, what: Contents, env_file: Optional[Path] = None,
              checks: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The plan for one host (contract.PlanAnswer); not ok when it cannot be planned, would not fit,
    or would be refused for its bot (``checks``: what the other hosts run, as a deploy sends it)."""
    # the tar's size is not known without building it: count it as big as what it holds
    request: Dict[str, Any] = {"app_dir": host.app_dir, "files": what.manifest, "requirements": what.requirements,
                               "needed": space_needed(what.unpacked, what.unpacked)}
    if checks is not None and host.bot_command:
        request.update(settings=stack_settings(host), checks=checks)
    if env_file is not None:
        request["env_text"] = env_file.read_text(encoding="utf-8", errors="replace")  # stdin only, compared there
    # the interpreter a deploy's ctl runs with (release.deploy_host): the venv's digest is made of its name
    doc = agentcalls.call_agent(runner, host, "plan", root="remote.host.releases.plan", python=host.python, **request)
    if not doc.get("ok"):
        return doc
    doc.update(shipping={"commit": what.commit, "not_shipped": what.not_shipped}, hooks=would_run(host))
    disk, refused = doc["disk"], (doc.get("bot") or {}).get("refused")
    if not disk["fits"]:
        doc.update(ok=False, error="not enough disk space in %s: %.1f MB free, the release needs about %.0f MB"
                   % (host.app_dir, disk["free"] / 2**20, disk["needed"] / 2**20))
    elif refused:
        doc.update(ok=False, error="a deploy would be refused: %s" % refused)
    return doc


def plan_hosts(targets: List[Host], env_file: Optional[Path], checks_for: Callable[[Host], Dict[str, Any]],
               parallel: int = DEFAULT_PARALLEL) -> List[Dict[str, Any]]:
    """`invoke deploy --plan`: the contents listed and hashed once per bot source (the hosts that name
    the same source ship the same files), then each host asked what would change. ``checks_for`` gives
    each target what the other hosts run, so that the plan says whether the deploy would be refused."""
    listed: Dict[Optional[str], Contents] = {}
    for target in targets:
        if target.source not in listed:
            listed[target.source] = contents(target.source, env_file)
    return on_hosts(targets, lambda runner, t: plan_host(runner, t, listed[t.source], env_file, checks_for(t)),
                    parallel)
