"""Anomalies screen: the ranking, sorting, filtering, jumping, systems, preview."""

import pytest

from fmb_tui.app import FMBApp
from fmb_tui.screens.anomalies import AnomaliesScreen
from fmb_tui.widgets.ranking_table import RankingTable

from .conftest import settle
from .screen_text import flat_text, screen_text

pytestmark = pytest.mark.asyncio


async def open_anomalies(ws, config, size=(100, 30)):
    app = FMBApp(ws, config, start="anomalies")
    return app


async def test_ranking_opens_sorted_by_rank_with_every_system(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AnomaliesScreen)
        table = screen.query_one(RankingTable)
        assert table.n_rows == 120
        data, system = screen.rdata, screen.spec.system
        assert system == "astropt/fused/geo"  # the first fused system
        ranks = [int(data.ranks[system][r]) for r in table.order[:5]]
        assert ranks == [1, 2, 3, 4, 5]
        assert all(data.loaded(s) for s in data.systems)  # the other systems arrived in the background
        text = screen_text(app)
        assert "rank↑ object_id" in text and "top-100: 0/100 labelled" in text
        await pilot.press("j", "j", "k")
        assert table.cursor == 1
        await pilot.press("G")
        assert table.cursor == 119
        await pilot.press("g")
        assert table.cursor == 0


async def test_sort_filter_search_jump_and_switch_system(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one(RankingTable)
        data = screen.rdata
        # sort by a score column of another system, through the dialog (type to filter, enter)
        await pilot.press("s")
        await settle(pilot)
        await pilot.press(*"score in aion/image", "enter")
        await settle(pilot)
        assert screen.spec.sort == "score:aion/image/flow" and screen.spec.descending
        scores = data.scores["aion/image/flow"][table.order]
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))
        await pilot.press("S")  # reverse
        await settle(pilot)
        scores = data.scores["aion/image/flow"][table.order]
        assert all(a <= b for a, b in zip(scores, scores[1:], strict=False))
        # id text filter
        await pilot.press("slash")
        await settle(pilot)
        await pilot.press(*"00011", "enter")
        await settle(pilot)
        ids = data.ids_at(table.order)
        assert ids and all("00011" in i for i in ids)
        assert "id ~ '00011'" in screen_text(app)
        await pilot.press("x")
        await settle(pilot)
        assert table.n_rows == 120
        # jump to rank 57 of the current system
        await pilot.press("colon")
        await settle(pilot)
        await pilot.press("5", "7", "enter")
        await settle(pilot)
        row = table.current_row()
        assert int(data.ranks[screen.spec.system][row]) == 57
        # a rank out of range is refused inside the dialog
        await pilot.press("colon")
        await settle(pilot)
        await pilot.press("9", "9", "9", "enter")
        await settle(pilot)
        assert "ranks go from 1 to 120" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        # another system
        await pilot.press("m")
        await settle(pilot)
        await pilot.press(*"aion/spectrum", "enter")
        await settle(pilot)
        assert screen.spec.system == "aion/spectrum/flow"
        assert [int(data.ranks["aion/spectrum/flow"][r]) for r in table.order[:3]] == [1, 2, 3]
        assert "aion/spectrum/flow" in screen_text(app)


async def test_ranking_by_the_cross_modal_mismatch(tui_ws, config):
    """detect writes <model>/cross/mismatch systems: the screen opens, ranks and lists them like any other."""
    app = FMBApp(tui_ws, config, start="anomalies", system="aion/cross/mismatch")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one(RankingTable)
        assert screen.spec.system == "aion/cross/mismatch"
        assert [int(screen.rdata.ranks["aion/cross/mismatch"][r]) for r in table.order[:3]] == [1, 2, 3]
        assert "aion/cross/mismatch" in screen_text(app)
        await pilot.press("m")
        await settle(pilot)
        assert "astropt/cross/mismatch   cross" in screen_text(app)  # the system dialog names its modality


async def test_filter_by_label_and_score(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one(RankingTable)
        await pilot.press("4", "j", "j", "4", "j", "5")
        await settle(pilot)
        from fmb_tui.screens.dialogs import FilterDialog

        await pilot.press("f")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, FilterDialog)
        dialog.query_one("SelectionList").select("lens")
        await pilot.pause()
        dialog.action_apply()
        await settle(pilot)
        labelled = screen.rdata.ids_at(table.order)
        assert len(labelled) == 2 and all(app.labels[i] == "lens" for i in labelled)
        # score range on the current system
        screen.spec = screen.spec.with_(labels=None, score_min=0.0, score_max=1.0)
        screen.recompute()
        await settle(pilot)
        s = screen.rdata.scores[screen.spec.system][table.order]
        assert len(s) and (s >= 0).all() and (s <= 1).all()
        # unlabelled only
        screen.spec = screen.spec.with_(labels=frozenset({""}), score_min=None, score_max=None)
        screen.recompute()
        await settle(pilot)
        assert table.n_rows == 117


async def test_preview_and_open_object(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.pause(0.1)  # the preview waits for the key repeat to settle
        await settle(pilot)
        screen = app.screen
        spectrum = screen.query_one("#preview-spectrum")
        assert spectrum.obj is not None and spectrum.obj.object_id == screen.triage_target()[0]
        assert "z=" in screen_text(app) and "Å" in screen_text(app)
        await pilot.press("p")  # hide the preview: the table gets the room
        assert not screen.query_one("#preview").display
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.NAME == "object"


async def test_preview_says_a_data_problem_and_reports_a_bug(tui_ws, config, monkeypatch):
    """An object the survey cannot give is said in the preview; any other exception is also logged and notified."""
    from fmb_engine.errors import DataError

    app = FMBApp(tui_ws, config, start="anomalies")
    app.strict_errors = False  # the second half wants the error
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        screen = app.screen
        spectrum = screen.query_one("#preview-spectrum")

        def missing(object_id):
            raise DataError(f"{object_id}: not in the survey file")

        monkeypatch.setattr(app.data, "get_object", missing)
        await pilot.press("j")
        await pilot.pause(0.1)
        await settle(pilot)
        oid = screen.triage_target()[0]
        assert spectrum.obj is None and spectrum.message == f"{oid}: not in the survey file"
        assert app.error_log.count == 0

        def broken(object_id):
            raise RuntimeError("a bug in the reader")

        monkeypatch.setattr(app.data, "get_object", broken)
        await pilot.press("j")
        await pilot.pause(0.1)
        await settle(pilot)
        assert spectrum.message == "RuntimeError: a bug in the reader"
        assert "RuntimeError: a bug in the reader" in app.error_log.path.read_text(encoding="utf-8")
        assert any(n.title == "internal error" for n in app._notifications)


async def test_no_ranking_yet_says_what_to_run(workspace, small_survey, config):
    app = FMBApp(workspace, config, start="anomalies")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = flat_text(app)
        assert "fmb-engine detect all" in text
        assert "Traceback" not in text
        await pilot.press("j", "1", "s", "f", "colon", "enter")  # nothing to act on: no crash
        await settle(pilot)
        assert app.is_running
