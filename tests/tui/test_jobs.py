"""Jobs screen: the registry, one poll at a time, diffs, logs, cancel and resubmit with confirmation."""

import pytest
from textual.widgets import DataTable

from fmb_engine.jobs.submission import submit
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.selftest import fail, sleep_then, write_shard
from fmb_engine.jobs.states import State
from fmb_tui import clock
from fmb_tui.app import FMBApp
from fmb_tui.screens.dialogs import ConfirmDialog
from fmb_tui.screens.jobs import JobsScreen

from .conftest import settle
from .screen_text import screen_text

pytestmark = pytest.mark.asyncio


async def wait_poll(pilot, screen, before=None):
    """Ask for a poll now (ignored while one runs) and wait until one more has finished."""
    before = screen.polls if before is None else before
    screen.poll()
    for _ in range(500):
        await settle(pilot, 1)
        if screen.polls > before and not screen._polling:
            return
        await pilot.pause(0.01)
    raise AssertionError("no poll finished")


async def test_jobs_table_logs_and_resubmit(workspace, config, tmp_path):
    ok = submit(workspace, "selftest", write_shard, str(tmp_path / "out"), 0, 1, executor="debug")
    bad = submit(workspace, "selftest", fail, "boom", executor="debug")
    app = FMBApp(workspace, config, start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        await wait_poll(pilot, screen, 0)
        text = screen_text(app)
        assert "COMPLETED" in text and "FAILED" in text and "boom" in text
        assert "2 job(s), 0 active" in text
        # the log pane tails the highlighted job (newest first: the failed one)
        await wait_poll(pilot, screen)
        await settle(pilot)
        assert screen.current_job().job_id == bad.job_ids[0]
        assert "about to fail" in screen_text(app)
        await pilot.press("e")  # stderr
        await pilot.pause(0.05)
        await settle(pilot)
        assert "RuntimeError: boom" in "\n".join(screen.query_one("Log").lines)
        # polls never overlap: a second request while one runs is ignored
        screen.poll()
        screen.poll()
        assert len([w for w in app.workers if w.group == "jobs-poll" and not w.is_finished]) <= 1
        await wait_poll(pilot, screen)
        # cancel on an ended job: a warning, no dialog
        await pilot.press("c")
        assert not isinstance(app.screen, ConfirmDialog)
        # resubmit asks first; "n" leaves it alone, "y" resubmits
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.press("r", "y")
        await settle(pilot)
        await wait_poll(pilot, screen)
        with open_registry(workspace) as reg:
            jobs = reg.jobs(bad.run_id, include_superseded=True)
        assert [j.attempt for j in jobs] == [1, 2] and jobs[0].superseded_by == jobs[1].key
        assert len(screen._rows) == 2  # the superseded job left the table, its replacement came in
        assert ok.run_id in {j.run_id for j in screen.jobs.values()}


async def test_cancel_a_running_local_job(workspace, config):
    run = submit(workspace, "selftest", sleep_then, 60.0, executor="local")
    app = FMBApp(workspace, config, start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_poll(pilot, screen, 0)
        assert screen.current_job().state in (State.RUNNING, State.PENDING)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        for _ in range(100):
            await wait_poll(pilot, screen)
            if screen.current_job().state is State.CANCELLED:
                break
            screen.poll()
        assert screen.current_job().state is State.CANCELLED
        await settle(pilot)
        assert "CANCELLED" in screen_text(app) and "cancelled by the user" in screen_text(app)
    with open_registry(workspace) as reg:
        assert reg.jobs(run.run_id)[0].state is State.CANCELLED


async def test_elapsed_uses_the_clock(workspace, config, monkeypatch):
    submit(workspace, "selftest", write_shard, str(workspace.root / "o"), 0, 1, executor="debug")
    monkeypatch.setattr(clock, "now", lambda: 2_000_000_000.0)
    app = FMBApp(workspace, config, start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_poll(pilot, app.screen, 0)
        assert "/1:00:00" in screen_text(app)  # elapsed / the 60-minute default limit


async def test_a_sharded_detect_shows_as_the_tasks_of_one_run(workspace, config):
    from fmb_engine.config import load
    from fmb_engine.embed.synthetic import SyntheticSpec
    from fmb_engine.embed.synthetic_file import write_synthetic
    from fmb_engine.jobs.chain import submit_sharded_detect
    from fmb_engine.jobs.config import JobsConfig

    write_synthetic(workspace, SyntheticSpec(300, {"image": 8, "spectrum": 8}, seed=1, outlier_fraction=0.03))
    resolved = load("detect", workspace, cli={"epochs": 1, "iforest_trees": 10, "n_jobs": 1, "chunk_rows": 64})
    sub = submit_sharded_detect(workspace, resolved, ("flows", "mismatch", "fuse"), 2, "debug",
                                JobsConfig(executor="debug"))
    app = FMBApp(workspace, config, start="jobs")
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        await wait_poll(pilot, screen, 0)
        assert {j.run_id for j in screen.jobs.values()} == {sub.run_id}
        assert sorted(j.task_index for j in screen.jobs.values()) == list(range(6))  # 3 fits, 2 shards, merge
        text = screen_text(app)
        assert "detect.sharded" in text and "6 job(s), 0 active" in text and "FAILED" not in text
        # each task says its phase, as `jobs show` does, and the run's tasks are listed in order
        table = screen.query_one(DataTable)
        tasks = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        assert tasks == ["0 fit", "1 fit", "2 fit", "3 shard 0/2", "4 shard 1/2", "5 merge"]
