"""The stages the Runs screen can submit, with their config section (no UI imports).

Each entry names the config section its form is generated from and how to submit the
validated config as a job through the engine (``fmb_engine.jobs``), so runs started
here are recorded, polled, cancelled and resubmitted exactly like runs from the CLI:

* ``data.mock``          -> ``submit(make_mock)``
* ``embed.<model>``      -> ``fmb_engine.jobs.stages.submit_embedding`` (a job array of ``tasks`` shards)
* ``retrain.<task>``     -> ``fmb_engine.jobs.stages.submit_retrain`` (one adaptation run; resumes when requeued)
* ``detect``             -> ``fmb_engine.jobs.stages.submit_detect`` (flows, mismatch, fusion, systems table)
* ``analyze.rankings``   -> ``submit(analyze_rankings)`` (Spearman / Jaccard for the Compare screen)
* ``analyze.similarity`` -> ``submit(analyze_similarity)`` (neighbours for the Object screen)

Building the catalogue registers every section (it imports the embedders, i.e. torch):
call :func:`catalog` from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fmb_engine.config import Resolved
from fmb_engine.workspace import Workspace

Submitter = Callable[[Workspace, Resolved, "str | None", int], object]


@dataclass(frozen=True)
class StageSpec:
    name: str  # stage id recorded with the run, e.g. "embed.pca"
    section: str  # config section of the form
    title: str
    submit: Submitter  # (ws, resolved, executor, tasks) -> fmb_engine.jobs.submission.Submission
    sharded: bool = False  # takes a number of array tasks


def _jobs(ws: Workspace) -> Resolved:
    from fmb_engine.jobs.submission import jobs_config

    return jobs_config(ws)


def _survey(ws: Workspace):
    """The active survey's file; a missing one is the engine's clear error, before anything is submitted."""
    from fmb_engine.config import load
    from fmb_engine.survey.active import resolve_survey

    return resolve_survey(ws, load("general", ws).values.survey)  # type: ignore[attr-defined]


def _plain(stage: str, door: Callable[[], Callable]) -> Submitter:
    def submit_(ws: Workspace, resolved: Resolved, executor: str | None, tasks: int):
        from fmb_engine.jobs.submission import submit
        from fmb_engine.stage_run import config_record

        return submit(ws, stage, door(), ws, resolved, executor=executor, jobs=_jobs(ws),
                      snapshot=config_record(resolved))

    return submit_


def _mock():
    from fmb_engine.survey.stages import make_mock

    return make_mock


def _analyze_rankings():
    from fmb_engine.analyze.run import analyze_rankings

    return analyze_rankings


def _analyze_similarity():
    from fmb_engine.analyze.run import analyze_similarity

    return analyze_similarity


def _embed(model: str) -> Submitter:
    def submit_(ws: Workspace, resolved: Resolved, executor: str | None, tasks: int):
        from fmb_engine.jobs.stages import submit_embedding

        return submit_embedding(ws, _survey(ws), model, resolved, max(1, int(tasks)), executor, _jobs(ws))

    return submit_


def _retrain(task: str) -> Submitter:
    def submit_(ws: Workspace, resolved: Resolved, executor: str | None, tasks: int):
        from fmb_engine.jobs.stages import submit_retrain

        return submit_retrain(ws, _survey(ws), task, resolved, True, executor, _jobs(ws))

    return submit_


def _detect(ws: Workspace, resolved: Resolved, executor: str | None, tasks: int):
    from fmb_engine.detect.params import PARTS
    from fmb_engine.jobs.stages import submit_detect

    return submit_detect(ws, resolved, PARTS, executor, _jobs(ws))


def catalog() -> list[StageSpec]:
    """Every submittable stage: data, one per embedder, detection, the analyses the TUI shows."""
    from fmb_engine.embed import base

    specs = [StageSpec("data.mock", "mock", "data mock — simulate the mock survey", _plain("data.mock", _mock))]
    for name in base.names():
        specs.append(StageSpec(f"embed.{name}", f"embed.{name}", f"embed {name} — embeddings of the survey",
                               _embed(name), sharded=True))
    from fmb_engine.retrain.tasks import TASKS, section_of

    for task in TASKS:
        specs.append(StageSpec(f"retrain.{task}", section_of(task), f"retrain {task} — adapt the model on the survey",
                               _retrain(task)))
    specs.append(StageSpec("detect", "detect", "detect all — flows, mismatch, fusion, systems table", _detect))
    specs.append(StageSpec("analyze.rankings", "analyze", "analyze rankings — Spearman / Jaccard between systems",
                           _plain("analyze.rankings", _analyze_rankings)))
    specs.append(StageSpec("analyze.similarity", "analyze", "analyze similarity — nearest neighbours",
                           _plain("analyze.similarity", _analyze_similarity)))
    return specs


def submit_stage(ws: Workspace, spec: StageSpec, resolved: Resolved, executor: str | None, tasks: int = 1):
    """Submit one stage as a job (or job array); returns the engine's Submission (run id, job ids, notes)."""
    return spec.submit(ws, resolved, executor, tasks)
