"""SVG snapshots of the main screens (pytest-textual-snapshot; Textual pinned: see docs/tui.md).

Update after an intended change: ``pytest tests/tui/test_snapshots.py --snapshot-update``, then
look at the SVGs under ``tests/tui/__snapshots__/`` before committing them.
"""

from __future__ import annotations

import time

import pytest

from fmb_engine.jobs.registry import JobRecord, RunRecord, open_registry
from fmb_engine.jobs.states import State
from fmb_tui import clock
from fmb_tui.app import FMBApp
from fmb_tui.screens.jobs import JobsScreen

from .conftest import settle

T0 = time.mktime((2026, 5, 4, 9, 30, 0, 0, 0, -1))


@pytest.fixture(autouse=True)
def _frozen(monkeypatch):
    monkeypatch.setattr(clock, "now", lambda: T0 + 3600)


def make_app(ws, config, start, **kw):
    return FMBApp(ws, config, start=start, root_label="~/runs/demo", **kw)


async def ready(pilot) -> None:
    await settle(pilot)
    await pilot.pause(0.1)  # the preview waits for the key repeat to settle
    await settle(pilot)


def test_workspace(snap_compare, tui_ws, config):
    assert snap_compare(make_app(tui_ws, config, "workspace"), terminal_size=(80, 24), run_before=ready)


def test_anomalies_80x24(snap_compare, tui_ws, config):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("2", "j", "j", "4", "j")
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "anomalies"), terminal_size=(80, 24), run_before=run_before)


def test_anomalies_wide(snap_compare, tui_ws, config):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("l")
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "anomalies"), terminal_size=(140, 40), run_before=run_before)


def test_object(snap_compare, tui_ws, config):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("enter")
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "anomalies"), terminal_size=(100, 32), run_before=run_before)


def test_help(snap_compare, tui_ws, config):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("question_mark")
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "anomalies"), terminal_size=(100, 32), run_before=run_before)


def test_compare(snap_compare, tui_ws, config):
    assert snap_compare(make_app(tui_ws, config, "compare"), terminal_size=(100, 24), run_before=ready)


def test_runs(snap_compare, tui_ws, config, monkeypatch):
    """The stage list is pinned: other tests may register extra embedders in this process."""
    import fmb_tui.stages as stages

    real = stages.catalog
    monkeypatch.setattr(stages, "catalog", lambda: [s for s in real() if s.name in ("data.mock", "embed.pca", "embed.cca")])

    async def run_before(pilot):
        from fmb_tui.widgets.config_form import ConfigForm

        for _ in range(500):
            await settle(pilot, 1)
            if pilot.app.screen.query(ConfigForm):
                break
            await pilot.pause(0.01)
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "runs"), terminal_size=(100, 32), run_before=run_before)


def test_jobs(snap_compare, tui_ws, config):
    """Registry rows with fixed times (terminal states: a poll leaves them as they are)."""
    with open_registry(tui_ws) as reg:
        folder = str(tui_ws.folder("jobs") / "r1")
        run = RunRecord("20260504T093000-embed.pca-abc123", "embed.pca", "slurm", folder, created=T0,
                        params={"time": 120}, n_tasks=3, is_array=True, host="login1", user="ana")
        jobs = [
            JobRecord("", "4242_0", State.COMPLETED, T0, "4242", 0, started=T0 + 60, ended=T0 + 900, node="gpu01",
                      exit_code="0:0"),
            JobRecord("", "4242_1", State.FAILED, T0, "4242", 1, started=T0 + 60, ended=T0 + 400, node="gpu02",
                      exit_code="1:0", error="RuntimeError: CUDA out of memory"),
            JobRecord("", "4242_2", State.TIMEOUT, T0, "4242", 2, started=T0 + 60, ended=T0 + 7260, node="gpu03"),
        ]
        reg.add_run(run, jobs)

    async def run_before(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, JobsScreen)
        for _ in range(500):
            await settle(pilot, 1)
            if screen.polls:
                break
            await pilot.pause(0.01)
        await ready(pilot)

    assert snap_compare(make_app(tui_ws, config, "jobs"), terminal_size=(100, 24), run_before=run_before)
