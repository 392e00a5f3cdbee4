"""Shim: sulfur-ops before the versioned contract ran `python -S -m remote.hostctl COMMAND --flags`.

This release speaks remote.host.ctl with a JSON request on stdin; such an operator gets one answer
that its own reader prints: what to update.
"""

import json
import sys

from remote.host.common.wire import PROTOCOL

if __name__ == "__main__":
    print(json.dumps({"ok": False, "kind": "protocol", "protocol": PROTOCOL, "log_tail": [],
                      "error": "this host's release is newer than the sulfur-ops that called it: update "
                               "sulfur-ops on the operator's machine (git pull), then run the task again"}))
    sys.exit(2)
