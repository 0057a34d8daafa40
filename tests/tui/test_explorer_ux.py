"""Usability fixes of the explorer (issue 11): what a real user met, each reproduced as a Pilot test."""

import json

import pyarrow.parquet as pq
import pytest

from fmb_engine.rankings import PROVENANCE_KEY, systems_path
from fmb_engine.config.tui import TuiConfig
from fmb_tui.app import FMBApp

from .conftest import saved, settle
from .screen_text import flat_text, screen_text

pytestmark = pytest.mark.asyncio


def _record_provenance(ws, record: dict) -> None:
    path = systems_path(ws)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                  PROVENANCE_KEY: json.dumps(record).encode()}), path)


async def test_anomalies_says_which_systems_come_from_older_detect_runs(tui_ws, config):
    _record_provenance(tui_ws, {
        "runs": {"astropt": {"run_id": "20261203T2140-detect-a", "started": "2026-12-03T21:40:00+0000"},
                 "aion": {"run_id": "20261201T1002-detect-b", "started": "2026-12-01T10:02:00+0000"}},
        "scored": ["astropt"], "dropped": ["cca"]})
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        text = flat_text(app)
        assert "systems from 2 detect runs: latest astropt 2026-12-03 21:40" in text
        assert "kept from older runs: aion 2026-12-01 10:02" in text
        assert "dropped (embeddings removed): cca" in text


async def test_a_ranking_from_one_detect_run_has_no_sources_line(tui_ws, config):
    _record_provenance(tui_ws, {"runs": {"astropt": {"run_id": "x", "started": "2026-12-03T21:40:00"},
                                         "aion": {"run_id": "x", "started": "2026-12-03T21:40:00"}},
                                "scored": ["astropt", "aion"], "dropped": []})
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        assert not app.screen.query_one("#anomalies-sources").display
        assert "detect runs" not in flat_text(app)


async def test_sort_by_the_abbreviated_header_name_scrolls_that_column_into_view(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(90, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.table
        assert "aion/spec/flow" not in screen_text(app)  # far right: off screen at first
        await pilot.press("s")
        await settle(pilot)
        await pilot.press(*"score aion/spec/flow", "enter")  # what the header shows, not the full name
        await settle(pilot)
        assert screen.spec.sort == "score:aion/spectrum/flow" and screen.spec.descending
        header = screen_text(app).splitlines()
        group_line = next(i for i, line in enumerate(header) if "aion/spec/flow" in line)
        start = header[group_line].index("aion/spec/flow")
        assert "score↓" in header[group_line + 1][start:start + 20]  # the sorted column, marked
        assert table.col_offset > 0
        # the system chooser finds a system by its header abbreviation too
        await pilot.press("m")
        await settle(pilot)
        await pilot.press(*"aion/img/flow", "enter")
        await settle(pilot)
        assert screen.spec.system == "aion/image/flow"


async def test_object_screen_names_the_band_it_shows(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert "band: RGB colour" in flat_text(app)
        await pilot.press("b")
        assert "band: VIS" in flat_text(app)
        await pilot.press("b")
        assert "band: NISP Y" in flat_text(app)


async def test_object_screen_shows_who_gave_each_label(tui_ws, config):
    from fmb_engine.triage.labels import LabelStore

    app = FMBApp(tui_ws, TuiConfig(user="ana"), start="anomalies")
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        oid = app.screen.table.current_id()
        with LabelStore.for_workspace(tui_ws, user="bo") as store:  # someone else labelled it before
            store.set_label(oid, "lens")
        app.reload_labels()
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert "history: label lens by bo" in flat_text(app)
        await pilot.press("2")  # ana relabels it: the history names her, newest first
        await saved(pilot)
        await settle(pilot)
        text = flat_text(app)
        assert "history: label interesting by ana" in text and "label lens by bo" in text
        assert text.index("by ana") < text.index("by bo")


async def test_compare_keeps_row_names_when_scrolled_and_moves_sideways(tui_ws, config):
    from textual.widgets import DataTable

    app = FMBApp(tui_ws, config, start="compare")
    async with app.run_test(size=(50, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        assert app.focused is table
        start = table.cursor_coordinate
        await pilot.press("right")
        assert table.cursor_coordinate.column == start.column + 1
        await pilot.press("l", "l", "l", "l", "l", "l", "l")
        await pilot.pause()
        assert table.cursor_coordinate.column == len(table.columns) - 1
        assert table.scroll_x > 0  # the matrix scrolled sideways…
        assert "astropt/image/flow" in flat_text(app)  # …and the row names stayed on screen
        await pilot.press("h", "j")
        assert table.cursor_coordinate.column == len(table.columns) - 2 and table.cursor_coordinate.row == start.row + 1


async def test_next_unlabelled_skips_what_is_triaged_in_the_order_shown(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.table
        ids = screen.rdata.ids_at(table.order[:6])
        for oid in ids[1:4]:  # rows 2..4 are labelled already
            app.labels[oid] = "artefact"
        screen.triage_changed()
        await pilot.press("N")
        assert table.cursor == 4
        await pilot.press("N")
        assert table.cursor == 5
        # from the Object screen, the same key walks the ranking it came from
        await pilot.press("g", "enter")
        await settle(pilot)
        await pilot.press("N")
        await settle(pilot)
        assert app.screen.object_id == ids[4] and table.cursor == 4
        # at the end of the order: a hint, the cursor stays
        await pilot.press("escape", "G")
        await settle(pilot)
        await pilot.press("N")
        assert table.cursor == table.n_rows - 1


async def test_escape_leaves_a_text_field_without_closing_the_screen(tui_ws, config):
    from textual.widgets import Input, OptionList, SelectionList

    from fmb_tui.screens.dialogs import FilterDialog
    from fmb_tui.screens.figures import FiguresScreen
    from fmb_tui.screens.runs import RunsScreen
    from fmb_tui.widgets.config_form import ConfigForm

    from .test_runs import wait_for

    app = FMBApp(tui_ws, config, start="figures")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#fig-k", Input).focus()
        await pilot.press("escape")
        assert isinstance(app.screen, FiguresScreen) and app.focused is screen.query_one("#fig-kind")
        # the run config form: escape leaves its field; the screen stays
        await pilot.press("R")
        runs = app.screen
        await wait_for(pilot, lambda: bool(runs.query(ConfigForm)), "the stage catalogue")
        await settle(pilot)
        runs.query_one(ConfigForm).query_one("#edit-objects", Input).focus()
        await settle(pilot)
        assert isinstance(app.focused, Input)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen) and not isinstance(app.focused, Input)
        assert isinstance(app.focused, OptionList)  # the stage list, the screen's first widget
        # a dialog with several fields: the first escape leaves the text field, the second cancels
        await pilot.press("A")
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, FilterDialog)
        dialog.query_one("#filter-min", Input).focus()
        await pilot.press("escape")
        assert app.screen is dialog and isinstance(app.focused, SelectionList)
        await pilot.press("escape")
        assert app.screen is not dialog
        # outside a text field escape keeps its meaning: the Object screen goes back
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen.NAME == "anomalies"


async def test_ctrl_s_accepts_every_dialog(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        oid = screen.table.current_id()
        await pilot.press("n")  # note: a prompt
        await settle(pilot)
        await pilot.press(*"odd", "ctrl+s")
        await saved(pilot)
        assert app.notes.get(oid) == "odd"
        await pilot.press("m")  # a choice
        await settle(pilot)
        await pilot.press(*"aion fused", "ctrl+s")
        await settle(pilot)
        assert screen.spec.system == "aion/fused/geo"
        await pilot.press("f")  # the filter form
        await settle(pilot)
        await pilot.press("tab", *"0.5", "ctrl+s")
        await settle(pilot)
        assert screen.spec.score_min == 0.5


async def test_a_partial_detect_run_is_named_on_the_anomalies_screen(analysed, tmp_path):
    """End to end: `detect --models cca` on a cca + pca workspace keeps pca's systems, and the screen says so."""
    import shutil

    from fmb_engine.config import load
    from fmb_engine.detect.run import detect
    from fmb_engine.workspace import Workspace

    src, _ = analysed
    shutil.copytree(src.root, tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    detect(ws, load("detect", ws, cli={"models": ["cca"]}), parts=("fuse",))
    app = FMBApp(ws, TuiConfig(), start="anomalies")
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        assert any(s.startswith("pca/") for s in app.screen.rdata.systems)
        text = flat_text(app)
        assert "systems from 2 detect runs: latest cca" in text and "kept from older runs: pca" in text
