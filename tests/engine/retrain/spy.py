"""Run a retrain task as the CLI does while keeping a handle on the task object it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmb_engine.config import Resolved
from fmb_engine.retrain import run
from fmb_engine.retrain.tasks import section_of
from fmb_engine.workspace import Workspace


def retrain_keeping_task(ws: Workspace, survey: Path, task: str, config):
    """``run.retrain`` exactly as the CLI calls it; returns ``(TrainResult, the built TrainTask)``."""
    built = {}
    original = run.build_task

    def spy(name, cfg):
        built["task"] = original(name, cfg)
        return built["task"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "build_task", spy)
        result = run.retrain(ws, survey, task, Resolved(section_of(task), config, {}))
    return result, built["task"]
