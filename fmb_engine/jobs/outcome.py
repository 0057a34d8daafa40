"""A job's outcome record: the JSON file every FMB job writes itself, and the only one FMB reads.

submitit stores a job's result as a pickle (``<id>_0_result.pkl``); loading a pickle
runs whatever code it names, so a file planted in a job folder would run as the
user who looks at the job. FMB therefore never loads those pickles: the submitted
call (:class:`fmb_engine.jobs.calls.Call`) writes ``<id>_outcome.json`` next to
them, atomically and before the job process exits, with the status, a summary of
what the stage returned, and on failure the error line and the traceback text.
Readers use that record (and SLURM's own ``squeue``/``sacct``) and nothing else.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmb_engine.workspace import atomic_write_text

FORMAT = "fmb-job-outcome"
VERSION = 1
#: A record larger than this is not an FMB record (ours stay far below: outputs and traceback are capped).
MAX_RECORD_BYTES = 256 * 1024
MAX_OUTPUTS_CHARS = 4000
MAX_TRACEBACK_CHARS = 20_000


def outcome_path(folder: str | os.PathLike[str], job_id: str) -> Path:
    """Where job ``job_id`` of submitit folder ``folder`` writes its outcome record."""
    return Path(folder) / f"{job_id}_outcome.json"


def result_pickle_note(pickle_path: str | os.PathLike[str] | None) -> str | None:
    """What to say when only submitit's result pickle is there: it is never loaded, and why."""
    if not pickle_path or not Path(pickle_path).exists():
        return None
    return (f"its result is only in submitit's pickle {Path(pickle_path).name}, which FMB never loads "
            "(a pickle can run code); state from the process or SLURM only")


def last_error_line(trace: str) -> str:
    lines = [line for line in str(trace).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "error"


def summarise(value: Any) -> dict[str, Any] | None:
    """What a stage's return value says it wrote, as plain JSON values (names to paths or numbers)."""
    if value is None:
        return None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        out: dict[str, Any] = {k: (v if isinstance(v, int | float | bool) or v is None else str(v))
                               for k, v in value.items() if isinstance(v, str | Path | int | float | bool) or v is None}
    elif isinstance(value, str | Path):
        out = {"result": str(value)}
    elif isinstance(value, list | tuple) and all(isinstance(v, str | Path) for v in value):
        out = {str(i): str(v) for i, v in enumerate(value)}
    elif isinstance(getattr(value, "manifest", None), str | Path):  # a stage result object
        out = {"manifest": str(value.manifest)}
    else:
        out = {"result_type": type(value).__name__}
    if len(json.dumps(out, default=str)) > MAX_OUTPUTS_CHARS:
        out = {"note": f"{len(out)} outputs (too many to list)"}
    return out


@dataclass(frozen=True)
class Outcome:
    """What a job's outcome record says (``status`` "success" or "error"), or why it is unusable."""

    status: str  # "success" | "error" | "unreadable"
    outputs: dict[str, Any] | None = None
    error: str | None = None  # the last line of the traceback, or why the record is unreadable
    traceback: str | None = None

    @property
    def usable(self) -> bool:
        return self.status in ("success", "error")


def write_outcome(path: str | os.PathLike[str], status: str, *, value: Any = None, trace: str | None = None,
                  started: float | None = None, stage: str = "", function: str = "") -> Path:
    """Write the record atomically (temp + rename, mode by the workspace rule)."""
    record = {
        "format": FORMAT, "version": VERSION, "status": status, "stage": stage, "function": function,
        "outputs": summarise(value) if status == "success" else None,
        "error": last_error_line(trace) if trace else None,
        "traceback": trace[-MAX_TRACEBACK_CHARS:] if trace else None,
        "started": started, "ended": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
    }
    return atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")


def _unreadable(path: Path, why: str) -> Outcome:
    return Outcome("unreadable", error=f"outcome record {path} unreadable: {why}")


def read_outcome(path: str | os.PathLike[str] | None) -> Outcome | None:
    """The record at ``path``; None when there is none (yet); ``unreadable`` when it is not one of ours."""
    if path is None:
        return None
    path = Path(path)
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_RECORD_BYTES:
            return _unreadable(path, f"larger than {MAX_RECORD_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return _unreadable(path, f"not an {FORMAT} record")
    if data.get("version") != VERSION:
        return _unreadable(path, f"version {data.get('version')!r}, this FMB reads version {VERSION}")
    status = data.get("status")
    outputs = data.get("outputs")
    if status not in ("success", "error") or not (outputs is None or isinstance(outputs, dict)):
        return _unreadable(path, f"status {status!r} or outputs of type {type(outputs).__name__} not understood")
    texts = {k: data.get(k) if isinstance(data.get(k), str) else None for k in ("error", "traceback")}
    return Outcome(status, outputs, texts["error"] or (None if status == "success" else "error"), texts["traceback"])


__all__ = ["Outcome", "outcome_path", "read_outcome", "result_pickle_note", "summarise", "write_outcome"]
