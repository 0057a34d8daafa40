"""The job registry: one SQLite file per workspace, ``jobs/registry.sqlite``.

It records every submitted run (a stage submitted once: one job, or one job array)
and every job of it (array tasks are separate rows linked to their run): the
executor, the submitit folder, job ids, times, the normalised state, exit
information, outputs and the pending reason.

Safe with a TUI and several CLIs at once:

* WAL journal (readers never block the writer), a busy timeout, and every write in
  one ``BEGIN IMMEDIATE`` transaction, so a reader sees a run with all of its jobs
  or not at all;
* the schema version lives in ``PRAGMA user_version``; a newer file is refused with
  a clear error instead of being misread.

The registry is written from the submit host only (the login node running the CLI
or TUI); compute jobs never touch it. SQLite's WAL mode needs every writer on one
host: on a filesystem without shared-memory support set ``jobs.registry_journal:
delete``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fmb_engine.jobs import JobsError
from fmb_engine.jobs.outcome import outcome_path
from fmb_engine.jobs.states import ACTIVE, State
from fmb_engine.sqlite_store import SQLiteStore
from fmb_engine.workspace import Workspace

SCHEMA_VERSION = 1
REGISTRY_NAME = "registry.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    stage       TEXT NOT NULL,
    executor    TEXT NOT NULL CHECK (executor IN ('local', 'slurm', 'debug')),
    folder      TEXT NOT NULL,
    config_json TEXT NOT NULL DEFAULT '{}',
    params_json TEXT NOT NULL DEFAULT '{}',
    created     REAL NOT NULL,
    n_tasks     INTEGER NOT NULL,
    is_array    INTEGER NOT NULL DEFAULT 0,
    host        TEXT,
    user        TEXT,
    note        TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    key              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    job_id           TEXT NOT NULL,
    array_job_id     TEXT,
    task_index       INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 1,
    state            TEXT NOT NULL,
    raw_state        TEXT,
    reason           TEXT,
    exit_code        TEXT,
    error            TEXT,
    submitted        REAL NOT NULL,
    started          REAL,
    ended            REAL,
    node             TEXT,
    stdout           TEXT,
    stderr           TEXT,
    result_pickle    TEXT,
    submitted_pickle TEXT,
    outputs_json     TEXT,
    args_repr        TEXT,
    cancel_requested REAL,
    superseded_by    INTEGER REFERENCES jobs(key),
    last_polled      REAL,
    last_seen        REAL,
    updated          REAL NOT NULL,
    UNIQUE (run_id, job_id)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_job_id ON jobs(job_id);
CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_job_id);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
"""

#: Columns that ``update_jobs`` may change (a whitelist: column names never come from input).
UPDATABLE = frozenset({
    "state", "raw_state", "reason", "exit_code", "error", "started", "ended", "node", "stdout",
    "stderr", "result_pickle", "outputs_json", "cancel_requested", "superseded_by", "last_polled",
    "last_seen",
})


def new_run_id(stage: str) -> str:
    """``20261128T091200-embed.astropt-a1b2c3``: sortable, unique, readable."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in stage) or "run"
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{safe}-{secrets.token_hex(3)}"


@dataclass
class RunRecord:
    run_id: str
    stage: str
    executor: str
    folder: str
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    n_tasks: int = 1
    is_array: bool = False
    host: str | None = None
    user: str | None = None
    note: str | None = None

    def phase_of(self, task_index: int) -> str | None:
        """The phase of a task of a chain run (``fit``, ``shard 2/4``, ``merge``; :mod:`fmb_engine.jobs.chain`),
        None for other runs."""
        chain = self.config.get("chain")
        for phase in chain.get("phases", []) if isinstance(chain, dict) else []:
            tasks = list(phase.get("tasks", []))
            if task_index in tasks:
                if phase.get("name") == "shard":
                    return f"shard {tasks.index(task_index)}/{len(tasks)}"
                return str(phase.get("name"))
        return None


@dataclass
class JobRecord:
    run_id: str
    job_id: str
    state: State = State.PENDING
    submitted: float = field(default_factory=time.time)
    array_job_id: str | None = None
    task_index: int = 0
    attempt: int = 1
    raw_state: str | None = None
    reason: str | None = None
    exit_code: str | None = None
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    node: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    result_pickle: str | None = None
    submitted_pickle: str | None = None
    outputs: dict[str, Any] | None = None
    args_repr: str | None = None
    cancel_requested: float | None = None
    superseded_by: int | None = None
    last_polled: float | None = None
    last_seen: float | None = None
    updated: float | None = None
    key: int | None = None
    # joined from runs (read-only)
    executor: str | None = None
    folder: str | None = None
    stage: str | None = None
    attached: bool = False  # registered by `jobs attach`: submitted outside FMB, so no outcome record

    @property
    def active(self) -> bool:
        return self.state in ACTIVE and self.superseded_by is None

    @property
    def submitit_folder(self) -> str:
        """This job's submitit folder (a resubmission lives in a sub-folder of its run's)."""
        if self.submitted_pickle:
            return str(Path(self.submitted_pickle).parent)
        return str(self.folder or "")

    @property
    def outcome_file(self) -> Path:
        """The JSON outcome record this job writes (the only result file FMB reads)."""
        return outcome_path(self.submitit_folder, self.job_id)


_JOINED = ("executor", "folder", "stage", "attached")
_JOB_COLUMNS = [f.name for f in fields(JobRecord) if f.name not in ("key", "outputs", *_JOINED)]


def _job_from_row(row: sqlite3.Row) -> JobRecord:
    data = {k: row[k] for k in row.keys() if k in {f.name for f in fields(JobRecord)}}
    data["state"] = State(row["state"]) if row["state"] in State.__members__ else State.UNKNOWN
    data["outputs"] = json.loads(row["outputs_json"]) if row["outputs_json"] else None
    if "attached" in data:
        data["attached"] = bool(data["attached"])
    return JobRecord(**data)


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"], stage=row["stage"], executor=row["executor"], folder=row["folder"],
        config=json.loads(row["config_json"] or "{}"), params=json.loads(row["params_json"] or "{}"),
        created=row["created"], n_tasks=row["n_tasks"], is_array=bool(row["is_array"]),
        host=row["host"], user=row["user"], note=row["note"],
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Registry(SQLiteStore):
    """A connection to one registry file. Cheap to open; use one per thread (or share: calls are locked)."""

    what = "job registry"
    error = JobsError
    schema = _SCHEMA
    schema_version = SCHEMA_VERSION
    foreign_keys = True

    @classmethod
    def for_workspace(cls, ws: Workspace, journal: str = "wal") -> Registry:
        return cls(ws.folder("jobs") / REGISTRY_NAME, journal=journal)

    # --- writing ---------------------------------------------------------------------------

    def add_run(self, run: RunRecord, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Record a run and all of its jobs in one transaction; returns the jobs with their keys."""
        run.host = run.host or socket.gethostname()
        if run.user is None:
            with contextlib.suppress(Exception):
                run.user = getpass.getuser()
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO runs (run_id, stage, executor, folder, config_json, params_json, created, "
                    "n_tasks, is_array, host, user, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run.run_id, run.stage, run.executor, run.folder, _json(run.config), _json(run.params),
                     run.created, run.n_tasks, int(run.is_array), run.host, run.user, run.note),
                )
            except sqlite3.IntegrityError as exc:
                raise JobsError(f"run {run.run_id} cannot be recorded: {exc}") from None
            return self._insert_jobs(db, run, jobs)

    def add_jobs(self, run_id: str, jobs: Sequence[JobRecord], supersede: dict[int, int] | None = None) -> list[JobRecord]:
        """Add jobs to an existing run (a resubmission); ``supersede`` maps old key -> index in ``jobs``."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise JobsError(f"no run {run_id!r} in the registry")
            run = _run_from_row(row)
            added = self._insert_jobs(db, run, jobs)
            for old_key, index in (supersede or {}).items():
                db.execute("UPDATE jobs SET superseded_by = ?, updated = ? WHERE key = ?",
                           (added[index].key, time.time(), old_key))
            total = db.execute("SELECT COUNT(*) FROM jobs WHERE run_id = ? AND superseded_by IS NULL",
                               (run_id,)).fetchone()[0]
            db.execute("UPDATE runs SET n_tasks = MAX(n_tasks, ?) WHERE run_id = ?", (total, run_id))
            return added

    def _insert_jobs(self, db: sqlite3.Connection, run: RunRecord, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        out = []
        now = time.time()
        for job in jobs:
            job.run_id = run.run_id
            job.updated = now
            values = {c: getattr(job, c) for c in _JOB_COLUMNS}
            values["state"] = State(job.state).value
            values["outputs_json"] = _json(job.outputs) if job.outputs is not None else None
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            try:
                cursor = db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", tuple(values.values()))
            except sqlite3.IntegrityError as exc:
                raise JobsError(f"job {job.job_id} of run {run.run_id} cannot be recorded: {exc}") from None
            job.key = cursor.lastrowid
            job.executor, job.folder, job.stage = run.executor, run.folder, run.stage
            job.attached = "attached" in run.config
            out.append(job)
        return out

    def update_jobs(self, updates: dict[int, dict[str, Any]]) -> int:
        """Apply ``{key: {column: value}}`` in one transaction; returns the number of rows changed."""
        if not updates:
            return 0
        now = time.time()
        changed = 0
        with self.transaction() as db:
            for key, values in updates.items():
                values = dict(values)
                if "outputs" in values:
                    outputs = values.pop("outputs")
                    values["outputs_json"] = _json(outputs) if outputs is not None else None
                if "state" in values:
                    values["state"] = State(values["state"]).value
                bad = set(values) - UPDATABLE - {"outputs_json"}
                if bad:
                    raise ValueError(f"not updatable: {sorted(bad)}")
                if not values:
                    continue
                values["updated"] = now
                assignments = ", ".join(f"{name} = ?" for name in values)
                cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE key = ?", (*values.values(), key))
                changed += cursor.rowcount
        return changed

    def delete_run(self, run_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # --- reading ---------------------------------------------------------------------------

    _JOIN = ("SELECT jobs.*, runs.executor, runs.folder, runs.stage, "
             "json_extract(runs.config_json, '$.attached') IS NOT NULL AS attached FROM jobs JOIN runs USING (run_id)")

    def run(self, run_id: str) -> RunRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise JobsError(f"no run {run_id!r} in the registry")
        return _run_from_row(row)

    def runs(self, stage: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        sql = "SELECT * FROM runs"
        args: list[Any] = []
        if stage:
            sql += " WHERE stage = ?"
            args.append(stage)
        sql += " ORDER BY created DESC, run_id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            return [_run_from_row(r) for r in self._db.execute(sql, args).fetchall()]

    def jobs(self, run_id: str | None = None, include_superseded: bool = False,
             states: Iterable[State] | None = None) -> list[JobRecord]:
        sql = self._JOIN + " WHERE 1=1"
        args: list[Any] = []
        if run_id is not None:
            sql += " AND jobs.run_id = ?"
            args.append(run_id)
        if not include_superseded:
            sql += " AND jobs.superseded_by IS NULL"
        if states is not None:
            wanted = [State(s).value for s in states]
            sql += f" AND jobs.state IN ({', '.join('?' for _ in wanted)})"
            args.extend(wanted)
        sql += " ORDER BY runs.created DESC, jobs.run_id, jobs.task_index, jobs.attempt"
        with self._lock:
            return [_job_from_row(r) for r in self._db.execute(sql, args).fetchall()]

    def active_jobs(self) -> list[JobRecord]:
        """Jobs worth polling: not in a terminal state and not superseded by a resubmission."""
        return self.jobs(states=ACTIVE)

    def job(self, key: int) -> JobRecord:
        with self._lock:
            row = self._db.execute(self._JOIN + " WHERE jobs.key = ?", (key,)).fetchone()
        if row is None:
            raise JobsError(f"no job with key {key} in the registry")
        return _job_from_row(row)

    def snapshot(self) -> tuple[list[RunRecord], list[JobRecord]]:
        """Every run and current job, read in one consistent snapshot (for a TUI refresh)."""
        with self.reading() as db:
            runs = [_run_from_row(r) for r in db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()]
            jobs = [_job_from_row(r) for r in db.execute(
                self._JOIN + " WHERE jobs.superseded_by IS NULL ORDER BY jobs.run_id, jobs.task_index").fetchall()]
        return runs, jobs

    def resolve(self, ref: str) -> tuple[RunRecord, list[JobRecord]]:
        """Find what ``ref`` names: a run id (or a unique prefix), a job id (``123``, ``123_4``,
        a local PID) or a SLURM array id (all of its tasks)."""
        ref = str(ref).strip()
        if not ref:
            raise JobsError("empty job reference")
        with self.reading() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (ref,)).fetchone()
            if row is not None:
                run = _run_from_row(row)
                return run, self._current_jobs(db, run.run_id)
            hits = db.execute(self._JOIN + " WHERE jobs.job_id = ? ORDER BY jobs.submitted DESC", (ref,)).fetchall()
            if not hits:
                hits = db.execute(self._JOIN + " WHERE jobs.array_job_id = ? ORDER BY jobs.task_index",
                                  (ref,)).fetchall()
                if hits:
                    run_ids = {h["run_id"] for h in hits}
                    if len(run_ids) == 1:
                        run = _run_from_row(db.execute("SELECT * FROM runs WHERE run_id = ?",
                                                       (hits[0]["run_id"],)).fetchone())
                        return run, [_job_from_row(h) for h in hits if h["superseded_by"] is None] or [
                            _job_from_row(h) for h in hits]
            if hits:
                run_ids = {h["run_id"] for h in hits}
                if len(run_ids) > 1:
                    raise JobsError(f"job id {ref} is recorded in several runs ({', '.join(sorted(run_ids))}); "
                                    "give the run id instead")
                row = db.execute("SELECT * FROM runs WHERE run_id = ?", (hits[0]["run_id"],)).fetchone()
                return _run_from_row(row), [_job_from_row(hits[0])]
            prefixed = db.execute("SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY created DESC",
                                  (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",)).fetchall()
            if len(prefixed) == 1:
                run = _run_from_row(prefixed[0])
                return run, self._current_jobs(db, run.run_id)
            if len(prefixed) > 1:
                names = ", ".join(r["run_id"] for r in prefixed[:5])
                raise JobsError(f"{ref!r} matches several runs ({names}{', ...' if len(prefixed) > 5 else ''})")
        raise JobsError(f"no run or job {ref!r} in the registry (see `fmb-engine jobs list`)")

    def _current_jobs(self, db: sqlite3.Connection, run_id: str) -> list[JobRecord]:
        rows = db.execute(self._JOIN + " WHERE jobs.run_id = ? AND jobs.superseded_by IS NULL "
                          "ORDER BY jobs.task_index, jobs.attempt", (run_id,)).fetchall()
        return [_job_from_row(r) for r in rows]

    def counts(self, run_id: str) -> dict[State, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) AS n FROM jobs WHERE run_id = ? AND superseded_by IS NULL GROUP BY state",
                (run_id,),
            ).fetchall()
        return {State(r["state"]): r["n"] for r in rows}


def run_state(counts: dict[State, int]) -> State:
    """One state for a whole run: the most telling state among its jobs."""
    if not counts:
        return State.UNKNOWN
    for state in (State.RUNNING, State.PENDING, State.PREEMPTED, State.UNKNOWN):
        if counts.get(state):
            return state
    for state in (State.OUT_OF_MEMORY, State.TIMEOUT, State.FAILED, State.CANCELLED):
        if counts.get(state):
            return state
    return State.COMPLETED


def open_registry(ws: Workspace, journal: str = "wal") -> Registry:
    """The workspace's registry (created on first use)."""
    return Registry.for_workspace(ws, journal=journal)


@contextlib.contextmanager
def borrow_or_open(ws: Workspace, registry: Registry | None = None, journal: str = "wal") -> Iterator[Registry]:
    """``registry`` when the caller lends one (it stays open), else the workspace's, opened here and
    closed on the way out: functions that take an optional registry use it once, the same way."""
    if registry is not None:
        yield registry
        return
    with open_registry(ws, journal) as reg:
        yield reg
