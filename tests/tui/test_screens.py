"""Workspace, Compare and Figures screens; help, palette, keymap, colours."""


import pytest

from fmb_engine.errors import ConfigError
from fmb_engine.config.tui import TuiConfig
from fmb_engine.triage.labels import LabelStore
from fmb_tui import actions
from fmb_tui.app import FMBApp
from fmb_tui.screens.dialogs import HelpScreen

from .conftest import settle
from .screen_text import flat_text, screen_text

pytestmark = pytest.mark.asyncio


async def test_workspace_overview(tui_ws, config):
    with LabelStore.for_workspace(tui_ws) as s:
        s.set_label("mock42-0000001", "lens")
    app = FMBApp(tui_ws, config)
    async with app.run_test(size=(80, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "mock.h5: 120 objects (test 24, train 96)" in text
        assert "8 systems over 120 objects" in text
        assert "lens 1" in text
        assert "compute embeddings" in text  # what to do next
        assert "no job submitted" in text


async def test_empty_workspace_says_what_to_do(workspace, config):
    app = FMBApp(workspace, config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = flat_text(app)
        assert "fmb-engine data mock" in text and "no anomaly ranking yet" in text


async def test_compare_matrices_and_toggle(tui_ws, config):
    app = FMBApp(tui_ws, config, start="compare")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "Spearman rank correlation" in text and "1 astropt/image/flow" in text and "1.00" in text
        await pilot.press("t")
        assert "Jaccard overlap" in screen_text(app)


async def test_compare_without_matrices(workspace, config):
    app = FMBApp(workspace, config, start="compare")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "fmb-engine analyze rankings" in flat_text(app)


async def test_figures_export_through_the_engine(tui_ws, config):
    with LabelStore.for_workspace(tui_ws) as s:
        s.set_label("mock42-0000002", "interesting")
        s.set_label("mock42-0000005", "interesting")
    app = FMBApp(tui_ws, config, start="figures")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#fig-k").value = "3"
        await pilot.press("ctrl+s")
        await settle(pilot)
        grid = tui_ws.folder("figures") / "outliers" / "outliers_astropt_fused_geo"
        for suffix in (".png", ".pdf"):
            assert grid.with_suffix(suffix).stat().st_size > 5_000
        shown = str(screen.query_one("#fig-output").render())
        assert "written" in shown and str(grid.with_suffix(".png")) in shown
        # a label set: the objects labelled "interesting"
        screen.query_one("#fig-set").value = "label:interesting"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        by_label = tui_ws.folder("figures") / "outliers" / "outliers_label-interesting_astropt_fused_geo.pdf"
        assert by_label.read_bytes()[:4] == b"%PDF" and str(by_label) in str(screen.query_one("#fig-output").render())
        with LabelStore.for_workspace(tui_ws) as s:  # another label set gets a file of its own
            s.set_label("mock42-0000007", "AGN")
        app.reload_labels()
        await settle(pilot)
        screen.query_one("#fig-set").value = "label:AGN"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert by_label.is_file() and by_label.with_name("outliers_label-AGN_astropt_fused_geo.pdf").is_file()
        screen.query_one("#fig-set").value = "label:lens"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "no object is labelled 'lens' yet" in flat_text(app)
        # the ranking heat maps, from the comparison matrices
        screen.query_one("#fig-kind").value = "heatmaps"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert (tui_ws.folder("figures") / "rankings" / "spearman_heatmap.png").is_file()


async def test_help_is_generated_from_the_registry(tui_ws, config):
    app = FMBApp(tui_ws, TuiConfig(labels=["junk", "keep"], keymap={"anomalies.jump": "ctrl+g"}), start="anomalies")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "Label the current object 'junk'." in text and "triage.label_2" in text
        assert "triage.label_3" not in text  # only as many label keys as labels
        assert "Ctrl+G" in text  # the remapped key
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("ctrl+g")  # the remapped binding works
        await settle(pilot)
        assert "Go to rank" in screen_text(app)


async def test_palette_lists_every_action(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for a in actions.ACTIONS:
            if a.id.startswith("triage.label_") and int(a.id[-1]) > len(config.labels):
                continue
            assert any(a.description in t or "label" in t for t in titles), a.id
        # running one from the palette switches screens when needed
        cmd = next(c for c in app.get_system_commands(app.screen) if c.title == "compare: Spearman/Jaccard")
        await cmd.callback()
        await settle(pilot)
        assert app.screen.NAME == "compare"


async def test_palette_label_commands_carry_the_label_names(tui_ws):
    labels = ["junk", "keep", "Lens_2"]
    assert [actions.label_of(actions.BY_ID[f"triage.label_{i}"], labels) for i in (1, 3, 4)] == ["junk", "Lens_2", None]
    assert actions.label_of(actions.BY_ID["triage.clear"], labels) is None
    app = FMBApp(tui_ws, TuiConfig(labels=labels), start="anomalies")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert [t for t in commands if t.startswith("triage: label ")] == [f"triage: label {name}" for name in labels]
        oid, _, _ = app.screen.triage_target()
        await commands["triage: label Lens_2"].callback()
        await settle(pilot)
        assert app.labels[oid] == "Lens_2"


async def test_unknown_keymap_id_is_a_config_error(tui_ws):
    with pytest.raises(ConfigError, match="Did you mean 'triage.next'"):
        FMBApp(tui_ws, TuiConfig(keymap={"triage.nxt": "n"}))


async def test_no_color(tui_ws, config, monkeypatch):
    """NO_COLOR: Textual renders monochrome; everything is still readable (256 colours: see the tmux test)."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = FMBApp(tui_ws, config, start="anomalies")
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "rank↑ object_id" in text and "1 artefact" in text


async def test_screens_fit_80x24(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in ("W", "R", "J", "A", "C", "F"):
            await pilot.press(key)
            await settle(pilot)
            text = screen_text(app)
            assert len(text.splitlines()) == 24 and "▏^p palette" in text
