"""What an hour of real use broke: the palette, odd run records, fast stage switching, errors in handlers."""

from __future__ import annotations

import threading

import pytest
from rich.text import Text
from textual.widgets import DataTable, OptionList

from fmb_engine.manifest import read_manifests
from fmb_tui.app import SCREENS, FMBApp
from fmb_tui.screens.object import ObjectScreen
from fmb_tui.screens.runs import manifest_summary, manifest_text
from fmb_tui.screens.workspace import WorkspaceScreen
from fmb_tui.widgets.config_form import ConfigForm

from .conftest import settle
from .screen_text import screen_text
from .fuzz_explorer import MARKUP_TEXT, add_odd_records

pytestmark = pytest.mark.asyncio


async def test_command_palette_opens_and_filters_on_every_screen(tui_ws, config):
    app = FMBApp(tui_ws, config)
    async with app.run_test(size=(80, 24)) as pilot:
        for screen in SCREENS:
            await app.switch_mode(screen)
            await settle(pilot)
            await pilot.press("ctrl+p")
            await pilot.press(*"label")  # the help of the label commands shows their keys: "[1]"
            await settle(pilot)
            app.action_show_screen("jobs" if screen != "jobs" else "runs")  # a screen key reaching the app
            await settle(pilot)
            await pilot.press("escape")  # the palette closes on the screen it was opened on
            await settle(pilot)
            assert app.current_mode == screen
    assert app.error_log.count == 0


async def test_an_exception_in_a_handler_is_logged_and_notified_and_the_app_goes_on(tui_ws, config, monkeypatch):
    def broken(self):
        raise RuntimeError(f"boom {MARKUP_TEXT}")

    app = FMBApp(tui_ws, config)
    app.strict_errors = False  # this test wants the error
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(WorkspaceScreen, "action_reload", broken)
        await pilot.press("r")
        await settle(pilot)
        assert app.is_running
        log = app.error_log.path.read_text(encoding="utf-8")
        assert "Traceback" in log and "RuntimeError: boom" in log and "in broken" in log
        shown = [n for n in app._notifications if n.title == "internal error"]
        assert len(shown) == 1 and str(app.error_log.path) in shown[0].message
        await pilot.press("r")  # the same error again: counted, not written or shown twice
        await settle(pilot)
        assert app.error_log.count == 2 and log == app.error_log.path.read_text(encoding="utf-8")
        await pilot.press("J")  # keys still work
        await settle(pilot)
        assert app.current_mode == "jobs"


async def test_an_exception_in_a_worker_is_logged_not_fatal(tui_ws, config):
    app = FMBApp(tui_ws, config)
    app.strict_errors = False

    def fails():
        raise ValueError("in a thread")

    async def fails_async():
        raise KeyError("in a task that would end the app")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.background(fails, then=print)
        app.run_worker(fails_async(), exit_on_error=True)
        await settle(pilot)
        assert app.is_running
        log = app.error_log.path.read_text(encoding="utf-8")
        assert "ValueError: in a thread" in log and "KeyError: 'in a task that would end the app'" in log


async def test_a_background_result_reaches_the_handler_the_call_names(tui_ws, config):
    app = FMBApp(tui_ws, config)
    got: list = []
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.background(divmod, 17, 5, then=got.append)
        screen.background(str.upper, "second", then=lambda value: got.append(("handler 2", value)))
        await settle(pilot)
        assert sorted(got, key=str) == [("handler 2", "SECOND"), (3, 2)]
        with pytest.raises(TypeError, match="then"):
            screen.background(divmod, 17, 5)  # no handler named: refused at the call, not dropped later
    assert app.error_log.count == 0


async def test_a_failing_background_job_is_logged_notified_and_handed_to_its_failure_handler(tui_ws, config):
    app = FMBApp(tui_ws, config)
    app.strict_errors = False  # this test wants the error
    results, failures = [], []

    def fails():
        raise ValueError(f"broken {MARKUP_TEXT}")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.background(fails, then=results.append, failed=failures.append)
        await settle(pilot)
        assert app.is_running and results == []
        assert [type(e) for e in failures] == [ValueError]
        log = app.error_log.path.read_text(encoding="utf-8")
        assert "Traceback" in log and "ValueError: broken" in log and "in fails" in log
        shown = [n for n in app._notifications if n.title == "internal error"]
        assert len(shown) == 1 and "ValueError: broken" in shown[0].message


async def _until(pilot, condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


async def test_a_superseded_job_that_fails_is_logged_but_not_shown(tui_ws, config):
    """A newer job of the same group drops the older one's result; its failure still reaches the log."""
    app = FMBApp(tui_ws, config)
    app.strict_errors = False
    started, gate = threading.Event(), threading.Event()
    got, failures = [], []

    def slow_failure():
        started.set()
        gate.wait(10)
        raise ValueError("from the superseded job")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.background(slow_failure, then=got.append, failed=failures.append, group="same")
        await _until(pilot, started.is_set)
        screen.background(str, "newer", then=got.append, failed=failures.append, group="same")
        await settle(pilot)
        gate.set()
        await _until(pilot, lambda: app.error_log.count == 1)
        await settle(pilot)
        assert got == ["newer"] and failures == []
        assert "ValueError: from the superseded job" in app.error_log.path.read_text(encoding="utf-8")


async def test_a_job_failing_after_its_screen_closed_is_still_reported(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    app.strict_errors = False
    started, gate = threading.Event(), threading.Event()

    def slow_failure():
        started.set()
        gate.wait(10)
        raise ValueError("after the object screen closed")

    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ObjectScreen)
        app.screen.background(slow_failure, then=print, group="late")
        await _until(pilot, started.is_set)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, ObjectScreen)
        gate.set()
        await _until(pilot, lambda: app.error_log.count == 1)
        assert "ValueError: after the object screen closed" in app.error_log.path.read_text(encoding="utf-8")


async def test_every_odd_run_record_renders(tui_ws):
    add_odd_records(tui_ws)
    records = read_manifests(tui_ws)
    assert sum(1 for r in records if r.get("status") == "unreadable") == 3  # a list, truncated JSON, binary
    for record in records + [None, "text", 3]:
        started, status, stage = manifest_summary(record)
        assert isinstance(status, Text) and isinstance(stage, str)
        assert isinstance(manifest_text(record), Text)
    markup = next(r for r in records if r.get("run_id") == MARKUP_TEXT)
    assert MARKUP_TEXT in manifest_text(markup).plain  # shown literally, not parsed


async def test_a_runs_error_reads_as_type_and_message():
    """The engine's end-state record (docs/formats.md) in the run detail; an older plain-text error as it is."""
    failed = {"run_id": "r", "status": "failed", "error": {"type": "DataError", "message": "no rankings"}}
    interrupted = {"run_id": "r", "status": "interrupted", "error": {"type": "KeyboardInterrupt", "message": ""}}
    assert "error DataError: no rankings" in manifest_text(failed).plain
    assert "error KeyboardInterrupt" in manifest_text(interrupted).plain
    assert "error RuntimeError: gone" in manifest_text({"status": "failed", "error": "RuntimeError: gone"}).plain
    assert "error" not in manifest_text({"status": "completed", "error": None}).plain


async def test_runs_screen_with_odd_records_and_fast_stage_switching(tui_ws, config):
    add_odd_records(tui_ws)
    app = FMBApp(tui_ws, config, start="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        for _ in range(300):
            await settle(pilot, 1)
            if screen.query(ConfigForm):
                break
        table = screen.query_one("#manifests", DataTable)
        assert table.row_count == len(read_manifests(tui_ws))
        table.focus()
        await pilot.press(*["down"] * table.row_count)  # every record's detail
        stages = screen.query_one("#stages", OptionList)
        stages.focus()
        await pilot.press(*["down", "down", "up"] * 8, "ctrl+s", *["down"] * 5, "ctrl+r")
        await settle(pilot)
        for _ in range(100):
            await settle(pilot, 1)
            forms = screen.query(ConfigForm)
            if len(forms) == 1 and forms.first().is_mounted:
                break
        highlighted = stages.options[stages.highlighted].id
        assert len(screen.query(ConfigForm)) == 1
        assert screen.current_form().section == screen.specs[highlighted].section


def _styled_lines(app, attribute: str, min_chars: int = 20) -> list[str]:
    """Lines of the painted screen with at least ``min_chars`` characters carrying ``attribute`` (reverse, underline)."""
    screen = app.screen
    screen._refresh_layout(app.size)
    out = []
    for strip in screen._compositor.render_strips():
        marked = "".join(seg.text for seg in strip if seg.style is not None and getattr(seg.style, attribute))
        if len(marked.strip()) >= min_chars:
            out.append(marked)
    return out


async def test_no_color_keeps_cursors_visible_and_help_is_reachable_at_80x24(tui_ws, config, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.no_color
        first = app.screen.query_one("RankingTable").current_id()
        cursor_rows = _styled_lines(app, "reverse")
        assert len(cursor_rows) == 1 and first in cursor_rows[0]  # the cursor row, and only it, in reverse
        footer = screen_text(app).splitlines()[-1]
        assert footer.lstrip().startswith("? Help")  # the key to every other key fits at 80 columns
        await pilot.press("question_mark")
        await settle(pilot)
        text = screen_text(app)
        assert "Move to the next candidate." in text and "Label the current object 'artefact'." in text
        await pilot.press("escape")
        await app.switch_mode("runs")
        for _ in range(300):
            await settle(pilot, 1)
            if app.screen.query(ConfigForm):
                break
        assert any("data.mock" in line for line in _styled_lines(app, "underline", 9))  # the highlighted stage
