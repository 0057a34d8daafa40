"""Active discovery in the explorer: the re-rank key, the line saying what the order reflects, auto mode."""

import threading

import numpy as np
import pytest

from fmb_engine.config.tui import TuiConfig
from fmb_engine.triage.labels import LabelStore
from fmb_tui import ranking_model as rm
from fmb_tui.app import FMBApp
from fmb_tui.data import WorkspaceData
from fmb_tui.screens.anomalies import AnomaliesScreen
from fmb_tui.screens.object import ObjectScreen
from fmb_tui.widgets.ranking_table import RankingTable

from .conftest import saved, settle

pytestmark = pytest.mark.asyncio

BASE = "cca/fused/geo"
ACTIVE = "cca/fused/active"


def alice() -> TuiConfig:
    return TuiConfig(user="alice")


def anomalies(app) -> AnomaliesScreen:
    screen = next(s for s in app.screen_stack if isinstance(s, AnomaliesScreen))
    return screen


def active_line(app) -> str:
    line = anomalies(app).query_one("#anomalies-active")
    return str(line.render()) if line.display else ""


@pytest.fixture(autouse=True)
def _same_priority(monkeypatch) -> None:
    """The child process runs at the tests' priority: on a busy test machine a niced one waits for every other."""
    monkeypatch.setattr("fmb_tui.data.RERANK_NICENESS", 0)


@pytest.fixture(autouse=True)
def said(monkeypatch) -> list[tuple[str, str, str]]:
    """Every notification (title, message, severity): Textual drops them from the screen after seconds."""
    shown: list[tuple[str, str, str]] = []
    notify = FMBApp.notify

    def record(self, message, *, title="", severity="information", timeout=None, markup=False):
        shown.append((title, message, severity))
        notify(self, message, title=title, severity=severity, timeout=timeout, markup=markup)

    monkeypatch.setattr(FMBApp, "notify", record)
    return shown


def store_ids(ws) -> list[str]:
    import pyarrow.parquet as pq

    from fmb_engine.rankings import systems_path

    return pq.read_table(systems_path(ws), columns=["object_id"]).column(0).to_pylist()


def messages(said, title: str | None = None) -> list[str]:
    return [m for t, m, _ in said if title is None or t == title]


async def label_top(pilot, keys: str) -> None:
    """Label the rows from the top, one key each (tui.advance is off: j moves on)."""
    await pilot.press("g")
    for key in keys:
        await pilot.press(key, "j")
    await saved(pilot)


async def test_rerank_key_shows_the_active_order_on_an_unlabelled_candidate(discover_ws, said):
    app = FMBApp(discover_ws, alice(), start="anomalies")
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(pilot)
        screen = anomalies(app)
        table = screen.query_one(RankingTable)
        assert screen.spec.system == BASE and active_line(app) == ""
        base_top = screen.rdata.ids_at(table.order[:20])
        await label_top(pilot, "112212")  # enough labels to learn from (strategies.MIN_LABELS)
        await pilot.press("a")
        await settle(pilot, 6)
        assert screen.spec.system == ACTIVE
        new_top = screen.rdata.ids_at(table.order[:20])
        assert new_top != base_top
        ranks = screen.rdata.ranks[ACTIVE][table.order]
        assert np.all(np.diff(ranks) >= 0)  # shown in the active system's rank order
        # the cursor is on the first unlabelled candidate of the new order
        assert table.current_id() not in app.labels
        assert table.cursor == rm.next_unlabelled(screen.rdata, table.order, -1, app.labels)
        assert any(ACTIVE in m for m in messages(said, "re-ranked"))
        line = active_line(app)
        assert "evidence · 6 labels (alice 6)" in line and "up to date" in line
        assert "re-ranking" not in str(screen.query_one("#anomalies-status").render())

        # one more label (on the row under the cursor: unlabelled): stale by one
        await pilot.press("3")
        await saved(pilot)
        await settle(pilot)
        assert "stale: 1 label since (a re-ranks)" in active_line(app)
        # a label by someone else arrives through the label sync and counts too
        other = next(oid for oid in screen.rdata.ids_at(table.order) if oid not in app.labels)
        with LabelStore.for_workspace(discover_ws, user="bob") as store:
            store.set_label(other, "lens")
        app._check_labels()
        await settle(pilot)
        assert app.labels[other] == "lens"
        assert "stale: 2 labels since" in active_line(app)
        # undoing a label makes it one again: the count is of labels that differ, not of key presses
        await pilot.press("u")
        await saved(pilot)
        await settle(pilot)
        assert "stale: 1 label since" in active_line(app)
        # re-rank again: the order reflects both users' labels
        await pilot.press("a")
        await settle(pilot, 6)
        line = active_line(app)
        assert "7 labels (alice 6, bob 1)" in line and "up to date" in line


async def test_next_unlabelled_in_every_ranking_after_a_rerank(discover_ws, said):
    app = FMBApp(discover_ws, alice(), start="anomalies")
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(pilot)
        screen = anomalies(app)
        table = screen.query_one(RankingTable)
        await label_top(pilot, "22")
        await pilot.press("g", "N")  # Anomalies, base order: the first unlabelled is the third row
        assert table.cursor == 2
        await pilot.press("a")
        await settle(pilot, 6)
        assert screen.spec.system == ACTIVE
        start = table.cursor
        await pilot.press("1")  # label the current candidate, then N skips every labelled row after it
        await saved(pilot)
        await pilot.press("N")
        expected = rm.next_unlabelled(screen.rdata, table.order, start, app.labels)
        assert table.cursor == expected and table.current_id() not in app.labels
        # the Object navigator walks the same (active) order
        await pilot.press("enter")
        await settle(pilot)
        obj = app.screen
        assert isinstance(obj, ObjectScreen) and obj.object_id == table.current_id()
        await pilot.press("4")
        await saved(pilot)
        await pilot.press("N")
        await settle(pilot)
        assert obj.object_id == table.current_id() and obj.object_id not in app.labels
        assert table.cursor == rm.next_unlabelled(screen.rdata, table.order, expected, app.labels)


async def test_auto_mode_reranks_after_n_labels(discover_ws, said):
    (discover_ws.root / "fmb.yaml").write_text("discover:\n  auto_every: 3\n", encoding="utf-8")
    app = FMBApp(discover_ws, alice(), start="anomalies")
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(pilot)
        screen = anomalies(app)
        await label_top(pilot, "12")
        await settle(pilot)
        assert screen.spec.system == BASE and not messages(said, "auto re-rank")
        await label_top(pilot, "121")  # a third new label (the first two are unchanged)
        await settle(pilot, 6)
        assert any("discover.auto_every = 3" in m for m in messages(said, "auto re-rank"))
        assert screen.spec.system == ACTIVE
        assert "3 labels (alice 3)" in active_line(app)
        # two more labels: not yet; the third: again
        table = screen.query_one(RankingTable)
        for key in "12":
            await pilot.press("N", key)
            await saved(pilot)
        await settle(pilot)
        assert "stale: 2 labels since" in active_line(app)
        assert len(messages(said, "re-ranked")) == 1
        await pilot.press("N", "2")
        await saved(pilot)
        await settle(pilot, 6)
        assert len(messages(said, "re-ranked")) == 2
        assert "6 labels (alice 6)" in active_line(app) and table.current_id() not in app.labels


async def test_a_second_press_while_one_runs_is_refused(discover_ws, monkeypatch, said):
    release = threading.Event()
    calls = []
    real = WorkspaceData.rerank

    def slow(self):
        calls.append(1)
        release.wait(20)
        return real(self)

    monkeypatch.setattr(WorkspaceData, "rerank", slow)
    with LabelStore.for_workspace(discover_ws, user="bob") as store:
        store.set_label(store_ids(discover_ws)[0], "interesting")
    app = FMBApp(discover_ws, alice(), start="workspace")
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(pilot)
        # the first from the palette, on another screen: it switches to Anomalies and starts there
        await pilot.press("ctrl+p")
        await pilot.press(*"re-rank")
        await pilot.pause(0.3)
        await pilot.press("enter")
        for _ in range(100):
            if calls:
                break
            await pilot.pause(0.05)
        assert app.current_mode == "anomalies" and len(calls) == 1
        while anomalies(app).query_one(RankingTable).n_rows == 0:  # no settle(): it would wait for the re-rank
            await pilot.pause(0.05)
        await pilot.press("a", "j", "j")  # refused; the other keys keep working
        await pilot.pause(0.2)
        assert len(calls) == 1
        assert any("already running" in m for m in messages(said, "re-rank"))
        assert "re-ranking by the labels" in str(anomalies(app).query_one("#anomalies-status").render())
        assert anomalies(app).query_one(RankingTable).cursor == 2
        release.set()
        await settle(pilot, 6)
        assert len(calls) == 1 and len(messages(said, "re-ranked")) == 1
        assert anomalies(app).spec.system == ACTIVE


async def test_a_failing_rerank_is_said_and_the_app_lives(tui_ws, said):
    """The synthetic workspace has rankings but no embeddings: the engine's message, nothing else changes."""
    (tui_ws.root / "fmb.yaml").write_text("discover:\n  auto_every: 1\n", encoding="utf-8")
    app = FMBApp(tui_ws, alice(), start="anomalies")
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(pilot)
        screen = anomalies(app)
        system = screen.spec.system
        await pilot.press("a")
        await settle(pilot)
        errors = [m for _, m, severity in said if severity == "error"]
        assert errors and "no embedding run" in errors[-1]
        assert screen.spec.system == system and app.error_log.count == 0
        assert "re-ranking" not in str(screen.query_one("#anomalies-status").render())
        # auto mode: one attempt, then paused (no error per label)
        await label_top(pilot, "2")
        await settle(pilot)
        await label_top(pilot, "22")
        await settle(pilot)
        assert len(messages(said, "auto re-rank")) == 2  # the attempt, and that auto mode is paused
        assert sum(severity == "error" for _, _, severity in said) == 2
        await pilot.press("j")
        assert app.is_running
