"""The triage label store: ``<workspace>/triage/labels.sqlite``.

Every key press in the triage UI becomes one row of an **append-only** history
(``events``: who, when, on which host and session, which ranking and rank they
were looking at, the value before and after). Triggers refuse UPDATE and DELETE
on that table. The table ``current`` (one row per labelled object) is derived
from the history inside the same transaction, so it is always consistent with
it; :meth:`LabelStore.rebuild_current` recomputes it from scratch.

Safe with several people triaging one workspace at once:

* every change is one ``BEGIN IMMEDIATE`` transaction (the value before is read
  under the write lock, so two writers never lose each other's change);
* WAL journal (readers never block the writer) with ``synchronous = FULL``: a
  label is on disk when :meth:`LabelStore.set_label` returns, and a killed
  terminal loses nothing already committed;
* undo only reverts this session's own changes, and refuses when someone else
  changed the object since (it says who).

WAL needs every writer on one host. On a filesystem without shared-memory support
(a workspace written from several login nodes over NFS) set ``tui.label_journal:
delete``.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmb_engine.errors import FMBError
from fmb_engine.sqlite_store import BUSY_TIMEOUT_S, SQLiteStore
from fmb_engine.workspace import Workspace, atomic_path

SCHEMA_VERSION = 1
FOLDER = "triage"
FILE_NAME = "labels.sqlite"
FIELDS = ("label", "note")
MAX_NOTE = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    field     TEXT NOT NULL CHECK (field IN ('label', 'note')),
    value     TEXT,
    previous  TEXT,
    undoes    INTEGER REFERENCES events(id),
    system    TEXT,
    rank      INTEGER,
    user      TEXT NOT NULL,
    host      TEXT,
    session   TEXT NOT NULL,
    time      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_object ON events(object_id);
CREATE INDEX IF NOT EXISTS events_session ON events(session);
CREATE INDEX IF NOT EXISTS events_undoes ON events(undoes);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the label history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the label history is append-only'); END;
CREATE TABLE IF NOT EXISTS current (
    object_id   TEXT PRIMARY KEY,
    label       TEXT,
    label_user  TEXT,
    label_time  REAL,
    label_event INTEGER,
    note        TEXT,
    note_user   TEXT,
    note_time   REAL,
    note_event  INTEGER
);
CREATE INDEX IF NOT EXISTS current_label ON current(label)
"""


class TriageError(FMBError):
    """A label could not be stored, undone or exported; the message says why."""


@dataclass(frozen=True)
class LabelEvent:
    """One row of the history."""

    id: int
    object_id: str
    field: str
    value: str | None
    previous: str | None
    undoes: int | None
    system: str | None
    rank: int | None
    user: str
    host: str | None
    session: str
    time: float


@dataclass(frozen=True)
class Current:
    """The current label and note of one object, and who set them."""

    object_id: str
    label: str | None
    label_user: str | None
    label_time: float | None
    note: str | None
    note_user: str | None
    note_time: float | None


def labels_path(ws: Workspace) -> Path:
    return ws.folder(FOLDER) / FILE_NAME


def default_user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return os.environ.get("USER") or "unknown"


def _event(row: sqlite3.Row) -> LabelEvent:
    return LabelEvent(**{k: row[k] for k in row.keys()})


def _current(row: sqlite3.Row) -> Current:
    return Current(row["object_id"], row["label"], row["label_user"], row["label_time"], row["note"],
                   row["note_user"], row["note_time"])


def iso(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


class LabelStore(SQLiteStore):
    """One connection to a label database. Thread-safe (calls are serialised by a lock)."""

    what = "label database"
    error = TriageError
    schema = _SCHEMA
    schema_version = SCHEMA_VERSION
    busy_hint = "the label was not saved, press the key again"
    wal_synchronous = "FULL"  # a label is on disk when set_label returns

    def __init__(self, path: str | os.PathLike[str], user: str | None = None, journal: str = "wal",
                 session: str | None = None, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.user = user or default_user()
        self.host = socket.gethostname()
        self.session = session or f"{self.user}@{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        super().__init__(path, journal=journal, busy_timeout_s=busy_timeout_s)

    @classmethod
    def for_workspace(cls, ws: Workspace, user: str | None = None, journal: str = "wal",
                      session: str | None = None) -> LabelStore:
        return cls(labels_path(ws), user=user, journal=journal, session=session)

    # --- writing ---------------------------------------------------------------------------

    def _change(self, db: sqlite3.Connection, object_id: str, field: str, value: str | None,
                system: str | None, rank: int | None, undoes: int | None = None) -> LabelEvent:
        row = db.execute("SELECT * FROM current WHERE object_id = ?", (object_id,)).fetchone()
        previous = row[field] if row is not None else None
        now = time.time()
        cursor = db.execute(
            "INSERT INTO events (object_id, field, value, previous, undoes, system, rank, user, host, session, time) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (object_id, field, value, previous, undoes, system, rank, self.user, self.host, self.session, now),
        )
        event_id = cursor.lastrowid
        db.execute(
            f"INSERT INTO current (object_id, {field}, {field}_user, {field}_time, {field}_event) VALUES (?,?,?,?,?) "
            f"ON CONFLICT(object_id) DO UPDATE SET {field} = excluded.{field}, {field}_user = excluded.{field}_user, "
            f"{field}_time = excluded.{field}_time, {field}_event = excluded.{field}_event",
            (object_id, value, self.user, now, event_id),
        )
        return LabelEvent(event_id, object_id, field, value, previous, undoes, system, rank, self.user, self.host,
                          self.session, now)

    @staticmethod
    def _check_id(object_id: str) -> str:
        object_id = str(object_id)
        if not object_id.strip():
            raise TriageError("empty object_id: nothing labelled")
        return object_id

    def set_label(self, object_id: str, label: str | None, *, system: str | None = None,
                  rank: int | None = None) -> LabelEvent:
        """Set (or clear, with None) the label of ``object_id``; committed when this returns."""
        object_id = self._check_id(object_id)
        if label is not None:
            label = str(label).strip()
            if not label or "\n" in label or "," in label:
                raise TriageError(f"invalid label {label!r}: one word without commas or newlines")
        with self.transaction() as db:
            return self._change(db, object_id, "label", label, system, rank)

    def set_note(self, object_id: str, note: str | None, *, system: str | None = None,
                 rank: int | None = None) -> LabelEvent:
        """Set (or clear, with None or "") the free-text note of ``object_id``."""
        object_id = self._check_id(object_id)
        note = (note or "").strip() or None
        if note is not None and len(note) > MAX_NOTE:
            raise TriageError(f"note too long ({len(note)} characters, at most {MAX_NOTE})")
        with self.transaction() as db:
            return self._change(db, object_id, "note", note, system, rank)

    def undo(self) -> LabelEvent | None:
        """Revert this session's latest change that is not undone yet; None when there is none.

        Refuses (TriageError) when another session changed that object's field since.
        """
        with self.transaction() as db:
            row = db.execute(
                "SELECT * FROM events e WHERE e.session = ? AND e.undoes IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.id) ORDER BY e.id DESC LIMIT 1",
                (self.session,),
            ).fetchone()
            if row is None:
                return None
            ev = _event(row)
            # Later changes of this session to the object are undone already (undo is last-in first-out);
            # a later change by anyone else means the value is no longer ours to revert.
            other = db.execute(
                "SELECT user FROM events WHERE object_id = ? AND field = ? AND id > ? AND session != ? "
                "ORDER BY id DESC LIMIT 1", (ev.object_id, ev.field, ev.id, self.session)).fetchone()
            if other is not None:
                cur = db.execute("SELECT * FROM current WHERE object_id = ?", (ev.object_id,)).fetchone()
                raise TriageError(
                    f"cannot undo the {ev.field} of {ev.object_id}: {other['user']} changed it since "
                    f"(now {cur[ev.field] if cur is not None else None!r}); set it again instead"
                )
            return self._change(db, ev.object_id, ev.field, ev.previous, ev.system, ev.rank, undoes=ev.id)

    def rebuild_current(self) -> int:
        """Recompute ``current`` from the history (a check, or a repair); returns the number of objects."""
        with self.transaction() as db:
            db.execute("DELETE FROM current")
            rows = db.execute("SELECT * FROM events ORDER BY id").fetchall()
            state: dict[str, dict[str, Any]] = {}
            for r in rows:
                s = state.setdefault(r["object_id"], {})
                s[r["field"]] = (r["value"], r["user"], r["time"], r["id"])
            for oid, s in state.items():
                lab = s.get("label", (None, None, None, None))
                note = s.get("note", (None, None, None, None))
                db.execute("INSERT INTO current VALUES (?,?,?,?,?,?,?,?,?)", (oid, *lab, *note))
            return len(state)

    # --- reading ---------------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        """object_id -> current label, for every labelled object."""
        with self._lock:
            rows = self._db.execute("SELECT object_id, label FROM current WHERE label IS NOT NULL").fetchall()
        return {r[0]: r[1] for r in rows}

    def notes(self) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT object_id, note FROM current WHERE note IS NOT NULL").fetchall()
        return {r[0]: r[1] for r in rows}

    def current(self, object_ids: Iterable[str] | None = None) -> dict[str, Current]:
        with self._lock:
            if object_ids is None:
                rows = self._db.execute("SELECT * FROM current").fetchall()
            else:
                ids = [str(o) for o in object_ids]
                rows = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    rows += self._db.execute(
                        f"SELECT * FROM current WHERE object_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return {r["object_id"]: _current(r) for r in rows}

    def get(self, object_id: str) -> Current | None:
        return self.current([object_id]).get(str(object_id))

    def history(self, object_id: str | None = None, limit: int | None = None) -> list[LabelEvent]:
        """Events, oldest first (of one object, or all)."""
        sql, args = "SELECT * FROM events", []
        if object_id is not None:
            sql += " WHERE object_id = ?"
            args.append(str(object_id))
        sql += " ORDER BY id"
        if limit:
            sql = f"SELECT * FROM ({sql.replace(' ORDER BY id', ' ORDER BY id DESC')} LIMIT {int(limit)}) ORDER BY id"
        with self._lock:
            return [_event(r) for r in self._db.execute(sql, args).fetchall()]

    def counts(self) -> dict[str, int]:
        """Objects per current label."""
        with self._lock:
            rows = self._db.execute(
                "SELECT label, COUNT(*) FROM current WHERE label IS NOT NULL GROUP BY label ORDER BY label").fetchall()
        return {r[0]: r[1] for r in rows}

    def data_version(self) -> int:
        """Changes when any connection commits (cheap; lets a UI notice other users' labels)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    # --- export ----------------------------------------------------------------------------

    def export_csv(self, path: str | os.PathLike[str], *, history: bool = False,
                   labels: Iterable[str] | None = None) -> Path:
        """Write the current labels (or, with ``history``, every event) as CSV, atomically.

        Current: ``object_id,label,note,label_user,label_time,note_user,note_time``;
        history: ``id,time,user,host,session,object_id,field,value,previous,undoes,system,rank``.
        ``labels`` keeps only objects whose current label is in that set.
        """
        keep = None if labels is None else set(labels)
        path = Path(path)
        try:
            with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                if history:
                    writer.writerow(["id", "time", "user", "host", "session", "object_id", "field", "value",
                                     "previous", "undoes", "system", "rank"])
                    for e in self.history():
                        writer.writerow([e.id, iso(e.time), e.user, e.host, e.session, e.object_id, e.field,
                                         e.value or "", e.previous or "", e.undoes or "", e.system or "",
                                         "" if e.rank is None else e.rank])
                else:
                    writer.writerow(["object_id", "label", "note", "label_user", "label_time", "note_user",
                                     "note_time"])
                    for c in sorted(self.current().values(), key=lambda c: c.object_id):
                        if c.label is None and c.note is None:
                            continue
                        if keep is not None and c.label not in keep:
                            continue
                        writer.writerow([c.object_id, c.label or "", c.note or "", c.label_user or "",
                                         iso(c.label_time), c.note_user or "", iso(c.note_time)])
        except OSError as exc:
            raise TriageError(f"cannot write {path}: {exc}") from None
        return path


def open_labels(ws: Workspace, user: str | None = None, journal: str = "wal") -> LabelStore:
    """The workspace's label store (created on first use)."""
    return LabelStore.for_workspace(ws, user=user, journal=journal)


__all__ = ["Current", "LabelEvent", "LabelStore", "TriageError", "labels_path", "open_labels"]
