"""Monitoring: poll once and update the registry; read and follow job logs.

:func:`refresh` asks each executor kind once about every job of it that is not finished
(:mod:`fmb_engine.jobs.executors`: one batched ``squeue`` + ``sacct`` for SLURM jobs, the
controller PID and outcome record for local jobs, the outcome record for debug jobs). States always come from that poll,
never from submitit's cached ``job.state`` (minutes stale by design), and results
only from the jobs' JSON outcome records (:mod:`fmb_engine.jobs.outcome`): submitit's
result pickles are never loaded. All changes are written in one registry transaction.

:func:`logs` reads a job's stdout or stderr; ``follow=True`` keeps reading by
*polling* the file size (no inotify: it does not fire on NFS/Lustre, where SLURM
logs live).
"""

from __future__ import annotations

import codecs
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmb_engine.jobs import JobsError
from fmb_engine.jobs.executors import KINDS
from fmb_engine.jobs.registry import JobRecord, Registry, borrow_or_open, open_registry
from fmb_engine.jobs.states import TERMINAL, State
from fmb_engine.workspace import Workspace

#: UNKNOWN jobs older than this are no longer polled (they would only widen every sacct query).
STALE_AFTER_S = 7 * 24 * 3600.0


@dataclass
class RefreshReport:
    polled: int = 0
    changed: int = 0
    problems: list[str] = field(default_factory=list)
    by_executor: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _changes(job: JobRecord, new: dict[str, Any]) -> dict[str, Any]:
    """Only the columns whose value differs (plus the poll time)."""
    out = {}
    for key, value in new.items():
        current = getattr(job, key if key != "outputs_json" else "outputs", None)
        if key == "state":
            current = job.state
            value = State(value)
        if value != current:
            out[key] = value
    return out


def refresh(ws: Workspace, registry: Registry | None = None, jobs: Sequence[JobRecord] | None = None,
            runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
            now: float | None = None) -> RefreshReport:
    """Poll once for every non-terminal job (or just ``jobs``) and update the registry.

    Each executor kind is asked once about all of its jobs (:meth:`ExecutorKind.poll
    <fmb_engine.jobs.executors.ExecutorKind.poll>`); a job of a kind this FMB does not know
    is left as it is.
    """
    t0 = time.perf_counter()
    with borrow_or_open(ws, registry) as reg:
        now = time.time() if now is None else now
        todo = [j for j in (jobs if jobs is not None else reg.active_jobs())
                if j.state not in TERMINAL and j.superseded_by is None
                and not (j.state is State.UNKNOWN and now - j.submitted > STALE_AFTER_S)]
        report = RefreshReport(polled=len(todo))
        updates: dict[int, dict[str, Any]] = {}
        for name, kind in KINDS.items():
            of_kind = [j for j in todo if j.executor == name]
            if of_kind:
                polled = kind.poll(of_kind, now, runner)
                report.problems.extend(polled.problems)
                updates.update(polled.updates)
        for job in todo:
            report.by_executor[job.executor or "?"] = report.by_executor.get(job.executor or "?", 0) + 1
        changed = {}
        for job in todo:
            diff = _changes(job, updates.get(job.key, {}))  # type: ignore[arg-type]
            diff["last_polled"] = now
            changed[job.key] = diff
        reg.update_jobs(changed)  # type: ignore[arg-type]
        report.changed = sum(1 for d in changed.values() if set(d) - {"last_polled", "last_seen"})
        report.seconds = time.perf_counter() - t0
        return report


def wait(ws: Workspace, run_id: str, timeout_s: float = 600.0, poll_s: float = 2.0,
         registry: Registry | None = None) -> list[JobRecord]:
    """Poll until every current job of ``run_id`` is terminal; returns them. Raises on timeout."""
    with borrow_or_open(ws, registry) as reg:
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = reg.jobs(run_id)
            refresh(ws, registry=reg, jobs=jobs)
            jobs = reg.jobs(run_id)
            if all(j.state in TERMINAL for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                states = ", ".join(f"{j.job_id}={j.state.value}" for j in jobs)
                raise JobsError(f"run {run_id} not finished after {timeout_s:.0f}s: {states}")
            time.sleep(poll_s)


# --- logs -------------------------------------------------------------------------------------


def log_path(job: JobRecord, stderr: bool = False) -> Path:
    path = job.stderr if stderr else job.stdout
    if not path:
        raise JobsError(f"job {job.job_id} has no recorded {'stderr' if stderr else 'stdout'} path")
    return Path(path)


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` start."""
    size = path.stat().st_size
    block = 8192
    pos = size
    found = 0
    while pos > 0:
        step = min(block, pos)
        pos -= step
        with path.open("rb") as fh:
            fh.seek(pos)
            chunk = fh.read(step)
        for i in range(len(chunk) - 1, -1, -1):
            if chunk[i] == 0x0A and pos + i < size - 1:
                found += 1
                if found == lines:
                    return pos + i + 1
    return 0


def logs(job: JobRecord, follow: bool = False, stderr: bool = False, tail: int | None = None,
         poll_s: float = 0.5, should_stop: Callable[[], bool] | None = None,
         wait_for_file_s: float | None = None) -> Iterator[str]:
    """Yield the text of a job's log as it grows.

    Without ``follow`` it yields what is there and stops. With ``follow`` it polls the
    file every ``poll_s`` seconds until ``should_stop()`` returns True (then drains what
    is left). A file that does not exist yet is waited for while following; a file
    that shrank (rewritten) is read again from the start.
    """
    path = log_path(job, stderr)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset: int | None = None
    waited = 0.0
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if not follow:
                if wait_for_file_s and waited < wait_for_file_s:
                    time.sleep(poll_s)
                    waited += poll_s
                    continue
                raise JobsError(f"no log yet for job {job.job_id}: {path} does not exist "
                                f"(state {job.state.value}; a pending job has no log)") from None
            if should_stop is not None and should_stop():
                return
            time.sleep(poll_s)
            continue
        if offset is None:
            offset = _tail_offset(path, tail) if tail else 0
        if size < offset:
            offset = 0
            decoder.reset()
            yield f"\n[log {path.name} was rewritten; reading it again from the start]\n"
        if size > offset:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(size - offset)
            offset += len(data)
            text = decoder.decode(data)
            if text:
                yield text
            continue
        if not follow:
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
            return
        if should_stop is not None and should_stop():
            # one last look: the job may have written its final lines just before ending
            if path.stat().st_size > offset:
                continue
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
            return
        time.sleep(poll_s)


def stop_when_terminal(ws: Workspace, job: JobRecord, every_s: float = 5.0) -> Callable[[], bool]:
    """A ``should_stop`` for :func:`logs`: refreshes the job every ``every_s`` seconds."""
    last = [0.0]
    done = [job.state in TERMINAL]

    def check() -> bool:
        if done[0]:
            return True
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            with open_registry(ws) as reg:
                refresh(ws, registry=reg, jobs=[reg.job(job.key)])  # type: ignore[arg-type]
                done[0] = reg.job(job.key).state in TERMINAL  # type: ignore[arg-type]
        return done[0]

    return check
