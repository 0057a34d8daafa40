"""The stages the Runs screen can submit, with their config section (no UI imports).

Each entry says which config section its form is generated from and how to turn the
validated config into a job: an importable stage door (submitit pickles it by reference)
and its arguments. Submission goes through ``fmb_engine.jobs.executors.submit``, so runs
from the TUI are recorded, polled, cancelled and resubmitted like runs from the CLI.

Building the catalogue imports the embedders (torch): call :func:`catalog` from a worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fmb_engine.config import Resolved
from fmb_engine.workspace import Workspace

Builder = Callable[[Workspace, Resolved], tuple[Callable[..., Any], tuple, dict]]


@dataclass(frozen=True)
class StageSpec:
    name: str  # stage id recorded with the run, e.g. "embed.pca"
    section: str  # config section of the form
    title: str
    build: Builder


def _mock(ws: Workspace, resolved: Resolved):
    from fmb_engine.survey.stages import make_mock

    return make_mock, (ws, resolved), {}


def _embed(model: str):
    def build(ws: Workspace, resolved: Resolved):
        from fmb_engine.config import load
        from fmb_engine.embed.run import embed_survey

        survey = ws.survey_path(load("general", ws).values.survey)  # type: ignore[attr-defined]
        return embed_survey, (ws, survey, model, resolved), {}

    return build


def _detect_door() -> tuple[str, Callable[..., Any]] | None:
    """The detection stage door when the engine has one (``fmb_engine.detect.run``)."""
    try:
        module = importlib.import_module("fmb_engine.detect.run")
    except ImportError:
        return None
    for name in ("detect_all", "run_detect", "detect"):
        fn = getattr(module, name, None)
        if callable(fn):
            return name, fn
    return None


def catalog() -> list[StageSpec]:
    """Every submittable stage, data first, then one per embedder, then detection (when present)."""
    specs = [StageSpec("data.mock", "mock", "data mock — simulate the mock survey", _mock)]
    try:
        from fmb_engine.embed import base
        from fmb_engine.embed.run import register_embed_sections

        register_embed_sections()
        for name in base.names():
            specs.append(StageSpec(f"embed.{name}", f"embed.{name}", f"embed {name}", _embed(name)))
    except ImportError:  # pragma: no cover - an install without the embedding extras
        pass
    door = _detect_door()
    if door is not None:
        from fmb_engine.config import SECTIONS

        section = "detect" if "detect" in SECTIONS else None
        if section is not None:
            fn = door[1]
            specs.append(StageSpec("detect", section, "detect all — score anomalies with every system",
                                   lambda ws, resolved: (fn, (ws, resolved), {})))
    return specs


def submit_stage(ws: Workspace, spec: StageSpec, resolved: Resolved, executor: str | None):
    """Submit one stage as a job; returns the engine's Submission (run id, job ids, notes)."""
    from fmb_engine.jobs.executors import jobs_config, submit
    from fmb_engine.survey.stages import config_record

    fn, args, kwargs = spec.build(ws, resolved)
    return submit(ws, spec.name, fn, *args, executor=executor, jobs=jobs_config(ws), snapshot=config_record(resolved),
                  **kwargs)
