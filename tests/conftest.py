"""Shared fixtures: small workspaces and mock surveys (fast, seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmb_engine.config import load
from fmb_engine.survey.stages import make_mock
from fmb_engine.workspace import Workspace

SMALL_MOCK = {"objects": 120, "image_size": 32, "batch_size": 40, "workers": -1}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    return Workspace.init(tmp_path / "ws")


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-object mock survey shared (read-only) by many tests."""
    ws = Workspace.init(tmp_path_factory.mktemp("shared") / "ws")
    return make_mock(ws, load("mock", cli=SMALL_MOCK)).outputs["survey"]


@pytest.fixture(scope="session")
def analysed(tmp_path_factory: pytest.TempPathFactory, small_survey: Path) -> tuple[Workspace, Path]:
    """A scored workspace (the small mock, cca + pca embeddings, detect with 2 epochs), read-only."""
    import shutil

    from fmb_engine.detect.run import detect
    from fmb_engine.embed.run import embed_survey

    ws = Workspace.init(tmp_path_factory.mktemp("analysed") / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    for model in ("cca", "pca"):
        embed_survey(ws, survey, model, load(f"embed.{model}", ws))
    detect(ws, load("detect", ws, cli={"epochs": 2, "iforest_trees": 50}))
    return ws, survey
