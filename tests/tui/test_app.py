"""Pilot tests of fmb-tui (the minimal workspace overview)."""

import pytest

from fmb_tui.app import FMBApp


@pytest.mark.asyncio
async def test_overview_lists_surveys_and_quits(workspace, small_survey):
    import shutil

    shutil.copy(small_survey, workspace.folder("survey") / "mock.h5")
    app = FMBApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        text = str(app.query_one("#overview").render())
        assert "mock.h5: 120 objects" in text
        await pilot.press("q")
    assert app.return_code == 0 or app.return_code is None


@pytest.mark.asyncio
async def test_empty_workspace_says_what_to_do(workspace):
    app = FMBApp(workspace)
    async with app.run_test(size=(80, 24)):
        assert "fmb-engine data mock" in str(app.query_one("#overview").render())
