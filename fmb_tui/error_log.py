"""Where unexpected exceptions go: a traceback in a log file and a one-line notification.

The TUI must never leave a dead terminal: an exception in an event handler, a timer or a
worker is written to the error log (:func:`error_log_path`) and shown as a notification,
and the app keeps running. :class:`GuardedDispatch` keeps a failing handler from stopping
the message loop of the app or of a screen (Textual would otherwise stop that loop).
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from pathlib import Path

from fmb_engine.workspace import file_mode_for, make_dirs

#: an identical traceback within this many seconds is counted, not written or shown again
REPEAT_WINDOW_S = 10.0


def error_log_path(workspace_root: Path) -> Path:
    """``<workspace>/triage/tui-errors.log``; ``$XDG_STATE_HOME/fmb/tui-errors.log`` when the workspace is read-only."""
    triage = workspace_root / "triage"
    if os.access(triage if triage.is_dir() else workspace_root, os.W_OK):
        return triage / "tui-errors.log"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "fmb" / "tui-errors.log"


class ErrorLog:
    """Appends tracebacks to one file; repeats of the same traceback (a render error every frame) are folded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0  # exceptions reported (repeats included)
        self._last_seen: dict[str, float] = {}

    def write(self, exc: BaseException, context: str = "") -> bool:
        """Log ``exc``; False when it repeats one logged within :data:`REPEAT_WINDOW_S` (then nothing is written)."""
        self.count += 1
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        now = time.monotonic()
        if now - self._last_seen.get(text, -REPEAT_WINDOW_S) < REPEAT_WINDOW_S:
            return False
        self._last_seen[text] = now
        try:
            self._append(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} {context}\n{text}")
        except OSError:
            pass  # the notification still says what happened
        return True

    def note(self, line: str) -> None:
        """One line that is not an error but must be findable later (e.g. labels spooled at a hang-up)."""
        self._append(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} note: {line}\n")

    def _append(self, text: str) -> None:
        make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode_for(self.path.parent))
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(text)


class GuardedDispatch:
    """Mixin for the app and screens: an exception in a message handler is reported, and the loop goes on."""

    async def _dispatch_message(self, message) -> None:
        try:
            await super()._dispatch_message(message)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged with its traceback and notified by the app
            self.app.report_error(exc, context=f"{type(self).__name__} handling {type(message).__name__}")  # type: ignore[attr-defined]
