"""The TUI's clock, one place to freeze it (snapshot tests show elapsed times and poll times)."""

from __future__ import annotations

import time


def now() -> float:
    return time.time()
