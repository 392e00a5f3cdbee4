"""Alerts to a Discord webhook when a service fails or recovers: posted from a thread, never blocking."""

import json
import threading


def post(url, text, log):
    """POST {"content": text} to ``url`` in a daemon thread (5 s timeout); ``log`` hears a failure."""
    if not url:
        return None

    def send():
        import urllib.request  # only here: it pulls in ssl, which every start would pay for

        # allowed_mentions: a crash that prints @everyone must not ping the whole Discord server
        body = json.dumps({"content": text[:1900], "allowed_mentions": {"parse": []}}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                     "User-Agent": "sulfur-supervisor"})
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except Exception as exc:  # an unreachable webhook must never stop supervision
            log("alert not delivered: %s" % exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread
