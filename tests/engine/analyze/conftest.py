"""A small scored workspace (120 mock objects, cca + pca embeddings, detect with 2 epochs)."""

import shutil

import pytest


@pytest.fixture(scope="session")
def analysed(tmp_path_factory, small_survey):
    from fmb_engine.config import load
    from fmb_engine.detect.run import detect
    from fmb_engine.embed.run import embed_survey
    from fmb_engine.sections import register_all
    from fmb_engine.workspace import Workspace

    register_all()
    ws = Workspace.init(tmp_path_factory.mktemp("analyze") / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    for model in ("cca", "pca"):
        embed_survey(ws, survey, model, load(f"embed.{model}", ws))
    detect(ws, load("detect", ws, cli={"epochs": 2, "iforest_trees": 50}))
    return ws, survey
