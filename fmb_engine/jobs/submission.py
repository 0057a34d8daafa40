"""Submitting stages as jobs, and acting on them later: submit, cancel, resubmit, attach.

``submit`` runs one call, ``submit_array`` one call per shard (a single ``sbatch
--array`` on SLURM). Both record the run in the workspace registry and return at
once (the debug executor is the exception: it runs in this process before
returning, which is its point). What differs per executor lives in its kind
(:mod:`fmb_engine.jobs.executors`); this module is the same for every kind.

* The submitit folder is ``<workspace>/jobs/<run_id>/``, never a temporary folder
  (the workspace must be on the cluster's shared filesystem; a SLURM run whose
  workspace is under ``/tmp`` gets a warning in its notes).
* Every call is wrapped in :class:`~fmb_engine.jobs.calls.ResumableCall`, a submitit
  ``Checkpointable``: on timeout or preemption SLURM signals the job, ``checkpoint()``
  requeues the same call, and because stage functions are resumable the rerun continues
  from the partial outputs already on disk.
* Results come only from each job's JSON outcome record; submitit's pickles are never
  loaded here (docs/jobs.md, "Trust"). The calls are recorded as JSON in the registry,
  and ``resubmit`` rebuilds them from there.
* Job folders and files get the workspace's modes (:mod:`fmb_engine.jobs.folders`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths

from fmb_engine.config import Resolved, load
from fmb_engine.jobs import JobsError
from fmb_engine.jobs.calls import Call, NotRecordable, call_spec, from_spec, make_call
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.executors import ExecutorChoice, check_settings, choose_executor, executor_kind, kind_that_wrote
from fmb_engine.jobs.folders import apply_modes, creation_umask, verify_folder
from fmb_engine.jobs.monitor import refresh
from fmb_engine.jobs.outcome import outcome_path
from fmb_engine.jobs.registry import JobRecord, Registry, RunRecord, borrow_or_open, new_run_id
from fmb_engine.jobs.states import RESUBMITTABLE, State
from fmb_engine.workspace import Workspace

_ARRAY_TASK = re.compile(r"^\d+_\d+$")


def jobs_config(ws: Workspace | None = None, config_file: str | os.PathLike[str] | None = None,
                **flags: Any) -> Resolved:
    """The effective ``jobs`` section (defaults < fmb.yaml < --config < flags)."""
    return load("jobs", ws, config_file, {k: v for k, v in flags.items() if v is not None})


def _as_config(jobs: Resolved | JobsConfig) -> tuple[JobsConfig, str]:
    if isinstance(jobs, Resolved):
        return jobs.values, jobs.sources.get("executor", "default")  # type: ignore[return-value]
    return jobs, "config"


@dataclass
class Submission:
    """What was submitted: the registry run, its jobs, and submitit's job handles."""

    run_id: str
    stage: str
    executor: str
    folder: Path
    records: list[JobRecord]
    jobs: list[Any] = field(repr=False, default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [r.job_id for r in self.records]


def _args_tuple(item: Any) -> tuple:
    return item if isinstance(item, tuple) else (item,)


def submit(ws: Workspace, stage: str, fn: Callable[..., Any], *args: Any, executor: str | None = None,
           jobs: Resolved | JobsConfig | None = None, snapshot: dict[str, Any] | None = None,
           job_name: str | None = None, checkpointable: bool = True, registry: Registry | None = None,
           **kwargs: Any) -> Submission:
    """Submit ``fn(*args, **kwargs)`` as one job of ``stage``; record it; return at once.

    ``snapshot`` is the stage's config record (``{"values":…, "sources":…}``) stored
    with the run. ``fn`` must be importable at module level (submitit pickles it by
    reference and the job imports it).
    """
    call = make_call(fn, args, kwargs, stage, checkpointable)
    return _submit_calls(ws, stage, [call], executor, jobs, snapshot, job_name, registry, is_array=False)


def submit_array(ws: Workspace, stage: str, fn: Callable[..., Any], list_of_args: Sequence[Any], *,
                 executor: str | None = None, jobs: Resolved | JobsConfig | None = None,
                 snapshot: dict[str, Any] | None = None, job_name: str | None = None,
                 checkpointable: bool = True, registry: Registry | None = None,
                 kwargs: dict[str, Any] | None = None) -> Submission:
    """One job per element of ``list_of_args`` (a tuple = positional args, anything else = one arg).

    On SLURM this is one ``sbatch --array=0-(n-1)%jobs.array_parallelism`` (submitit
    ``map_array``); on the local executor every task is its own process, all started now.
    ``kwargs`` are passed to every call.
    """
    if not list_of_args:
        raise JobsError(f"nothing to submit for {stage}: the list of task arguments is empty")
    calls = [make_call(fn, _args_tuple(a), kwargs, stage, checkpointable) for a in list_of_args]
    return _submit_calls(ws, stage, calls, executor, jobs, snapshot, job_name, registry, is_array=True)


def _records(jobs: Sequence[Any], calls: Sequence[Call], now: float, attempt: int = 1,
             task_indices: Sequence[int] | None = None) -> list[JobRecord]:
    records = []
    for i, (job, call) in enumerate(zip(jobs, calls, strict=True)):
        job_id = str(job.job_id)
        paths: JobPaths = job.paths
        records.append(JobRecord(
            run_id="", job_id=job_id, state=State.PENDING, submitted=now,
            array_job_id=job_id.split("_", 1)[0] if _ARRAY_TASK.match(job_id) else None,
            task_index=task_indices[i] if task_indices is not None else i, attempt=attempt,
            stdout=str(paths.stdout), stderr=str(paths.stderr), result_pickle=str(paths.result_pickle),
            submitted_pickle=str(paths.submitted_pickle), args_repr=call.describe()[:300],
        ))
    return records


def _submit_to(choice: ExecutorChoice, cfg: JobsConfig, folder: Path, job_name: str, calls: Sequence[Call],
               is_array: bool, refused: str, after: Sequence[str] = ()) -> tuple[dict[str, Any], list[Any]]:
    """Build the executor and submit under the workspace's umask (sbatch and local jobs inherit it),
    then fix the modes. Returns the executor's parameters and submitit's job handles.

    A refusal (sbatch's, a pickling error, ...) removes the folder and raises ``refused``
    with what went wrong. The jobs wait for the jobs ``after`` to succeed (kinds that chain).
    """
    ex = choice.kind.build(folder, cfg, job_name, after)
    try:
        try:
            with creation_umask(folder):
                submitted = choice.kind.submit(ex, calls, is_array)
        finally:
            apply_modes(folder)
    except Exception as exc:  # noqa: BLE001 - sbatch refusals, pickling errors, ...
        shutil.rmtree(folder, ignore_errors=True)
        raise JobsError(f"{refused}: {_failure_message(exc)}") from None
    return dict(ex.parameters), submitted


def _call_specs(calls: Sequence[Call]) -> dict[str, Any]:
    """The calls as JSON for ``resubmit``, or why they cannot be recorded."""
    try:
        return {"calls": [call_spec(c) for c in calls]}
    except NotRecordable as exc:
        return {"calls_not_recorded": f"{exc} has no JSON form"}


def _failure_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-4:])


def _submit_calls(ws: Workspace, stage: str, calls: Sequence[Call], executor: str | None,
                  jobs: Resolved | JobsConfig | None, snapshot: dict[str, Any] | None, job_name: str | None,
                  registry: Registry | None, is_array: bool) -> Submission:
    jobs = jobs if jobs is not None else jobs_config(ws)
    cfg, origin = _as_config(jobs)
    choice = choose_executor(executor, cfg, origin)
    notes = [choice.note, *check_settings(choice, jobs, ws)]
    run_id = new_run_id(stage)
    folder = ws.folder("jobs") / run_id
    notes += choice.kind.folder_warnings(folder)
    now = time.time()
    params, submitted = _submit_to(
        choice, cfg, folder, job_name or f"fmb-{stage}", calls, is_array,
        f"{choice.name} refused {stage} ({len(calls)} task{'s' if len(calls) != 1 else ''}); "
        "nothing was submitted or recorded")
    records = _records(submitted, calls, now)
    run = RunRecord(
        run_id=run_id, stage=stage, executor=choice.name, folder=str(folder),
        config={"stage": snapshot or {}, "jobs": cfg.model_dump(mode="json"), "executor_choice": choice.note,
                **_call_specs(calls)},
        params=params | {"python": cfg.python or sys.executable},
        created=now, n_tasks=len(records), is_array=is_array,
    )
    with borrow_or_open(ws, registry, cfg.registry_journal) as reg:
        records = reg.add_run(run, records)
        if choice.kind.polled_at_submission:
            refresh(ws, registry=reg, jobs=records)
            records = reg.jobs(run_id)
    return Submission(run_id, stage, choice.name, folder, records, list(submitted), notes)


# --- cancel, resubmit, attach -------------------------------------------------------------------


def cancel(ws: Workspace, ref: str, registry: Registry | None = None) -> list[str]:
    """Cancel the active jobs ``ref`` names (a run, a job, an array). Returns what happened, line by line."""
    with borrow_or_open(ws, registry) as reg:
        run, found = reg.resolve(ref)
        active = [j for j in found if j.active]
        if not active:
            return [f"nothing to cancel: no active job in {run.run_id} ({len(found)} job(s), all ended)"]
        now = time.time()
        messages = executor_kind(run.executor).cancel(active)
        reg.update_jobs({j.key: {"cancel_requested": now} for j in active if j.key is not None})
        refresh(ws, registry=reg, jobs=reg.jobs(run.run_id))
        return messages


def resubmit(ws: Workspace, ref: str, executor: str | None = None, jobs: Resolved | JobsConfig | None = None,
             registry: Registry | None = None) -> Submission:
    """Submit again only the tasks of ``ref`` that ended without a result (failed, cancelled,
    timed out, out of memory, preempted, unknown). Completed and active tasks are left alone.

    Uses the current ``jobs`` config (fix memory or time limits first) and the run's own
    executor unless ``executor`` is given. New tasks join the same run; the old rows are
    kept as history (``superseded_by``).
    """
    jobs = jobs if jobs is not None else jobs_config(ws)
    cfg, origin = _as_config(jobs)
    with borrow_or_open(ws, registry, cfg.registry_journal) as reg:
        refresh(ws, registry=reg)
        run, found = reg.resolve(ref)
        found = reg.jobs(run.run_id) if ref == run.run_id or len(found) > 1 else [reg.job(found[0].key)]
        targets = [j for j in found if j.state in RESUBMITTABLE and j.superseded_by is None]
        if not targets:
            states = ", ".join(sorted({j.state.value for j in found}))
            raise JobsError(f"nothing to resubmit in {run.run_id}: no failed or missing task (states: {states})")
        choice = choose_executor(executor or run.executor, cfg, origin if executor is None else "--executor")
        warnings = check_settings(choice, jobs, ws)
        if run.config.get("chain"):  # phases with dependencies: later unfinished tasks are replaced too
            from fmb_engine.jobs.chain import resubmit_chain

            return resubmit_chain(ws, reg, run, cfg, choice, warnings)
        calls = [_recorded_call(run, job) for job in targets]
        attempt = max(j.attempt for j in targets) + 1
        folder = Path(run.folder) / f"retry-{attempt}-{int(time.time())}"
        now = time.time()
        params, submitted = _submit_to(
            choice, cfg, folder, f"fmb-{run.stage}", calls, run.is_array or len(calls) > 1,
            f"{choice.name} refused the resubmission of {run.run_id}; nothing was submitted")
        records = _records(submitted, calls, now, attempt=attempt, task_indices=[j.task_index for j in targets])
        if choice.name != run.executor:
            # A run has one executor; a resubmission elsewhere becomes a run of its own.
            new_run = RunRecord(run_id=new_run_id(run.stage), stage=run.stage, executor=choice.name,
                                folder=str(folder), config=run.config | {"resubmitted_from": run.run_id},
                                params=params, created=now, n_tasks=len(records),
                                is_array=run.is_array, note=f"resubmission of {run.run_id}")
            added = reg.add_run(new_run, records)
            reg.update_jobs({old.key: {"superseded_by": new.key} for old, new in zip(targets, added, strict=True)})
            run_id = new_run.run_id
        else:
            added = reg.add_jobs(run.run_id, records, supersede={old.key: i for i, old in enumerate(targets)})
            run_id = run.run_id
        if choice.kind.polled_at_submission:
            refresh(ws, registry=reg, jobs=added)
        return Submission(run_id, run.stage, choice.name, folder, reg.jobs(run_id), list(submitted),
                          [choice.note, *warnings, f"resubmitted {len(targets)} task(s): "
                           + ", ".join(str(j.task_index) for j in targets)])


def _recorded_call(run: RunRecord, job: JobRecord) -> Call:
    """Task ``job.task_index`` of ``run`` rebuilt from its JSON record (submitit's pickles are never loaded)."""
    calls = run.config.get("calls")
    what = f"task {job.task_index} ({job.job_id}) of {run.run_id} cannot be resubmitted"
    if "attached" in run.config:
        raise JobsError(f"{what}: it was submitted outside FMB and attached; its call exists only in submitit's "
                        "pickle, which FMB never loads (a pickle can run code). Resubmit it where it was made.")
    if not isinstance(calls, list) or not 0 <= job.task_index < len(calls):
        why = run.config.get("calls_not_recorded") or (
            "the registry holds no JSON record of its call (a run from an older FMB), and its submitted pickle "
            "is never loaded (a pickle can run code)")
        raise JobsError(f"{what}: {why}. Submit the stage again instead.")
    try:
        return from_spec(calls[job.task_index], run.stage)
    except JobsError as exc:
        raise JobsError(f"{what}: {exc}") from None


def attach(ws: Workspace, folder: str | os.PathLike[str], job_id: str, executor: str | None = None,
           stage: str = "attached", registry: Registry | None = None) -> tuple[RunRecord, list[JobRecord]]:
    """Register a job submitted by submitit elsewhere (a notebook, another tool, a crashed CLI).

    ``folder`` is its submitit folder (``%j`` already replaced), ``job_id`` a job id, an
    array task (``123_4``) or an array id (``123``: every task found in the folder).
    The folder must pass :func:`~fmb_engine.jobs.folders.verify_folder` (yours, or the
    workspace group's, and writable by nobody else). Nothing in it is unpickled: its
    state comes from SLURM or the local process (and an FMB outcome record, if any).
    Without ``executor`` the kind is recognised from the folder.
    """
    folder = Path(folder).expanduser().resolve()
    job_id = str(job_id).strip()
    if not folder.is_dir():
        raise JobsError(f"{folder} is not a folder")
    if "_" in job_id or (folder / f"{job_id}_submitted.pkl").is_file():
        ids = [job_id]
    else:
        ids = sorted((p.name[: -len("_submitted.pkl")] for p in folder.glob(f"{job_id}_*_submitted.pkl")),
                     key=lambda s: int(s.rsplit("_", 1)[1]) if s.rsplit("_", 1)[1].isdigit() else 0)
    ids = [i for i in ids if (folder / f"{i}_submitted.pkl").is_file()]
    if not ids:
        raise JobsError(f"no submitit job {job_id} in {folder} (expected {job_id}_submitted.pkl "
                        f"or {job_id}_<task>_submitted.pkl): not a submitit folder of that job")
    base = job_id.split("_", 1)[0]
    task_paths = [JobPaths(folder, job_id=i, task_id=0) for i in ids]
    verify_folder(ws, folder, [folder / f"{base}_submission.sh"] + [
        p for paths in task_paths for p in (paths.submitted_pickle, paths.stdout, paths.stderr, paths.result_pickle,
                                             outcome_path(folder, str(paths.job_id)))])
    kind = kind_that_wrote(folder, base) if executor is None else executor_kind(executor)
    with borrow_or_open(ws, registry) as reg:
        for existing in reg.jobs(include_superseded=True):
            if existing.job_id in ids and existing.folder and Path(existing.folder) == folder:
                raise JobsError(f"job {existing.job_id} from {folder} is already registered (run {existing.run_id})")
        submitted = min((folder / f"{i}_submitted.pkl").stat().st_mtime for i in ids)
        records = []
        for index, (jid, paths) in enumerate(zip(ids, task_paths, strict=True)):
            task = int(jid.rsplit("_", 1)[1]) if "_" in jid else index
            records.append(JobRecord(
                run_id="", job_id=jid, state=State.PENDING, submitted=submitted,
                array_job_id=base if "_" in jid else None, task_index=task, stdout=str(paths.stdout),
                stderr=str(paths.stderr), result_pickle=str(paths.result_pickle),
                submitted_pickle=str(paths.submitted_pickle), args_repr=None,
            ))
        run = RunRecord(run_id=new_run_id(stage), stage=stage, executor=kind.name, folder=str(folder),
                        config={"attached": {"folder": str(folder), "job_id": job_id}}, created=submitted,
                        n_tasks=len(records), is_array=any("_" in i for i in ids), note=f"attached {job_id}")
        added = reg.add_run(run, records)
        refresh(ws, registry=reg, jobs=added)
        return run, reg.jobs(run.run_id)


__all__ = ["Submission", "attach", "cancel", "jobs_config", "resubmit", "submit", "submit_array"]
