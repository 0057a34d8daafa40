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
