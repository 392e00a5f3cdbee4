"""The inventory's `coordination:` section: an etcd cluster the hosts' supervisors use to hold the
bot's lease (one holder at a time, failover without anyone watching). Opt-in: without the section
everything behaves as before.

    coordination:
      etcd: [https://10.0.0.2:2379, https://10.0.0.3:2379, https://10.0.0.4:2379]
      ca: ~/etcd/ca.pem      # on this machine; its certificate travels to the hosts in their requests
      user: sulfur           # its password is ETCD_PASSWORD in each host's shared/.env, never here
      lease_ttl: 10s         # whole seconds, at least 5s

The operator never talks to etcd itself: the hosts do (their credentials live only there), and
`doctor` asks each one what it sees of the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import UsageError
from .units import parse_duration

ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_ENDPOINTS = 9


@dataclass
class Coordination:
    endpoints: List[str]
    ca: Optional[str]  # the CA file here, expanded
    user: Optional[str]
    lease_ttl: int

    def request(self) -> Dict[str, Any]:
        """What a host is sent (doctor, the supervisor's settings): endpoints, user, TTL and the CA's
        PEM text (public). Never a password: that is ETCD_PASSWORD in the host's shared/.env."""
        try:
            pem = Path(self.ca).read_text() if self.ca else None
        except OSError as exc:
            raise UsageError("coordination.ca: %s: %s" % (self.ca, exc.strerror)) from None
        return {"endpoints": list(self.endpoints), "user": self.user, "lease_ttl": self.lease_ttl, "ca_pem": pem}


def _endpoints(value: Any) -> List[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ValueError("give one endpoint or a list of them: https://host:2379")
    if len(items) > MAX_ENDPOINTS:
        raise ValueError("%d endpoints: at most %d" % (len(items), MAX_ENDPOINTS))
    for item in items:
        if not ENDPOINT.fullmatch(item):
            raise ValueError("%r is not an endpoint: write https://host:2379 (http:// only on a trusted network)"
                             % item)
    return list(items)


def parse(values: Dict[str, Any], inventory: Path) -> Coordination:
    """The section's values checked; ValueError(key, why) for the first problem."""
    unknown = sorted(set(values) - {"etcd", "ca", "user", "lease_ttl", "password"})
    if unknown:
        raise KeyError(unknown[0], "unknown key (known: ca, etcd, lease_ttl, user)")
    if "password" in values:
        raise KeyError("password", "never in the inventory: set ETCD_PASSWORD in each host's shared/.env "
                                   "(invoke deploy --env-file)")
    if "etcd" not in values:
        raise KeyError("etcd", "missing: the cluster's endpoints, such as [https://10.0.0.2:2379]")
    try:
        endpoints = _endpoints(values["etcd"])
    except ValueError as exc:
        raise KeyError("etcd", str(exc)) from None
    ca = values.get("ca")
    if ca is not None:
        if not isinstance(ca, str):
            raise KeyError("ca", "expected the path of a CA file on this machine")
        found = Path(ca).expanduser()
        if not found.is_absolute():
            found = inventory.resolve().parent / found
        if not found.is_file():
            raise KeyError("ca", "%s is not a readable file" % found)
        ca = str(found)
    user = values.get("user")
    if user is not None and (not isinstance(user, str) or not USER.fullmatch(user)):
        raise KeyError("user", "%r is not a user name" % (user,))
    if user is not None and any(e.startswith("http://") for e in endpoints):
        raise KeyError("etcd", "http:// with a user would send its password in clear: use https:// and a ca")
    try:
        ttl = parse_duration(values.get("lease_ttl", 10))
    except ValueError as exc:
        raise KeyError("lease_ttl", str(exc)) from None
    if ttl != int(ttl) or ttl < 5:
        raise KeyError("lease_ttl", "%s s: a whole number of seconds, at least 5s" % ttl)
    return Coordination(endpoints, ca, user, int(ttl))
