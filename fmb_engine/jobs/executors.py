"""Executor kinds: one class per way of running a submitted job, behind one interface.

submitit has one executor class per kind (``LocalExecutor``, ``SlurmExecutor``,
``DebugExecutor``). Each :class:`ExecutorKind` here stands for one of them and holds
everything FMB does differently per kind, so nothing else branches on an executor's name:

* whether it can run on this machine, and why not (SLURM needs ``sbatch``/``srun`` on PATH);
* which ``jobs`` settings it takes and which it ignores (:func:`check_settings` refuses
  those, never silently dropping them);
* the submitit executor it builds and the parameters it hands over;
* how it submits a list of calls (one ``sbatch --array`` on SLURM, one process per call
  locally, in this process at once for debug);
* how it cancels (``scancel``, or SIGINT to a local job's controller);
* how one poll turns what it says about its jobs into registry updates (one batched
  ``squeue`` + ``sacct`` for SLURM, the controller PID and outcome record for local jobs,
  the outcome record alone for debug jobs).

:data:`KINDS` maps the names used by ``jobs.executor`` / ``--executor`` (and stored in the
registry) to the kinds; :func:`choose_executor` resolves a request, ``auto`` included.

* The executor is always explicit: ``--executor`` or ``jobs.executor``. submitit's
  own ``AutoExecutor`` silently falls back to local execution when ``srun`` is
  missing; here ``slurm`` without ``sbatch``/``srun`` on PATH is an error, and
  ``auto`` says which executor it chose and why.
* Jobs run with the interpreter that submitted them (or ``jobs.python``), so the
  job sees the same virtual environment.

This module stays light (monitoring and ``fmb-engine jobs executors`` use it):
submitit itself is imported only when an executor is built.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fmb_engine.config import Resolved
from fmb_engine.jobs import JobsError
from fmb_engine.jobs import slurm as slurm_cli
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.outcome import outcome_path, read_outcome, result_pickle_note
from fmb_engine.jobs.registry import JobRecord
from fmb_engine.jobs.states import TERMINAL, Derived, State, derive_debug, derive_local, pid_alive
from fmb_engine.workspace import Workspace, make_dirs

if TYPE_CHECKING:
    import submitit

    from fmb_engine.jobs.calls import Call

#: A SLURM job neither squeue nor sacct knows becomes UNKNOWN after this long
#: (sacct can lag a few seconds behind the controller).
VANISH_GRACE_S = 120.0

_SLURM_ONLY = ("partition", "account", "qos", "constraint", "cpus_per_task", "mem_gb", "array_parallelism", "setup",
               "signal_delay_s", "sbatch_extra")


@dataclass(frozen=True)
class Availability:
    """Whether a kind can run jobs on this machine: ``state`` is available, unavailable or
    doubtful (its commands exist but the cluster did not answer); ``detail`` says why."""

    state: str
    detail: str


@dataclass
class Polled:
    """One poll of a kind's jobs: the registry updates by job key, and what went wrong asking."""

    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _ended_at(job: JobRecord, now: float) -> float:
    """When a finished job ended: its outcome record's time, else now."""
    try:
        return job.outcome_file.stat().st_mtime
    except OSError:
        return now


class ExecutorKind(ABC):
    """One kind of executor: what FMB does differently for it, from submission to polling."""

    #: The name in ``jobs.executor``, ``--executor`` and the registry.
    name: ClassVar[str]
    #: ``jobs`` settings it does not use (set in a task config they are errors, see :func:`check_settings`).
    ignored_settings: ClassVar[tuple[str, ...]] = ()
    #: Its jobs' states are known here without asking a controller, so a submission polls them at once.
    polled_at_submission: ClassVar[bool] = False
    #: A later submission can be made to start only once earlier jobs succeeded (``after`` of
    #: :meth:`build`): a scheduler dependency, or jobs that have ended when their submission returns.
    #: A kind without it runs a chain of phases as one job (:mod:`fmb_engine.jobs.chain`).
    chains: ClassVar[bool] = False

    @abstractmethod
    def where(self) -> str:
        """Where the jobs of a submission go, for its note."""

    def refusal(self, origin: str) -> str | None:
        """Why this kind cannot be used on this machine although ``origin`` asked for it (None: it can)."""
        return None

    def availability(self) -> Availability:
        """What ``fmb-engine jobs executors`` says about this kind here (may ask the cluster)."""
        return Availability("available", self.where())

    # --- building and submitting ---

    def parameters(self, cfg: JobsConfig, job_name: str) -> dict[str, Any]:
        """The ``update_parameters`` keywords for submitit's ``AutoExecutor``."""
        params: dict[str, Any] = {
            "name": job_name,
            "timeout_min": cfg.timeout_min,
            "cpus_per_task": cfg.cpus_per_task,
            "gpus_per_node": cfg.gpus_per_node,
        }
        if cfg.mem_gb is not None:
            params["mem_gb"] = cfg.mem_gb
        return params

    def options(self, cfg: JobsConfig) -> dict[str, Any]:
        """The ``AutoExecutor`` constructor keywords of this kind (its interpreter and requeue count)."""
        return {}

    def wait_for(self, params: dict[str, Any], after: Sequence[str]) -> dict[str, Any]:
        """``params`` with the jobs to submit made to wait for the jobs ``after`` to succeed (only kinds that chain)."""
        if after:
            raise JobsError(f"the {self.name} executor cannot make jobs wait for others")
        return params

    def build(self, folder: Path, cfg: JobsConfig, job_name: str, after: Sequence[str] = ()) -> submitit.Executor:
        """A submitit executor of this kind writing into ``folder`` (made here with the workspace's mode);
        its jobs start once the jobs ``after`` succeeded (:attr:`chains`)."""
        import submitit

        make_dirs(folder)
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=self.name, **self.options(cfg))
            executor.update_parameters(**self.wait_for(self.parameters(cfg, job_name), after))
        except (ValueError, NameError, AssertionError, RuntimeError) as exc:
            raise JobsError(f"invalid {self.name} executor parameters: {exc}") from None
        return executor

    def folder_warnings(self, folder: Path) -> list[str]:
        """Warnings about where the submitit folder is (none unless the jobs run elsewhere)."""
        return []

    def submit(self, ex: submitit.Executor, calls: Sequence[Call], is_array: bool) -> list[Any]:
        """Hand ``calls`` to ``ex``; returns submitit's job handles (an array when ``is_array``)."""
        if len(calls) == 1 and not is_array:
            return [ex.submit(calls[0])]
        return list(ex.submit_array(list(calls)))

    # --- cancelling and polling ---

    @abstractmethod
    def cancel(self, jobs: Sequence[JobRecord]) -> list[str]:
        """Stop the active ``jobs``; returns what happened, line by line."""

    @abstractmethod
    def poll(self, jobs: Sequence[JobRecord], now: float,
             runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Polled:
        """Ask once about ``jobs`` (all of this kind, none finished): the registry updates."""


class HostKind(ExecutorKind):
    """A kind whose jobs run on this machine: each state is derived here, job by job, from the
    job's process and its outcome record (no controller to ask)."""

    polled_at_submission = True

    def poll(self, jobs: Sequence[JobRecord], now: float,
             runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Polled:
        return Polled({job.key: _derived_update(job, self.derive(job), now) for job in jobs})  # type: ignore[misc]

    @abstractmethod
    def derive(self, job: JobRecord) -> Derived:
        """The state of one job."""


def _derived_update(job: JobRecord, derived: Derived, now: float) -> dict[str, Any]:
    """Registry columns from a state derived here (local or debug job)."""
    update: dict[str, Any] = {"state": derived.state, "raw_state": derived.raw, "reason": None}
    if derived.error:
        update["error"] = derived.error
    if derived.state is State.RUNNING and job.started is None:
        update["started"] = job.submitted
    if derived.state in TERMINAL:
        outcome = read_outcome(job.outcome_file)
        if outcome is not None and outcome.outputs is not None:
            update["outputs"] = outcome.outputs
        if job.started is None:
            update["started"] = job.submitted
        if job.ended is None:
            update["ended"] = _ended_at(job, now)
    return update


class LocalKind(HostKind):
    """Subprocesses on this machine (submitit's ``LocalExecutor``): every task its own process, all started now.

    submitit's local executor honours only the time limit, the GPUs (CUDA_VISIBLE_DEVICES),
    the interpreter and the requeue count.
    """

    name = "local"
    ignored_settings = _SLURM_ONLY

    def where(self) -> str:
        return "subprocesses on this machine"

    def options(self, cfg: JobsConfig) -> dict[str, Any]:
        return {"local_python": cfg.python or sys.executable, "local_max_num_timeout": cfg.max_num_timeout}

    def cancel(self, jobs: Sequence[JobRecord]) -> list[str]:
        return [self._interrupt(job) for job in jobs]

    @staticmethod
    def _interrupt(job: JobRecord) -> str:
        """What submitit's ``LocalJob.cancel`` does (SIGINT to the job's controller), for a job
        submitted by another process: the PID is checked to still be that job's controller."""
        try:
            pid = int(job.job_id)
        except ValueError:
            return f"{job.job_id}: not a local process id"
        if not pid_alive(pid, must_contain=job.submitit_folder):
            return f"{job.job_id}: process already ended"
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return f"{job.job_id}: process already ended"
        except PermissionError:
            raise JobsError(f"not allowed to signal process {pid} (another user's job?)") from None
        return f"{job.job_id}: interrupted (SIGINT to the job's controller)"

    def derive(self, job: JobRecord) -> Derived:
        return derive_local(job.job_id, job.submitit_folder, job.outcome_file,
                            cancel_requested=bool(job.cancel_requested),
                            pickle_note=result_pickle_note(job.result_pickle), attached=job.attached)


class DebugKind(HostKind):
    """In this process, now (submitit's ``DebugExecutor``): a submission returns only when its calls have run.

    It uses none of the resource settings: there is no separate job to give them to.
    """

    name = "debug"
    ignored_settings = (*_SLURM_ONLY, "timeout_min", "gpus_per_node", "python", "max_num_timeout")
    chains = True  # a submission returns when its jobs have ended: the next one runs after them

    def wait_for(self, params: dict[str, Any], after: Sequence[str]) -> dict[str, Any]:
        return params

    def where(self) -> str:
        return "in this process, now"

    def submit(self, ex: submitit.Executor, calls: Sequence[Call], is_array: bool) -> list[Any]:
        """Run each call now, in this process, writing submitit-style logs and the outcome records."""
        out = []
        for call in calls:
            job = ex.submit(call)  # a lazy DebugJob: we run it ourselves (no pdb on errors)
            paths = job.paths
            make_dirs(paths.folder)
            with open(paths.stdout, "a", encoding="utf-8") as fo, open(paths.stderr, "a", encoding="utf-8") as fe, \
                    contextlib.redirect_stdout(fo), contextlib.redirect_stderr(fe):
                try:
                    call.run(outcome_path(paths.folder, str(job.job_id)))
                except Exception:  # noqa: BLE001 - recorded as the job's failure in its outcome record
                    fe.write(traceback.format_exc())
            out.append(job)
        return out

    def cancel(self, jobs: Sequence[JobRecord]) -> list[str]:
        return ["debug jobs run in-process at submission: nothing left to cancel"]

    def derive(self, job: JobRecord) -> Derived:
        return derive_debug(job.outcome_file)


class SlurmKind(ExecutorKind):
    """``sbatch`` on a SLURM cluster (submitit's ``SlurmExecutor``): an array is one ``sbatch --array``."""

    name = "slurm"
    chains = True

    def wait_for(self, params: dict[str, Any], after: Sequence[str]) -> dict[str, Any]:
        """An ``afterok`` dependency: the jobs start once every job of ``after`` completed with exit 0
        (SLURM keeps them pending, reason DependencyNeverSatisfied, when one did not)."""
        if not after:
            return params
        extra = dict(params.get("slurm_additional_parameters") or {})
        extra["dependency"] = "afterok:" + ":".join(after)
        return params | {"slurm_additional_parameters": extra}

    def missing(self) -> list[str]:
        """The commands submitit needs to submit that are not on PATH."""
        return slurm_cli.missing_commands(("sbatch", "srun"))

    def availability(self) -> Availability:
        missing = slurm_cli.missing_commands(slurm_cli.SUBMIT_COMMANDS)
        if missing:
            return Availability("unavailable", f"{', '.join(missing)} not on PATH")
        ok, said = slurm_cli.sinfo_responds()
        if not ok:
            return Availability("doubtful", f"commands found but {said}")
        return Availability("available", "sinfo answers")

    def where(self) -> str:
        return f"sbatch at {shutil.which('sbatch')}"

    def refusal(self, origin: str) -> str | None:
        missing = self.missing()
        if not missing:
            return None
        return (f"executor slurm was requested (from {origin}) but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not on PATH: this machine is not a SLURM submit host. "
                "Run on the cluster's login node (with the SLURM module loaded), or use --executor local.")

    def parameters(self, cfg: JobsConfig, job_name: str) -> dict[str, Any]:
        params = super().parameters(cfg, job_name)
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(cfg, key)
            if value:
                params[f"slurm_{key}"] = value
        params["slurm_array_parallelism"] = cfg.array_parallelism
        params["slurm_signal_delay_s"] = cfg.signal_delay_s
        if cfg.setup:
            params["slurm_setup"] = list(cfg.setup)
        if cfg.sbatch_extra:
            params["slurm_additional_parameters"] = dict(cfg.sbatch_extra)
        if cfg.gpus_per_node == 0:
            params.pop("gpus_per_node")  # no --gpus-per-node=0 line: some sites reject it
        return params

    def options(self, cfg: JobsConfig) -> dict[str, Any]:
        return {"slurm_python": cfg.python or sys.executable, "slurm_max_num_timeout": cfg.max_num_timeout}

    def folder_warnings(self, folder: Path) -> list[str]:
        """The workspace must be on the cluster's shared filesystem: a folder under /tmp is not."""
        tmp = Path(tempfile.gettempdir()).resolve()
        with contextlib.suppress(ValueError):
            folder.resolve().relative_to(tmp)
            return [f"warning: the jobs folder {folder} is under {tmp}; compute nodes usually cannot see it "
                    "(put the workspace on the shared filesystem)"]
        return []

    def cancel(self, jobs: Sequence[JobRecord]) -> list[str]:
        problems = slurm_cli.scancel([j.job_id for j in jobs])
        if problems:
            raise JobsError("; ".join(problems))
        return [f"scancel sent for {len(jobs)} job(s): {', '.join(j.job_id for j in jobs[:10])}"
                + (" ..." if len(jobs) > 10 else "")]

    def poll(self, jobs: Sequence[JobRecord], now: float,
             runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Polled:
        """One batched ``squeue`` + ``sacct`` for every job."""
        polled = slurm_cli.poll([j.job_id for j in jobs], {j.job_id: j.submitted for j in jobs}, runner=runner)
        updates = {job.key: _slurm_update(job, polled.rows.get(job.job_id), now, polled.sacct_available)
                   for job in jobs}
        return Polled(updates, list(polled.problems))  # type: ignore[arg-type]

    @staticmethod
    def wrote(folder: Path, base_id: str) -> bool:
        """Whether SLURM's submitit wrote this folder's job ``base_id`` (its script has ``#SBATCH`` lines)."""
        script = folder / f"{base_id}_submission.sh"
        return script.is_file() and "#SBATCH" in script.read_text(errors="replace")


def _from_outcome(job: JobRecord, now: float) -> dict[str, Any] | None:
    """A SLURM job that squeue and sacct no longer know: its outcome record, when there is one."""
    outcome = read_outcome(job.outcome_file)
    if outcome is None or not outcome.usable:
        return None
    update: dict[str, Any] = {"state": State.COMPLETED if outcome.status == "success" else State.FAILED,
                              "raw_state": f"outcome:{outcome.status}", "reason": None}
    if outcome.error:
        update["error"] = outcome.error
    if outcome.outputs is not None:
        update["outputs"] = outcome.outputs
    if job.ended is None:
        update["ended"] = _ended_at(job, now)
    return update


def _slurm_update(job: JobRecord, row: slurm_cli.SlurmRow | None, now: float,
                  sacct_available: bool = True) -> dict[str, Any]:
    """Registry columns from what squeue/sacct said about one job (``row``; None: neither knows it)."""
    if row is None:
        from_file = _from_outcome(job, now)
        if from_file is not None:
            return from_file
        seen = job.last_seen or job.submitted
        if now - seen > VANISH_GRACE_S:
            if job.cancel_requested:
                return {"state": State.CANCELLED, "raw_state": "CANCELLED", "reason": None,
                        "error": "cancelled; no longer known to squeue or sacct"}
            return {"state": State.UNKNOWN, "raw_state": "NOT FOUND",
                    "error": f"not known to squeue or sacct for {int(now - seen)} s (purged, or accounting off)"}
        return {}
    if row.source == "squeue" and row.state in TERMINAL and row.exit_code is None and sacct_available:
        # The controller says it ended but accounting has not caught up (a few seconds): keep
        # polling until sacct adds the exit code, rather than freezing an incomplete record.
        return {"raw_state": f"{row.raw_state} (awaiting sacct)", "last_seen": now, "reason": None,
                "state": job.state if job.state is not State.PENDING else State.RUNNING}
    update: dict[str, Any] = {
        "state": row.state, "raw_state": row.raw_state, "last_seen": now,
        "reason": row.reason if row.state is State.PENDING else None,
    }
    for key in ("exit_code", "started", "ended", "node"):
        value = getattr(row, key)
        if value is not None:
            update[key] = value
    if row.state in TERMINAL or row.state is State.PREEMPTED:
        outcome = read_outcome(job.outcome_file)
        if outcome is not None and outcome.status == "error":
            update["state"] = State.FAILED if row.state is State.COMPLETED else row.state
            update["error"] = outcome.error
        elif outcome is not None and outcome.status == "success":
            if outcome.outputs is not None:
                update["outputs"] = outcome.outputs
        elif outcome is not None:
            update["error"] = outcome.error
        elif row.state is State.COMPLETED:
            note = result_pickle_note(job.result_pickle)
            update["error"] = note if job.attached and note else "; ".join(filter(None, [
                "SLURM says completed but the job wrote no outcome record (see the logs)", note]))
        if "ended" not in update and job.ended is None:  # squeue alone (no accounting) has no end time
            update["ended"] = _ended_at(job, now)
    return update


# --- the kinds by name, and choosing one ---------------------------------------------------------

LOCAL, SLURM, DEBUG = LocalKind(), SlurmKind(), DebugKind()
#: Every kind by its name (the values of ``jobs.executor`` besides ``auto``).
KINDS: dict[str, ExecutorKind] = {kind.name: kind for kind in (LOCAL, SLURM, DEBUG)}
EXECUTORS = tuple(KINDS)


def executor_kind(name: str) -> ExecutorKind:
    """The kind called ``name``, or a clear error listing the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise JobsError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}") from None


def kind_that_wrote(folder: Path, base_id: str) -> ExecutorKind:
    """The kind that made a submitit folder found on disk: SLURM's has an ``#SBATCH`` script, else local."""
    return SLURM if SLURM.wrote(folder, base_id) else LOCAL


@dataclass(frozen=True)
class ExecutorChoice:
    name: str  # local | slurm | debug
    requested: str  # what the user or the config asked for (may be "auto")
    origin: str  # "--executor" or the config layer that set jobs.executor
    note: str  # one line saying which executor runs and why

    @property
    def kind(self) -> ExecutorKind:
        return KINDS[self.name]


def choose_executor(requested: str | None, cfg: JobsConfig, origin: str = "config") -> ExecutorChoice:
    """Resolve ``--executor`` / ``jobs.executor`` to a usable executor, or raise a clear error.

    ``auto`` is SLURM where it can be used, else local, and says which and why.
    """
    if requested is not None:
        origin = "--executor"
    wanted = (requested or cfg.executor).strip().lower()
    if wanted not in (*EXECUTORS, "auto"):
        raise JobsError(f"unknown executor {wanted!r} (from {origin}); choose one of {', '.join(EXECUTORS)}, auto")
    if wanted == "auto":
        missing = SLURM.missing()
        if missing:
            return ExecutorChoice(LOCAL.name, wanted, origin, f"executor: {LOCAL.name} (auto from {origin}: "
                                  f"{', '.join(missing)} not on PATH, so no SLURM here)")
        return ExecutorChoice(SLURM.name, wanted, origin,
                              f"executor: {SLURM.name} (auto from {origin}: {SLURM.where()})")
    kind = KINDS[wanted]
    if why := kind.refusal(origin):
        raise JobsError(why)
    return ExecutorChoice(kind.name, wanted, origin, f"executor: {kind.name} ({kind.where()}; from {origin})")


def check_settings(choice: ExecutorChoice, jobs: Resolved | JobsConfig, ws: Workspace | None) -> list[str]:
    """Refuse ``jobs`` settings that the chosen executor would ignore; returns warnings.

    A value from a task config (``--config FILE``) or set by the caller is a
    :class:`~fmb_engine.errors.ConfigError` naming the key, its file and the executor. A
    value from the workspace's ``fmb.yaml`` is a site default shared by every executor:
    it only earns a warning (printed with the submission and kept in the run's notes).
    """
    unused = choice.kind.ignored_settings
    if isinstance(jobs, Resolved):
        values, sources = jobs.values, jobs.sources
        set_keys = [k for k in unused if sources.get(k, "default") != "default"]
    else:
        values, sources = jobs, {}
        set_keys = [k for k in unused if k in jobs.model_fields_set]
    workspace_file = ws.config_file.resolve() if ws is not None else None
    warnings, errors = [], []
    for key in set_keys:
        origin = sources.get(key, "the caller")
        users = " and ".join(kind.name for kind in KINDS.values() if key not in kind.ignored_settings)
        line = (f"jobs.{key} = {getattr(values, key)!r} (from {origin}) is ignored by the {choice.name} executor "
                f"(only {users} use{'s' if ' and ' not in users else ''} it)")
        if workspace_file is not None and origin not in ("the caller", "command line") \
                and Path(origin).expanduser().resolve() == workspace_file:
            warnings.append(f"warning: {line}")
        else:
            errors.append(line)
    if errors:
        from fmb_engine.errors import ConfigError

        raise ConfigError("; ".join(errors) + f". Remove {'it' if len(errors) == 1 else 'them'}, or choose an "
                          "executor that uses " + ("it" if len(errors) == 1 else "them") + "; nothing was submitted.")
    return warnings


__all__ = [
    "DEBUG", "EXECUTORS", "KINDS", "LOCAL", "SLURM", "Availability", "DebugKind", "ExecutorChoice", "ExecutorKind",
    "HostKind", "LocalKind", "Polled", "SlurmKind", "check_settings", "choose_executor", "executor_kind",
    "kind_that_wrote",
]
