"""A small SQLite database shared by several processes: the job registry and the label store.

Why one base: both are written by several processes at once (SLURM polls, TUI sessions of
several people), so both need the same care, and it should live in one place:

* ``isolation_level=None`` and explicit transactions: every change is one ``BEGIN IMMEDIATE``
  (the write lock is taken up front, so a read-modify-write never loses another writer's change);
* a busy timeout instead of immediate "database is locked" errors;
* the journal mode chosen by the caller (WAL: readers never block the writer; DELETE for
  filesystems without shared memory such as NFS used from several hosts);
* a schema version in ``PRAGMA user_version``, created once under the write lock (two processes
  opening a new file at once both succeed) and a clear error for a newer schema;
* group-readable file permissions for shared workspaces.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from fmb_engine.errors import FMBError
from fmb_engine.workspace import file_mode_for, make_dirs

BUSY_TIMEOUT_S = 30.0


class SQLiteStore:
    """One connection to one database file; calls are serialised by a lock (threads may share it)."""

    #: What the file is, for messages ("job registry").
    what: ClassVar[str]
    #: The error raised for every problem with the file.
    error: ClassVar[type[FMBError]]
    #: ``CREATE ...`` statements separated by ``;`` at the end of a line.
    schema: ClassVar[str]
    schema_version: ClassVar[int]
    #: What to tell the user when the write lock cannot be had.
    busy_hint: ClassVar[str] = "try again"
    foreign_keys: ClassVar[bool] = False
    #: ``synchronous`` under WAL (DELETE journals always use FULL).
    wal_synchronous: ClassVar[str] = "NORMAL"

    def __init__(self, path: str | os.PathLike[str], journal: str = "wal", busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            make_dirs(self.path.parent)
            created = not self.path.exists()
            self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self.error(f"cannot open the {self.what} {self.path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if self.foreign_keys:
            self._db.execute("PRAGMA foreign_keys = ON")
        self.journal = self._set_journal(journal)
        self._db.execute(f"PRAGMA synchronous = {self.wal_synchronous if self.journal == 'wal' else 'FULL'}")
        self._ensure_schema()
        if created:
            with contextlib.suppress(OSError):
                os.chmod(self.path, file_mode_for(self.path.parent))

    def _set_journal(self, journal: str) -> str:
        wanted = "WAL" if journal == "wal" else "DELETE"
        for attempt in range(50):  # another process may be switching the mode at this moment
            try:
                return str(self._db.execute(f"PRAGMA journal_mode = {wanted}").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self.error(f"{self.what} {self.path}: {exc}") from None
                time.sleep(0.05 * (attempt + 1))
        raise self.error(f"{self.what} {self.path} stayed locked while setting its journal mode")

    def _ensure_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == self.schema_version:
            return
        if version > self.schema_version:
            raise self.error(f"{self.what} {self.path} has schema version {version}, newer than this FMB "
                             f"understands ({self.schema_version}); upgrade FMB")
        with self.transaction() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won
                for statement in filter(None, (s.strip() for s in self.schema.split(";\n"))):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {self.schema_version}")
            # future migrations: `elif version == 1: ...` then bump user_version

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction (``BEGIN IMMEDIATE``: takes the write lock up front)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self.error(f"{self.what} {self.path} is busy ({exc}); {self.busy_hint}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise self.error(f"{self.what} {self.path}: commit failed ({exc}); nothing was saved") from None

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read snapshot across several SELECTs."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
