"""Modules imported on their first use, so that reading tasks.py costs only what the task runs."""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """A module imported on its first attribute, not when tasks.py is read.

    Every `invoke` command reads all of tasks.py, but one task needs a few of remote/'s modules: read
    eagerly they cost about 0.1 s of the 0.3 s a one-host `port-status` takes. import_module is
    thread-safe and, once the module is in sys.modules, one dict lookup."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)
