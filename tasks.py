"""sulfur-ops: Invoke tasks for the Sulfur bot's hosts. Thin on purpose: flags in, remote/ does the work.

    invoke dev            the dashboard of this machine, in the foreground
"""

import os
import sys
from pathlib import Path

from invoke import task

ROOT = Path(__file__).resolve().parent


@task(help={"port": "dashboard port (default 5000)", "host": "address to bind (default 127.0.0.1)"})
def dev(c, port=5000, host="127.0.0.1"):
    """Run this machine's dashboard in the foreground (Ctrl+C stops it)."""
    env = dict(os.environ, DASHBOARD_PORT=str(port), DASHBOARD_HOST=host)
    print(f"dashboard: http://{host}:{port}  (Ctrl+C to stop)", flush=True)
    os.chdir(ROOT)
    # exec, not a child: Ctrl+C reaches the dashboard itself and no orphan is left holding the port
    os.execve(sys.executable, [sys.executable, "-m", "dashboard"], env)
