"""One writer thread for labels: key presses are saved in order, and never on the event loop.

A label key press puts an operation on a queue and returns at once (the table shows the
new label immediately). The writer thread commits each operation in its own SQLite
transaction -- a few milliseconds, or up to the busy timeout when another user holds the
write lock -- and posts :class:`LabelSaved` or :class:`LabelFailed` back to the widget
that asked. Quitting drains the queue before the app exits.

A hang-up (SSH drop, ``tmux kill-session``, SIGTERM) must end the process within seconds,
even while another user holds the database's write lock: :meth:`LabelWriter.spool` then
writes every operation not yet committed to a spool file next to the store, and the next
start commits it (:func:`replay_spool`) -- a label shown on screen is never lost.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from fmb_engine.errors import FMBError
from fmb_engine.workspace import atomic_write_text

#: operations kept across a hang-up (an undo refers to this session's own history, so it is not replayed)
SPOOLED_KINDS = ("label", "note")


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
    """``op`` was not committed; ``error`` is an :class:`FMBError` (a user or data problem) or a bug."""

    def __init__(self, op: LabelOp, error: Exception) -> None:
        super().__init__()
        self.op, self.error = op, error


class LabelWriter:
    def __init__(self, store_factory) -> None:
        self._store_factory = store_factory
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fmb-label-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self._inflight: LabelOp | None = None
        self.closed = False

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
                self._inflight = op
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
                except Exception as exc:  # noqa: BLE001 - the thread goes on; the widget reports it (LabelFailed)
                    reply_to.post_message(LabelFailed(op, exc))
                else:
                    reply_to.post_message(LabelSaved(op, event))
            finally:
                self._inflight = None
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
        """Drain (up to ``timeout``) and stop the thread; True when everything is committed."""
        if self.closed:
            return not self.unsaved()
        ok = self.drain(timeout)
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout=1.0)
        self.closed = ok
        return ok

    def unsaved(self) -> list[LabelOp]:
        """The operation being committed and those queued after it, in order."""
        with self._queue.mutex:
            queued = [item[0] for item in self._queue.queue if item is not None]
        inflight = self._inflight
        return ([inflight] if inflight is not None else []) + queued

    def spool(self, path: Path) -> int:
        """Stop taking work and append what is not committed to ``path`` (JSON lines); returns how many ops."""
        self.closed = True
        ops = [op for op in self.unsaved() if op.kind in SPOOLED_KINDS]
        if ops:
            before = path.read_text(encoding="utf-8") if path.is_file() else ""
            atomic_write_text(path, before + "".join(json.dumps(asdict(op)) + "\n" for op in ops))
        return len(ops)


def spool_path(labels_file: Path) -> Path:
    return labels_file.with_name(labels_file.stem + "-pending.jsonl")


def replay_spool(path: Path, store) -> int:
    """Commit the operations a hung-up session left in ``path``, then remove it; returns how many were applied.

    An operation whose value the store already holds (it was committed just before the
    process ended) is skipped, so replaying twice changes nothing.
    """
    if not path.is_file():
        return 0
    applied = 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            op = LabelOp(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise FMBError(f"{path}: line {n} is not a label operation ({exc}); fix or remove the file") from None
        current = store.get(op.object_id)
        have = None if current is None else (current.label if op.kind == "label" else current.note)
        if have == op.value:
            continue
        setter = store.set_label if op.kind == "label" else store.set_note
        setter(op.object_id, op.value, system=op.system, rank=op.rank)
        applied += 1
    path.unlink()
    return applied
