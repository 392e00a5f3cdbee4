"""Alerts to a Discord webhook when a service fails or recovers.

``send`` blocks for up to 5 s, so the supervisor runs it as a job off its loop (jobs.py), never on it.
"""

import json


def send(url: str, text: str) -> None:
    """POST {"content": text} to ``url`` (5 s timeout); raises on any failure, which the caller logs."""
    import urllib.request  # only here: it pulls in ssl, which every start would pay for

    # allowed_mentions: a crash that prints @everyone must not ping the whole Discord server
    body = json.dumps({"content": text[:1900], "allowed_mentions": {"parse": []}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                 "User-Agent": "sulfur-supervisor"})
    urllib.request.urlopen(request, timeout=5).close()
