"""One state normaliser for every executor.

SLURM (``squeue`` long names and short codes, ``sacct`` names with their ``+`` and
``by <uid>`` decorations), submitit's ``LocalJob`` / ``DebugJob`` states and the
result pickles submitit writes all map onto the nine states of :class:`State`.
Nothing else in the engine interprets a raw state string.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class State(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:  # rich tables, f-strings
        return self.value


#: States that never change again: the registry stops polling these jobs.
TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED, State.TIMEOUT, State.OUT_OF_MEMORY})
#: States worth polling. PREEMPTED is here on purpose: SLURM usually requeues a
#: preempted job (it comes back as PENDING); UNKNOWN may be a not-yet-visible job.
ACTIVE = frozenset(set(State) - TERMINAL)
#: Tasks that ``resubmit`` runs again (everything that ended without a result).
RESUBMITTABLE = frozenset({State.FAILED, State.CANCELLED, State.TIMEOUT, State.OUT_OF_MEMORY,
                           State.PREEMPTED, State.UNKNOWN})

#: Colour of each state in rich tables (CLI) and the TUI.
COLOURS = {
    State.PENDING: "yellow",
    State.RUNNING: "cyan",
    State.COMPLETED: "green",
    State.FAILED: "bold red",
    State.CANCELLED: "magenta",
    State.TIMEOUT: "red",
    State.PREEMPTED: "dark_orange",
    State.OUT_OF_MEMORY: "red",
    State.UNKNOWN: "dim",
}

_SLURM = {
    # waiting
    "PENDING": State.PENDING, "PD": State.PENDING,
    "REQUEUED": State.PENDING, "RQ": State.PENDING,
    "REQUEUE_HOLD": State.PENDING, "RH": State.PENDING,
    "REQUEUE_FED": State.PENDING, "RF": State.PENDING,
    "RESV_DEL_HOLD": State.PENDING, "RD": State.PENDING,
    "CONFIGURING": State.PENDING, "CF": State.PENDING,  # nodes booting: user code not started yet
    "SUSPENDED": State.PENDING, "S": State.PENDING,  # allocated but paused; resumes later
    "STOPPED": State.PENDING, "ST": State.PENDING,
    # running
    "RUNNING": State.RUNNING, "R": State.RUNNING,
    "COMPLETING": State.RUNNING, "CG": State.RUNNING,
    "SIGNALING": State.RUNNING, "SI": State.RUNNING,
    "STAGE_OUT": State.RUNNING, "SO": State.RUNNING,
    "RESIZING": State.RUNNING, "RS": State.RUNNING,
    # ended
    "COMPLETED": State.COMPLETED, "CD": State.COMPLETED,
    "FAILED": State.FAILED, "F": State.FAILED,
    "BOOT_FAIL": State.FAILED, "BF": State.FAILED,
    "NODE_FAIL": State.FAILED, "NF": State.FAILED,
    "SPECIAL_EXIT": State.FAILED, "SE": State.FAILED,
    "LAUNCH_FAILED": State.FAILED,
    "CANCELLED": State.CANCELLED, "CA": State.CANCELLED,
    "REVOKED": State.CANCELLED, "RV": State.CANCELLED,
    "TIMEOUT": State.TIMEOUT, "TO": State.TIMEOUT,
    "DEADLINE": State.TIMEOUT, "DL": State.TIMEOUT,
    "PREEMPTED": State.PREEMPTED, "PR": State.PREEMPTED,
    "OUT_OF_MEMORY": State.OUT_OF_MEMORY, "OOM": State.OUT_OF_MEMORY,
}

# submitit's own vocabulary (LocalJob, DebugJob, and its watcher's fallbacks).
_SUBMITIT = {
    "QUEUED": State.PENDING,
    "RUNNING": State.RUNNING,
    "DONE": State.COMPLETED,
    "FINISHED": State.COMPLETED,  # only when a result file says success: see derive_from_files
    "INTERRUPTED": State.CANCELLED,
    "CANCELLED": State.CANCELLED,
    "NO PROCESS AND NO RESULT": State.UNKNOWN,
    "UNKNOWN": State.UNKNOWN,
    "READY": State.PENDING,
}


def clean_raw(raw: str | None) -> str:
    """``"cancelled by 1234+"`` -> ``"CANCELLED"``: upper case, no ``by <uid>``, no ``+``."""
    text = (raw or "").strip().upper()
    text = re.sub(r"\s+BY\s+\S+.*$", "", text)  # "CANCELLED by 0"
    text = text.rstrip("+* ").strip()  # sacct truncation marker, odd decorations
    return text.split()[0] if text else ""


def normalise_slurm(raw: str | None) -> State:
    """Any SLURM state string (long name, short code, sacct decoration) -> :class:`State`."""
    text = clean_raw(raw)
    if not text:
        return State.UNKNOWN
    if text in _SLURM:
        return _SLURM[text]
    # squeue/sacct sometimes glue flags to the state ("RUNNING,COMPLETING" style or "PENDING(Resources)")
    head = re.split(r"[,(]", text, maxsplit=1)[0]
    return _SLURM.get(head, State.UNKNOWN)


def normalise(raw: str | None, executor: str) -> State:
    """The one entry point: a raw state from ``executor`` (slurm, local, debug) -> :class:`State`."""
    if executor == "slurm":
        return normalise_slurm(raw)
    text = (raw or "").strip().upper()
    if text in _SUBMITIT:
        return _SUBMITIT[text]
    return normalise_slurm(raw)  # submitit may hand back SLURM-like strings


def is_terminal(state: State | str) -> bool:
    return State(state) in TERMINAL


# --- pending reasons ---------------------------------------------------------------------

_REASONS = {
    "Resources": "waiting for free resources (nodes, GPUs or memory)",
    "Priority": "other jobs have higher priority",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "a job it depends on failed: it will never start (cancel it)",
    "JobArrayTaskLimit": "array task limit reached (jobs.array_parallelism)",
    "BeginTime": "not allowed to start yet (begin time or requeue delay)",
    "JobHeldUser": "held by the user (scontrol release to start it)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "a requested node is unavailable (down, drained or reserved)",
    "PartitionTimeLimit": "time limit exceeds the partition's maximum (lower jobs.timeout_min)",
    "PartitionNodeLimit": "node count outside the partition's limits",
    "PartitionConfig": "asks for more than the partition's nodes have (CPUs, memory or GPUs): it will never start",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "NodeDown": "a node it needs is down",
    "QOSMaxJobsPerUserLimit": "QOS limit on jobs per user reached",
    "QOSMaxSubmitJobPerUserLimit": "QOS limit on submitted jobs per user reached",
    "QOSGrpGRES": "QOS group GPU/GRES limit reached",
    "AssocGrpGRES": "account GPU/GRES limit reached",
    "AssocGrpCPULimit": "account CPU limit reached",
    "AssocMaxJobsLimit": "account limit on running jobs reached",
    "InvalidAccount": "invalid account (check jobs.account)",
    "InvalidQOS": "invalid QOS (check jobs.qos)",
    "Reservation": "waiting for its reservation",
    "launch failed requeued held": "launch failed: requeued and held (scontrol release)",
    "None": "",
}


def explain_reason(reason: str | None) -> str:
    """A short human explanation of a SLURM pending reason ("" when there is nothing to say)."""
    if not reason or reason in ("None", "(null)", "N/A"):
        return ""
    code = reason.strip("() ")
    text = _REASONS.get(code)
    if text is None:
        for key, value in _REASONS.items():
            if code.startswith(key) and value:
                return value
        return code
    return text


# --- result files (local and debug executors; a cross-check for SLURM) ---------------------


@dataclass(frozen=True)
class ResultInfo:
    """What a submitit result pickle says: ``("success", value)`` or ``("error", traceback)``."""

    outcome: str  # "success" | "error" | "unreadable"
    value: object = None
    error: str | None = None

    @property
    def state(self) -> State:
        return State.COMPLETED if self.outcome == "success" else State.FAILED


#: Results bigger than this are not unpickled by the monitor (the state needs only the outcome).
MAX_RESULT_BYTES = 4 * 1024 * 1024


def last_error_line(trace: str) -> str:
    lines = [line for line in str(trace).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "error"


def read_result(path: str | os.PathLike[str] | None) -> ResultInfo | None:
    """Read a submitit result pickle; None when it does not exist (yet).

    Only files the engine's own jobs wrote in the workspace are read (unpickling runs code).
    """
    if path is None:
        return None
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size > MAX_RESULT_BYTES:
        # Too big to load just for a state: the outcome tag sits in the first bytes.
        with path.open("rb") as fh:
            head = fh.read(64)
        return ResultInfo("error" if b"error" in head else "success", None, None)
    try:
        with path.open("rb") as fh:
            outcome, value = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - a half-written or foreign file
        return ResultInfo("unreadable", None, f"result file unreadable: {type(exc).__name__}: {exc}")
    if outcome == "error":
        return ResultInfo("error", None, str(value))
    return ResultInfo("success", value, None)


def pid_alive(pid: int, must_contain: str | None = None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process, optionally whose command line contains a text.

    The text check guards against PID reuse: a local job's controller runs
    ``python -m submitit.local._local <folder>``.
    """
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return False
        if must_contain is None:
            return True
        with contextlib.suppress(OSError):
            return must_contain in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return False
    if not os.path.isdir("/proc"):  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return False


@dataclass(frozen=True)
class Derived:
    state: State
    raw: str
    error: str | None = None


def derive_local(pid: str | int | None, folder: str, result_pickle: str | None,
                 cancel_requested: bool = False, started: bool = True) -> Derived:
    """State of a ``LocalExecutor`` job from its controller PID and its result file.

    The PID is checked *before* the result file: a job seen dead has already written
    its result, so a finished job is never mistaken for a crashed one.
    """
    alive = False
    with contextlib.suppress(TypeError, ValueError):
        alive = pid_alive(int(pid), must_contain=str(folder)) if pid is not None else False
    result = read_result(result_pickle)
    if result is not None and result.outcome != "unreadable":
        return Derived(result.state, f"result:{result.outcome}", result.error and last_error_line(result.error))
    if alive:
        return Derived(State.RUNNING, "RUNNING")
    if cancel_requested:
        return Derived(State.CANCELLED, "INTERRUPTED", "cancelled by the user")
    if not started:
        return Derived(State.PENDING, "QUEUED")
    note = result.error if result is not None else "process ended without writing a result (killed? see stderr)"
    return Derived(State.FAILED, "NO PROCESS AND NO RESULT", note)


def derive_debug(result_pickle: str | None) -> Derived:
    """Debug jobs run in-process at submission; their result file says how it went."""
    result = read_result(result_pickle)
    if result is None:
        return Derived(State.UNKNOWN, "NO RESULT", "no result file (the submitting process ended early?)")
    return Derived(result.state, f"result:{result.outcome}", result.error and last_error_line(result.error))
