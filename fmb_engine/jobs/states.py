"""One state normaliser for every executor.

SLURM (``squeue`` long names and short codes, ``sacct`` names with their ``+`` and
``by <uid>`` decorations), submitit's ``LocalJob`` / ``DebugJob`` states and the
jobs' JSON outcome records (never submitit's result pickles) all map onto the nine
states of :class:`State`.
Nothing else in the engine interprets a raw state string.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from fmb_engine.jobs.outcome import Outcome, read_outcome


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
    "FINISHED": State.COMPLETED,
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


def _from_outcome(outcome: Outcome) -> Derived:
    return Derived(State.COMPLETED if outcome.status == "success" else State.FAILED, f"outcome:{outcome.status}",
                   outcome.error if outcome.status == "error" else None)


def derive_local(pid: str | int | None, folder: str, outcome_file: str | os.PathLike[str] | None,
                 cancel_requested: bool = False, started: bool = True, pickle_note: str | None = None,
                 attached: bool = False) -> Derived:
    """State of a ``LocalExecutor`` job from its controller PID and its outcome record.

    The PID is checked *before* the record is read: a job seen dead has already written
    its record, so a finished job is never mistaken for a crashed one. A job attached
    from elsewhere has no record (its result is only in submitit's pickle, never
    loaded): once ended it is UNKNOWN.
    """
    alive = False
    with contextlib.suppress(TypeError, ValueError):
        alive = pid_alive(int(pid), must_contain=str(folder)) if pid is not None else False
    outcome = read_outcome(outcome_file)
    if outcome is not None and outcome.usable:
        return _from_outcome(outcome)
    if alive:
        return Derived(State.RUNNING, "RUNNING")
    if cancel_requested:
        return Derived(State.CANCELLED, "INTERRUPTED", "cancelled by the user")
    if not started:
        return Derived(State.PENDING, "QUEUED")
    if outcome is not None:  # present but not ours or damaged
        return Derived(State.FAILED if not attached else State.UNKNOWN, "OUTCOME UNREADABLE", outcome.error)
    if attached:
        return Derived(State.UNKNOWN, "ENDED, NO OUTCOME RECORD",
                       "ended; " + (pickle_note or "no FMB outcome record (submitted outside FMB)"))
    return Derived(State.FAILED, "NO PROCESS AND NO OUTCOME",
                   "process ended without writing its outcome record (killed? see stderr)"
                   + (f"; {pickle_note}" if pickle_note else ""))


def derive_debug(outcome_file: str | os.PathLike[str] | None) -> Derived:
    """Debug jobs run in-process at submission; their outcome record says how it went."""
    outcome = read_outcome(outcome_file)
    if outcome is None:
        return Derived(State.UNKNOWN, "NO OUTCOME", "no outcome record (the submitting process ended early?)")
    if not outcome.usable:
        return Derived(State.FAILED, "OUTCOME UNREADABLE", outcome.error)
    return _from_outcome(outcome)
