"""The whole triage flow: keys -> labels in the database (user, time, history), notes, undo, other users."""

import csv

import pytest

from fmb_engine.config.tui import TuiConfig
from fmb_engine.triage.labels import LabelStore, labels_path
from fmb_tui.app import FMBApp
from fmb_tui.widgets.ranking_table import RankingTable

from .conftest import quit_and_wait, saved, settle
from .screen_text import screen_text

pytestmark = pytest.mark.asyncio


def top_ids(app, n):
    screen = app.screen
    return screen.rdata.ids_at(screen.query_one(RankingTable).order[:n])


async def test_walk_label_note_undo(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        first, second, third = top_ids(app, 3)
        await pilot.press("1", "j", "2", "j", "4")
        await saved(pilot)
        with LabelStore.for_workspace(tui_ws, user="checker") as db:
            assert db.labels() == {first: "artefact", second: "interesting", third: "lens"}
            hist = db.history()
            assert [e.rank for e in hist] == [1, 2, 3]
            assert {e.system for e in hist} == {"astropt/fused/geo"}
            assert hist[0].user == app.data.labels().user and hist[0].time > 0
        assert "top-100: 3/100 labelled" in screen_text(app)
        # relabel the current one, then undo twice: back to lens, then nothing
        await pilot.press("5")
        await saved(pilot)
        assert app.labels[third] == "merger"
        await pilot.press("u")
        await saved(pilot)
        assert app.labels[third] == "lens"
        await pilot.press("u")
        await saved(pilot)
        assert third not in app.labels
        with LabelStore.for_workspace(tui_ws) as db:
            assert third not in db.labels() and len(db.history(third)) == 4
        # a note: n, type, enter
        await pilot.press("n")
        await settle(pilot)
        await pilot.press(*"ring?", "enter")
        await saved(pilot)
        with LabelStore.for_workspace(tui_ws) as db:
            assert db.notes() == {third: "ring?"}
        # clear a label with 0
        await pilot.press("k", "0")
        await saved(pilot)
        with LabelStore.for_workspace(tui_ws) as db:
            assert second not in db.labels()
        # export: e writes a CSV in triage/
        await pilot.press("e")
        await settle(pilot)
        files = sorted((tui_ws.root / "triage").glob("labels-*.csv"))
        assert files
        rows = {r["object_id"]: r for r in csv.DictReader(files[-1].open())}
        assert rows[first]["label"] == "artefact" and rows[third]["note"] == "ring?"


async def test_labels_survive_a_quit_at_once(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        ids = top_ids(app, 3)
        await pilot.press("3", "j", "3", "j", "3")
        await quit_and_wait(app)  # at once, while the writer may still be busy: quitting drains the queue first
    with LabelStore.for_workspace(tui_ws) as db:
        assert db.labels() == dict.fromkeys(ids, "AGN")


async def test_another_users_labels_show_up(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        first, second = top_ids(app, 2)
        await pilot.press("2")
        await saved(pilot)
        with LabelStore.for_workspace(tui_ws, user="bob") as bob:
            bob.set_label(second, "merger")
            bob.set_label(first, "lens")
        app._check_labels()
        await settle(pilot)
        assert app.labels == {first: "lens", second: "merger"}
        assert "top-100: 2/100 labelled" in screen_text(app)
        # my undo now refuses: bob changed that object since; the message says so, nothing breaks
        await pilot.press("u")
        await saved(pilot)
        notes = [n.message for n in app._notifications]
        assert any("bob changed it since" in m for m in notes)
        assert app.labels[first] == "lens"


async def test_custom_label_set_and_advance(tui_ws):
    config = TuiConfig(labels=["junk", "keep"], advance=True, top_k=5)
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        ids = top_ids(app, 3)
        await pilot.press("2", "1", "9")  # 9 is not in a two-label set: a warning, nothing stored
        await saved(pilot)
        assert app.labels == {ids[0]: "keep", ids[1]: "junk"}
        assert app.screen.query_one(RankingTable).cursor == 2
        assert "top-5: 2/5 labelled" in screen_text(app)
        assert any("no label on key 9" in n.message for n in app._notifications)
    assert labels_path(tui_ws).is_file()


async def test_triage_from_the_object_screen(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        first, second = top_ids(app, 2)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.NAME == "object" and app.screen.object_id == first
        await pilot.press("4", "j")
        await settle(pilot)
        assert app.screen.object_id == second
        await pilot.press("6")
        await saved(pilot)
        with LabelStore.for_workspace(tui_ws) as db:
            assert db.labels() == {first: "lens", second: "normal"}
            assert [e.rank for e in db.history()] == [1, 2]
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen.NAME == "anomalies"
        assert app.screen.query_one(RankingTable).cursor == 1
        assert "top-100: 2/100 labelled" in screen_text(app)


async def test_a_label_that_fails_to_save_is_said_and_a_bug_is_logged(tui_ws, config, monkeypatch):
    """A store refusal (FMBError) is a notification; any other exception is also logged with its traceback."""
    from fmb_engine.triage.labels import TriageError

    app = FMBApp(tui_ws, config, start="anomalies")
    app.strict_errors = False  # this test wants the error
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)

        def refused(self, *args, **kwargs):
            raise TriageError("the store refuses")

        monkeypatch.setattr(LabelStore, "set_label", refused)
        await pilot.press("1")
        await saved(pilot)
        await settle(pilot)
        failed = [n for n in app._notifications if n.title == "label not saved"]
        assert [n.message for n in failed] == ["the store refuses"] and app.error_log.count == 0

        def broken(self, *args, **kwargs):
            raise RuntimeError("a bug in the store")

        monkeypatch.setattr(LabelStore, "set_label", broken)
        await pilot.press("2")
        await saved(pilot)
        await settle(pilot)
        failed = [n for n in app._notifications if n.title == "label not saved"]
        assert failed[-1].message == "RuntimeError: a bug in the store"
        log = app.error_log.path.read_text(encoding="utf-8")
        assert "Traceback" in log and "RuntimeError: a bug in the store" in log and "label writer: label" in log
        assert any(n.title == "internal error" for n in app._notifications)
        assert app.is_running
