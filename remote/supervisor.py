"""Shim: autostart units written by older releases run `python APP_DIR/current/remote/supervisor.py run CONFIG`.

New units run `python -S -m remote.host.supervisor` (remote/host/releases/autostart.py); keep this file while
hosts may still have old units.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from remote.host.supervisor import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
