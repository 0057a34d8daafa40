"""One writer thread for labels: key presses are saved in order, and never on the event loop.

A label key press puts an operation on a queue and returns at once (the table shows the
new label immediately). The writer thread commits each operation in its own SQLite
transaction -- a few milliseconds, or up to the busy timeout when another user holds the
write lock -- and posts :class:`LabelSaved` or :class:`LabelFailed` back to the widget
that asked. Quitting (or a SIGHUP) drains the queue before the app exits.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from fmb_engine.errors import FMBError


@dataclass(frozen=True)
class LabelOp:
    kind: str  # "label" | "note" | "undo"
    object_id: str | None = None
    value: str | None = None
    system: str | None = None
    rank: int | None = None


class LabelSaved(Message):
    def __init__(self, op: LabelOp, event: Any) -> None:
        super().__init__()
        self.op, self.event = op, event


class LabelFailed(Message):
    def __init__(self, op: LabelOp, error: str) -> None:
        super().__init__()
        self.op, self.error = op, error


class LabelWriter:
    def __init__(self, store_factory) -> None:
        self._store_factory = store_factory
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fmb-label-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def submit(self, op: LabelOp, reply_to) -> None:
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        self._queue.put((op, reply_to))

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                op, reply_to = item
                try:
                    store = self._store_factory()
                    if op.kind == "label":
                        event = store.set_label(op.object_id, op.value, system=op.system, rank=op.rank)
                    elif op.kind == "note":
                        event = store.set_note(op.object_id, op.value, system=op.system, rank=op.rank)
                    elif op.kind == "undo":
                        event = store.undo()
                    else:  # pragma: no cover - programming error
                        raise ValueError(op.kind)
                except FMBError as exc:
                    reply_to.post_message(LabelFailed(op, str(exc)))
                except Exception as exc:  # noqa: BLE001 - reported, never a traceback on screen
                    reply_to.post_message(LabelFailed(op, f"{type(exc).__name__}: {exc}"))
                else:
                    reply_to.post_message(LabelSaved(op, event))
            finally:
                self._queue.task_done()

    def drain(self, timeout: float = 35.0) -> bool:
        """Wait until every queued operation is committed; True when the queue is empty."""
        if not self._started:
            return True
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 35.0) -> bool:
        ok = self.drain(timeout)
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout=1.0)
        return ok
