"""The app starts on the workspace screen, reads the workspace in the background and quits cleanly."""

import os

import pytest

from fmb_tui.app import FMBApp

from .conftest import quit_and_wait, settle
from .screen_text import screen_text

pytestmark = pytest.mark.asyncio


async def test_overview_lists_surveys_and_quits(workspace, small_survey, config):
    os.symlink(small_survey, workspace.folder("survey") / "mock.h5")
    app = FMBApp(workspace, config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "mock.h5: 120 objects" in screen_text(app)
        await pilot.press("q")
    assert app.return_code == 0


async def test_quit_action_drains_and_exits(workspace, config):
    app = FMBApp(workspace, config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await quit_and_wait(app)
    assert app.return_code == 0


async def test_empty_workspace_says_what_to_do(workspace, config):
    app = FMBApp(workspace, config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "fmb-engine data mock" in screen_text(app)
