"""The contract between the operator and the host side: what goes in, what comes out, which version.

The operator runs the host's *current* release, which may be older or newer than the operator's own
code, so both directions carry a ``protocol`` number:

- a request is one JSON line on the command's stdin (settings and secrets never go on the command
  line, where every user of the host sees them in ``ps``); ``ctl --request FILE`` reads it from a
  file instead, for ``invoke dev``, whose stdin is the user's terminal;
- an answer is one JSON document, the last line of stdout, with the host's ``protocol`` in it.

A request with a protocol this code does not speak is answered with ``kind: "protocol"`` and this
side's number, so the operator can say which side to update. The TypedDicts below are the documents
each command answers; ``docs/architecture.md`` explains how to change them (bump PROTOCOL when a
field changes meaning or a request needs something an older host lacks).

Long-running commands (``logs --follow``, and any that stream) end when their SSH channel closes:
``wire.Stdin.closed()`` sees the end of stdin (or the ETX byte invoke sends on Ctrl+C). The reading
and writing of requests and answers, and PROTOCOL itself, live in wire.py: the agent travels inside
its command and carries wire.py, not these documents.
"""

from typing import Any, Dict, List, Optional

from remote.host.common.wire import PROTOCOL  # noqa: F401  (the number belongs with the documents it versions)

try:  # typing.TypedDict exists from Python 3.8 on; it documents, nothing checks it at run time
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore


# ------------------------------------------------------------------------------------ requests


class AgentRequest(TypedDict, total=False):
    protocol: int
    command: str            # probe | free | doctor | space
    port: int
    app_dir: str
    force: bool             # free: also stop a holder that is not ours
    grace: float            # free: seconds between SIGTERM and SIGKILL


class PlanRequest(TypedDict, total=False):
    """deploy --plan, to remote.host.releases.plan (bundled like the agent)."""
    protocol: int
    app_dir: str
    files: Dict[str, str]   # the release to ship: name -> manifest.file_digest
    requirements: List[str]  # the texts its venv digest is made of, in the deploy's order
    env_text: Optional[str]  # --env-file's text (secret: stdin only), compared with shared/.env there
    needed: int             # bytes a deploy would need
    settings: Dict[str, Any]  # the inventory's stack settings (for the exactly-once check)
    checks: Dict[str, Any]  # what the other hosts run, as a deploy sends it (guard.check)


class Hook(TypedDict):
    run: str                # a command for sh
    on_rollback: bool



class StackSettings(TypedDict, total=False):
    """How the supervisor runs the stack; a change of those in stack.RESTART_KEYS replaces it."""
    code_dir: str
    python: Optional[str]   # the dashboard's interpreter (None: the release's .venv, else this one)
    host: str               # dashboard bind address
    port: int
    bot_command: Optional[str]
    alert_webhook: Optional[str]   # secret: only ever on stdin and in run/supervisor.json (mode 600)
    wake_lock: bool
    max_failures: int
    reload: bool
    name: str               # the inventory's name for this host, for messages
    standby: bool           # the bot's initial role; run/bot-role (failover) wins once written
    watchdog_sec: float     # > 0: the bot must send WATCHDOG=1 this often, or it is restarted
    bot_notify: bool        # its starts are confirmed by READY=1 (also once it has said READY=1 here before)
    bot_ready_timeout: float  # a notify bot not READY this long after its start has failed to start
    boot_wait: float        # > 0: the first supervisor of a boot holds the bot that long, or until an epoch check
    bot_starts_per_day: int  # the start budget over any sliding 24 h
    shard_count: int
    shards: Optional[str]   # "0-3", "0,2"; None: all of them
    bot_token_env: Optional[str]   # the .env variable with the token (None: DISCORD_TOKEN, BOT_TOKEN, TOKEN)
    shared_paths: List[str]  # the bot's data in shared/ (snapshots, restores)
    backup_every: Optional[float]  # s between scheduled snapshots on the active host; None: off
    backup_keep: int        # retention: per reason, see remote/host/data/retention.py
    backup_max: int         # retention: bytes in all
    coordination: Optional[Dict[str, Any]]  # the etcd lease (remote/coordination.py's request()); None: off
    place: int              # 1 s of waiting per place before this host races for a free lease


class CtlRequest(TypedDict, total=False):
    protocol: int
    command: str            # also the first argument on the command line, for ps and old hosts
    app_dir: str
    options: Dict[str, Any]  # the command's own options (ctl.COMMANDS lists them; deploy's hooks: Hook each)
    settings: StackSettings  # restart, start, dev, deploy, rollback


# ------------------------------------------------------------------------------------- answers


class Answer(TypedDict, total=False):
    protocol: int
    ok: bool
    error: Optional[str]
    kind: str               # on failure: failed | request | protocol
    log_tail: List[str]     # on failure: the lines of the log that say why


class Listener(TypedDict, total=False):
    pid: Optional[int]
    process: Optional[str]
    cmdline: Optional[str]
    user: Optional[str]
    address: str
    managed: bool           # our stack's process for this app_dir
    via: str                # how a hidden owner was found: pidfile | our process list
    role: str               # ours: supervisor | dashboard | bot | spare


class Tried(TypedDict):
    method: str
    ok: bool
    detail: str


class ProbeAnswer(Answer, total=False):
    port: int
    state: str              # free | listening | time_wait | unknown
    listeners: List[Listener]
    time_wait: Optional[int]
    method: Optional[str]
    tried: List[Tried]


class FreeAnswer(ProbeAnswer, total=False):
    stopped: List[Dict[str, Any]]   # listeners, each with the signal that ended it
    refused: List[Dict[str, Any]]   # listeners, each with the reason it was left alone
    listeners_before: List[Listener]


class DoctorMethod(TypedDict):
    method: str
    ok: bool
    owner: bool             # it could name the agent's own pid
    detail: str


class DoctorAnswer(Answer, total=False):
    bot_epoch: Optional[Dict[str, Any]]  # epoch, active_host, boot_wait (run/); {"garbled": True}; None: no record
    platform: str
    python: str
    python_path: str
    user: str
    uname: str
    methods: List[DoctorMethod]
    app_dir: str
    app_dir_exists: bool
    app_dir_writable: bool
    disk_free: Optional[int]
    autostart: List[str]
    android: Optional[Dict[str, Any]]   # Termux: wake_lock, phantom_killer, notes (what kills bots there)


class ServiceState(TypedDict, total=False):
    state: str              # stopped | starting | running | backoff | failed | stopping | standby | orphaned
    reason: Optional[str]   # why it is not running: standby, start budget spent, watchdog
    pid: Optional[int]
    started_at: Optional[float]     # wall clock, for people
    restarts: int
    failures: int
    last_exit: Optional[int]
    last_error: List[str]
    log: str


class RestartAnswer(Answer, total=False):
    action: str             # started | restarted | already running | restarted the supervisor (... changed)
    pid: Optional[int]      # the dashboard's
    port: int
    port_before: str
    elapsed: float
    epoch: "EpochRecord"    # this host's bot epoch after the start (protocol 3)


class StopAnswer(Answer, total=False):
    action: str


class BotUnit(TypedDict, total=False):
    """What must run once fleet-wide: a bot (sha256(token)[:12]) and its shards."""
    bot_id: str
    shard_count: int
    shards: List[int]
    state: str              # as ServiceState, or "orphaned": alive, its supervisor dead
    pid: Optional[int]
    started_at: Optional[float]


class BotStatus(TypedDict, total=False):
    env_bot_id: Optional[str]       # the bot id of the token in shared/.env (None: no token)
    running: Optional[BotUnit]      # what this host runs now (None: no bot running)
    role: Optional[str]             # run/bot-role as failover wrote it (None: the inventory decides)
    epoch: "EpochRecord"            # run/bot-epoch.json (protocol 3; a host before it sends none: epoch 0)


class EpochRecord(TypedDict, total=False):
    """The bot's fencing number on a host (epochs.py): only grows; ``since`` is shown, never compared."""
    epoch: int              # 0 with missing or garbled: no record, or none that reads
    bot_id: Optional[str]
    active_host: str        # the host the bot belongs to at this epoch
    since: float            # when it was given (the operator's clock)
    by: Optional[str]       # who moved it (user@machine)
    missing: bool
    garbled: bool


class EpochAnswer(Answer, total=False):
    """`ctl epoch {record, expect}` (protocol 3): the record kept here, and whether this host stood down."""
    fenced: bool            # this host's bot was stopped (or its active role dropped) for ``epoch``
    epoch: EpochRecord      # the record this host keeps now (its own, when it knows a later one)
    stopped_pid: Optional[int]


class StatusAnswer(Answer, total=False):
    supervisor: Dict[str, Any]      # running, pid, port, state (running | stopped | dead), last_seen
    services: Dict[str, ServiceState]   # the bot's also has bot_id, shards, role, status, budget, ...
    bot: BotStatus
    now: float
    dashboard_token: bool           # shared/.env sets DASHBOARD_TOKEN (never its value): the fleet tunnels only then


class RoleAnswer(Answer, total=False):
    role: str               # active | standby
    pid: Optional[int]      # active: the bot's pid, up for the settle time
    stopped_pid: Optional[int]      # standby: the bot process that was stopped
    notes: List[str]


class DeployAnswer(Answer, total=False):
    stamp: str
    venv: str
    venv_reused: bool
    packages: int
    previous: Optional[str]
    pruned: List[str]
    pid: Optional[int]
    healthy_in: float
    elapsed: float
    timings: Dict[str, float]   # seconds per step: prepare, venv, before_switch, switch, restart, health, ...


class Changes(TypedDict):
    names: List[str]        # the first manifest.LIMIT, sorted
    count: int


class PlanAnswer(Answer, total=False):
    running: Dict[str, Optional[str]]   # stamp, commit of `current` (None before a first deploy)
    first_deploy: bool
    files: Dict[str, Changes]           # added, changed, removed
    venv: Dict[str, Any]                # digest, reused
    env: Optional[Dict[str, List[str]]]  # added, changed, removed key names (None: no --env-file)
    disk: Dict[str, Any]                # path, free, needed, fits
    bot: Optional[Dict[str, Any]]       # refused (the deploy's refusal, or None), notes; None: no check asked
    # added by the operator: shipping {commit}, hooks [Hook + {hook}]


class RollbackAnswer(Answer, total=False):
    stamp: str
    previous: Optional[str]
    pid: Optional[int]


class ReleaseInfo(TypedDict):
    stamp: str
    commit: Optional[str]
    by: Optional[str]
    current: bool
    failed: bool            # its deploy failed (DEPLOY.json): rollback skips it


class ReleasesAnswer(Answer, total=False):
    releases: List[ReleaseInfo]


class WatchLine(TypedDict, total=False):
    """`ctl watch` prints one of these per line until its stdin ends (history.py, watch.py)."""
    protocol: int
    kind: str               # history (first, the backlog) | status | sample
    interval: int           # history: seconds between samples
    samples: Dict[str, List[Any]]   # history: history.FIELDS -> values, oldest first
    status: Dict[str, Any]  # status: the StatusAnswer, whenever run/state.json changed
    # sample: history.FIELDS as keys (t, serving, <service>_cpu in 0.1 %, _rss in KB, _restarts, load x 100,
    # mem_used and mem_total in KB, battery % or -1)


class AutostartAnswer(Answer, total=False):
    action: str             # installed | removed
    path: str
    notes: List[str]


class RunAnswer(Answer, total=False):
    """`ctl run` (protocol 6): the command's output came before, as `progress: out|err LINE` lines."""
    exit: Optional[int]     # its exit status (negative: the signal that ended it); None when stopped here
    seconds: float
    release: Optional[str]  # the release it ran in (None: a local checkout)
    locked: bool            # it held the host's operator lock (not with --no-lock)
    timed_out: bool         # stopped at its --timeout
    stopped: bool           # stopped because the operator pressed Ctrl+C or went away
