"""A ranking built from other inputs than the workspace holds is refused with the rerun, never shown as current."""

import json

import pyarrow.parquet as pq
import pytest

from fmb_engine import lineage, rankings
from fmb_tui.app import FMBApp
from fmb_tui.screens.anomalies import AnomaliesScreen

from .conftest import settle
from .screen_text import flat_text

pytestmark = pytest.mark.asyncio


def _stamp_with_another_survey(ws) -> None:
    """Record in systems.parquet that it was built from a survey other than the active one."""
    path = rankings.systems_path(ws)
    table = pq.read_table(path)
    record = json.dumps({"inputs": {lineage.SURVEY: "0" * 64}}).encode()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), lineage.SYSTEMS_KEY: record}), path)


async def test_a_stale_ranking_shows_what_to_rerun_and_no_ranks(tui_ws, config):
    _stamp_with_another_survey(tui_ws)
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AnomaliesScreen)
        assert screen.rdata is None  # no stale rank is shown as current
        text = flat_text(app)
        assert "stale" in text and "the survey was replaced" in text and "fmb-engine detect all" in text
        assert "Traceback" not in text
        await pilot.press("j", "s", "f")  # nothing to act on: no crash
        await settle(pilot)
        assert app.is_running


async def test_the_workspace_screen_marks_embeddings_of_another_survey_and_says_what_to_rerun(tui_ws, config):
    import h5py

    from fmb_engine.config import load
    from fmb_engine.embed.run import embed_survey
    from fmb_tui.screens.workspace import WorkspaceScreen

    survey = lineage.active_survey(tui_ws)
    embed_survey(tui_ws, survey, "pca", load("embed.pca", tui_ws))
    with h5py.File(tui_ws.folder("embeddings") / "pca.h5", "a") as f:
        f.attrs["survey_digest"] = "0" * 32  # as if embedded before the survey was replaced
    app = FMBApp(tui_ws, config, start="workspace")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, WorkspaceScreen)
        text = flat_text(app)
        assert "pca.h5: pca" in text and "stale: embeddings/pca.h5 was embedded from another survey" in text
        assert "recompute the embeddings made from another survey: `fmb-engine embed pca`" in text
