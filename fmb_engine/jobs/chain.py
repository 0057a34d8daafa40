"""A chain of job phases recorded as one run: the sharded detect (fit jobs -> shard array -> merge).

Why: the scheduler, not FMB, orders the phases. Each phase is submitted at once with a
dependency on the previous phase's jobs (SLURM ``afterok``), so the whole chain is queued
by one command and runs without a process watching it. Kinds that cannot make a job wait
for others (:attr:`~fmb_engine.jobs.executors.ExecutorKind.chains` false: submitit's local
executor) get one job running the phases in order instead.

The run records every task's call (task index = position in the chain) and, under
``config["chain"]``, which tasks form which phase; ``jobs show`` names each task's phase
(:meth:`~fmb_engine.jobs.registry.RunRecord.phase_of`).
:func:`resubmit_chain` (used by ``jobs resubmit`` for such a run) submits again the tasks that
ended without a result, each alone, and replaces every later task that has not completed (a
merge left pending by SLURM with DependencyNeverSatisfied, or cancelled) by one waiting for
the new jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmb_engine.config import Resolved
from fmb_engine.jobs import JobsError
from fmb_engine.jobs.calls import Call, make_call
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.executors import ExecutorChoice, check_settings, choose_executor
from fmb_engine.jobs.monitor import refresh
from fmb_engine.jobs.registry import JobRecord, Registry, RunRecord, borrow_or_open, new_run_id
from fmb_engine.jobs.states import RESUBMITTABLE, State
from fmb_engine.jobs.submission import Submission, _as_config, _call_specs, _records, _recorded_call, _submit_to, jobs_config, submit
from fmb_engine.workspace import Workspace

#: The stage name of a sharded detect run in the registry.
SHARDED_STAGE = "detect.sharded"


@dataclass
class Phase:
    """One phase of a chain: its name and calls (submitted as one array unless it has one call)."""

    name: str
    calls: list[Call]


def _phase_tasks(run: RunRecord) -> list[tuple[str, list[int]]]:
    return [(str(p["name"]), [int(t) for t in p["tasks"]]) for p in run.config["chain"]["phases"]]


def _waited_for(records: list[JobRecord]) -> list[str]:
    """What the next phase waits for: a whole array by its id (SLURM keeps no record of an array task
    cancelled before it started, and a dependency on that task id alone would then be dropped,
    whereas ``afterok`` on the array is never met), other jobs by their ids."""
    return list(dict.fromkeys(r.array_job_id or r.job_id for r in records))


def submit_chain(ws: Workspace, stage: str, phases: list[Phase], run_id: str, choice: ExecutorChoice,
                 cfg: JobsConfig, notes: list[str], snapshot: dict[str, Any], job_name: str,
                 registry: Registry | None = None) -> Submission:
    """Submit ``phases`` in order, each waiting for the previous one, as the one registry run ``run_id``."""
    folder = ws.folder("jobs") / run_id
    calls = [c for p in phases for c in p.calls]
    bounds, start = [], 0
    for phase in phases:
        bounds.append({"name": phase.name, "tasks": list(range(start, start + len(phase.calls)))})
        start += len(phase.calls)
    run = RunRecord(run_id=run_id, stage=stage, executor=choice.name, folder=str(folder),
                    config={"stage": snapshot, "jobs": cfg.model_dump(mode="json"), "executor_choice": choice.note,
                            "chain": {"phases": bounds}, **_call_specs(calls)},
                    created=time.time(), n_tasks=len(calls), is_array=True)
    after: list[str] = []
    handles: list[Any] = []
    with borrow_or_open(ws, registry, cfg.registry_journal) as reg:
        for phase, bound in zip(phases, bounds, strict=True):
            if not phase.calls:
                continue
            try:
                params, submitted = _submit_to(
                    choice, cfg, folder / phase.name, f"{job_name}-{phase.name}", phase.calls, len(phase.calls) > 1,
                    f"{choice.name} refused the {phase.name} phase of {run_id}", after)
            except JobsError as exc:
                if handles:
                    raise JobsError(f"{exc}; the jobs of the earlier phases stay queued in run {run_id} "
                                    f"(`fmb-engine jobs cancel {run_id}`)") from None
                raise
            records = _records(submitted, phase.calls, time.time(), task_indices=bound["tasks"])
            if not handles:
                run.params = params
                records = reg.add_run(run, records)
            else:
                records = reg.add_jobs(run_id, records)
            handles += submitted
            after = _waited_for(records)
            if choice.kind.polled_at_submission:
                refresh(ws, registry=reg, jobs=records)
        return Submission(run_id, stage, choice.name, folder, reg.jobs(run_id), handles, notes)


def resubmit_chain(ws: Workspace, reg: Registry, run: RunRecord, cfg: JobsConfig, choice: ExecutorChoice,
                   warnings: list[str]) -> Submission:
    """Submit again the chain's tasks that ended without a result, and every later unfinished task.

    Tasks of the same phase that are still queued or running stay, and the next phase waits
    for them as well as for the new jobs; unfinished later tasks (pending on a dependency that
    can no longer be met) are cancelled and replaced.
    """
    if choice.name != run.executor:
        raise JobsError(f"{run.run_id} is a chain of {run.executor} jobs; resubmit it on {run.executor} "
                        "(a chain cannot move to another executor)")
    jobs = {j.task_index: j for j in reg.jobs(run.run_id)}
    failed = {i for i, j in jobs.items() if j.state in RESUBMITTABLE}
    if not failed:
        states = ", ".join(sorted({j.state.value for j in jobs.values()}))
        raise JobsError(f"nothing to resubmit in {run.run_id}: no failed or missing task (states: {states})")
    phases = _phase_tasks(run)
    first = min(n for n, (_, tasks) in enumerate(phases) if failed & set(tasks))
    stale = [jobs[i] for _, tasks in phases[first + 1:] for i in tasks
             if i in jobs and jobs[i].state is not State.COMPLETED and i not in failed]
    if active := [j for j in stale if j.active]:
        choice.kind.cancel(active)
        reg.update_jobs({j.key: {"cancel_requested": time.time()} for j in active if j.key is not None})
    redo = failed | {j.task_index for j in stale}
    attempt = max(jobs[i].attempt for i in redo) + 1
    stamp = int(time.time())
    after = [jobs[i].job_id for _, tasks in phases[:first] for i in tasks if i in jobs and jobs[i].active]
    handles: list[Any] = []
    for name, tasks in phases[first:]:
        targets = [jobs[i] for i in tasks if i in redo]
        kept = [jobs[i].job_id for i in tasks if i not in redo and jobs[i].active]
        if targets:
            calls = [_recorded_call(run, job) for job in targets]
            _, submitted = _submit_to(choice, cfg, Path(run.folder) / f"retry-{attempt}-{stamp}-{name}",
                                      f"fmb-{run.stage}-{name}", calls, len(calls) > 1,
                                      f"{choice.name} refused the resubmission of {run.run_id} ({name})", after)
            records = _records(submitted, calls, time.time(), attempt=attempt,
                               task_indices=[j.task_index for j in targets])
            added = reg.add_jobs(run.run_id, records, supersede={old.key: i for i, old in enumerate(targets)})
            handles += submitted
            if choice.kind.polled_at_submission:
                refresh(ws, registry=reg, jobs=added)
            after = _waited_for(added) + kept
        else:
            after = kept
    return Submission(run.run_id, run.stage, choice.name, Path(run.folder), reg.jobs(run.run_id), handles,
                      [choice.note, *warnings, "resubmitted task(s) " + ", ".join(str(i) for i in sorted(redo))])


def submit_sharded_detect(ws: Workspace, resolved: Resolved, parts: tuple[str, ...], shards: int,
                          executor: str | None, jobs: Resolved | JobsConfig | None = None,
                          survey: Path | None = None) -> Submission:
    """``detect --shards K`` as jobs: fit jobs, then an array of ``shards`` tasks, then the merge (+ fusion).

    On a kind that does not chain, one job runs the phases in order (:func:`run_in_order`).
    """
    from fmb_engine.detect import shards as sharded
    from fmb_engine.stage_run import config_record

    if shards < 1:
        raise JobsError(f"--shards must be >= 1, got {shards}")
    if not {"flows", "mismatch"} & set(parts):
        raise JobsError("--shards splits the scoring of flows and mismatch; `detect fuse` has nothing to shard")
    jobs = jobs if jobs is not None else jobs_config(ws)
    cfg, origin = _as_config(jobs)
    choice = choose_executor(executor, cfg, origin)
    record = config_record(resolved)
    values, sources = record["values"], record["sources"]
    survey_arg = str(survey) if survey is not None else None
    idle = sharded.idle_shards_note(ws, resolved, shards)
    run_id = new_run_id(SHARDED_STAGE)
    merge_args = (str(ws.root), run_id, values, sources, tuple(parts), shards, survey_arg)
    if not choice.kind.chains:
        sub = submit(ws, SHARDED_STAGE, sharded.run_in_order, *merge_args, executor=choice.name, jobs=jobs,
                     snapshot=record, job_name="fmb-detect-sharded")
        sub.notes.append(f"the {choice.name} executor cannot chain jobs: one job runs the fit, shard and merge "
                         "phases in order")
        sub.notes += [idle] if idle else []
        return sub
    notes = [choice.note, *check_settings(choice, jobs, ws), *([idle] if idle else [])]
    calls = sharded.phase_calls(ws, resolved, run_id, tuple(parts), shards, survey_arg)
    fits = [make_call(fn, args, None, SHARDED_STAGE) for fn, arg_list in calls[:2] for args in arg_list]
    shard_calls = [make_call(calls[2][0], args, None, SHARDED_STAGE) for args in calls[2][1]]
    phases = [Phase("fit", fits), Phase("shard", shard_calls),
              Phase("merge", [make_call(sharded.merge, merge_args, None, SHARDED_STAGE)])]
    return submit_chain(ws, SHARDED_STAGE, phases, run_id, choice, cfg, notes, record, "fmb-detect")


__all__ = ["SHARDED_STAGE", "Phase", "resubmit_chain", "submit_chain", "submit_sharded_detect"]
