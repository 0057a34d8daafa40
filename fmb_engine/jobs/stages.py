"""Heavy stages as submittable jobs: sharded embedding arrays and detection.

submitit pickles the callable, so each task is a module-level function taking
plain values (workspace root, config values) and rebuilding what it needs. Every
stage function is resumable, so a requeued task simply runs again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmb_engine.config import Resolved
from fmb_engine.jobs.calls import rebuild_resolved as _resolved
from fmb_engine.jobs.submission import Submission, submit, submit_array
from fmb_engine.workspace import Workspace


def embedding_shard_task(root: str, survey: str, model: str, values: dict[str, Any], sources: dict[str, str],
                         start: int, stop: int, n_objects: int) -> dict[str, Any]:
    """One array task: embed rows ``[start, stop)``; the task that completes the survey merges."""
    from fmb_engine.embed.merge import merge_shards
    from fmb_engine.embed.run import embed_shard, up_to_date
    from fmb_engine.embed.shards import coverage, embeddings_path
    from fmb_engine.errors import DataError

    ws = Workspace(Path(root))
    resolved = _resolved(f"embed.{model}", values, sources)
    if up_to_date(ws, Path(survey), model, resolved):  # a rerun of a finished array has nothing to do
        return {"embedded": 0, "reused": stop - start, "up_to_date": True}
    info = embed_shard(ws, Path(survey), model, resolved, start, stop)
    if not coverage(ws, model, n_objects)["missing"]:
        try:
            path, _ = merge_shards(ws, model)  # atomic: two tasks finishing together both write the same file
        except (DataError, OSError, KeyError):
            # the other task's merge finished first and removed the shards under this one
            if not up_to_date(ws, Path(survey), model, resolved):
                raise
            path = embeddings_path(ws, model)
        info = {**info, "merged": str(path)}
    return info


def submit_embedding(ws: Workspace, survey: Path, model: str, resolved: Resolved, shards: int,
                     executor: str | None, jobs: Resolved | None = None) -> Submission:
    """A job array of ``shards`` tasks over the survey rows; outputs merge when the last shard lands."""
    from fmb_engine.embed.shards import shard_range
    from fmb_engine.stage_run import config_record
    from fmb_engine.survey.store import SurveyReader

    with SurveyReader(survey) as reader:
        n = reader.n_objects
    record = config_record(resolved)
    tasks = [(str(ws.root), str(survey), model, record["values"], record["sources"], *shard_range(n, i, shards), n)
             for i in range(shards)]
    return submit_array(ws, f"embed.{model}", embedding_shard_task, tasks, executor=executor, jobs=jobs,
                        snapshot=record, job_name=f"fmb-embed-{model}")


def detect_task(root: str, values: dict[str, Any], sources: dict[str, str], parts: tuple[str, ...]) -> dict[str, Any]:
    from fmb_engine.detect.run import detect

    result = detect(Workspace(Path(root)), _resolved("detect", values, sources), parts=parts)
    return {"systems": len(result.summary["systems"]), "skipped": [s["system"] for s in result.summary["skipped"]],
            "manifest": str(result.manifest)}


def submit_detect(ws: Workspace, resolved: Resolved, parts: tuple[str, ...], executor: str | None,
                  jobs: Resolved | None = None) -> Submission:
    from fmb_engine.stage_run import config_record

    record = config_record(resolved)
    return submit(ws, "detect", detect_task, str(ws.root), record["values"], record["sources"], tuple(parts),
                  executor=executor, jobs=jobs, snapshot=record, job_name="fmb-detect")


def retrain_task(root: str, survey: str, task: str, values: dict[str, Any], sources: dict[str, str],
                 resume: bool) -> dict[str, Any]:
    """One adaptation run; a requeued job continues from its newest checkpoint."""
    from fmb_engine.retrain.run import retrain
    from fmb_engine.retrain.tasks import section_of

    result = retrain(Workspace(Path(root)), Path(survey), task, _resolved(section_of(task), values, sources),
                     resume=resume)
    return {"steps": result.steps, "stopped_early": result.stopped_early, "manifest": str(result.manifest)}


def submit_retrain(ws: Workspace, survey: Path, task: str, resolved: Resolved, resume: bool, executor: str | None,
                   jobs: Resolved | None = None) -> Submission:
    from fmb_engine.stage_run import config_record

    record = config_record(resolved)
    return submit(ws, f"retrain.{task}", retrain_task, str(ws.root), str(survey), task, record["values"],
                  record["sources"], resume, executor=executor, jobs=jobs, snapshot=record,
                  job_name=f"fmb-retrain-{task}")
