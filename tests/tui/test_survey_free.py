"""fmb-tui on the pipeline's own survey-free output (issue 15): `embed synthetic` -> `detect all` ->
`analyze rankings`, no survey. Every screen opens without an error, every place a preview would be
says plainly that none exists, labels and system switches work, and random keys find nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fmb_engine.workspace import Workspace

from .conftest import saved, settle
from .fuzz_explorer import explore
from .screen_text import flat_text

pytestmark = pytest.mark.asyncio

OBJECTS = 3000
NO_PREVIEW = "no spectrum or image: the ranking was made from survey-free synthetic embeddings (embeddings/synthetic.h5)"


@pytest.fixture(scope="module")
def pipeline_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the engine writes for a survey-free run (small N, small dimensions, few epochs)."""
    from fmb_engine.analyze.run import analyze_rankings
    from fmb_engine.config import load
    from fmb_engine.detect.run import detect
    from fmb_engine.embed.synthetic import SyntheticSpec
    from fmb_engine.embed.synthetic_file import write_synthetic

    root = tmp_path_factory.mktemp("pipeline") / "ws"
    ws = Workspace.init(root)
    write_synthetic(ws, SyntheticSpec(OBJECTS, {"image": 12, "spectrum": 10, "joint": 20}, seed=5,
                                      outlier_fraction=0.03))
    detect(ws, load("detect", ws, cli={"epochs": 3, "n_jobs": 1, "baselines": False}))
    analyze_rankings(ws, load("analyze", ws))
    return root


@pytest.fixture
def pipeline_ws(pipeline_template: Path, tmp_path: Path) -> Workspace:
    dst = tmp_path / "ws"
    shutil.copytree(pipeline_template, dst)
    return Workspace(dst)


async def test_every_screen_opens_and_says_there_is_no_preview(pipeline_ws):
    from fmb_tui.app import FMBApp
    from fmb_tui.screens.object import ObjectScreen

    app = FMBApp(pipeline_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = flat_text(app)
        assert "none needed: the ranking was made from survey-free synthetic embeddings (synthetic.h5)" in text
        assert "create a survey" not in text  # no survey is missing: none belongs to this run
        assert "`fmb-engine evaluate`" in text
        assert f"systems over {OBJECTS:,} objects" in text

        await pilot.press("A")
        await settle(pilot)
        text = flat_text(app)
        assert f"row 1 of {OBJECTS:,}" in text and NO_PREVIEW in text
        await pilot.press("j", "j")
        await settle(pilot)
        assert f"row 3 of {OBJECTS:,}" in flat_text(app) and NO_PREVIEW in flat_text(app)

        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ObjectScreen)
        text = flat_text(app)
        assert NO_PREVIEW in text and "no image" in text and "rank 3 in" in text
        assert "ranks: synthetic/cross/mismatch " in text and "synthetic/spec/flow " in text  # every system's rank
        assert "band:" not in text  # no band to name without an image
        await pilot.press("j")  # walks the ranking from the Object screen too
        await settle(pilot)
        assert "rank 4 in" in flat_text(app) and NO_PREVIEW in flat_text(app)
        await pilot.press("escape")
        await settle(pilot)

        for key, expected in (("C", "synthetic/"), ("J", "no job submitted from this workspace yet"),
                              ("R", "detect"), ("F", "outlier grid"), ("W", "Embeddings")):
            await pilot.press(key)
            await settle(pilot)
            assert expected in flat_text(app), key
        assert app.error_log.count == 0


async def test_figures_of_a_survey_free_ranking(pipeline_ws):
    """The outlier grid needs spectra and images: refused with the reason; the heat maps need only rankings."""
    from textual.widgets import Select

    from fmb_tui.app import FMBApp

    app = FMBApp(pipeline_ws, start="figures")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        text = flat_text(app)
        assert "not exported: the outlier grid draws spectra and images" in text and "survey-free" in text
        app.screen.query_one("#fig-kind", Select).value = "heatmaps"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "written" in flat_text(app)
        assert list(pipeline_ws.folder("figures").rglob("*.png"))
        assert app.error_log.count == 0


async def test_label_and_switch_system_on_the_pipeline_ranking(pipeline_ws):
    from textual.command import CommandList

    from fmb_engine.triage.labels import LabelStore
    from fmb_tui.app import FMBApp

    app = FMBApp(pipeline_ws, start="anomalies")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        first = screen.rdata.id_at(screen.table.current_row())
        await pilot.press("2")
        await saved(pilot)
        assert "top-100: 1/100 labelled" in flat_text(app)
        other = next(s for s in screen.rdata.systems if s != screen.spec.system)
        await pilot.press("m")
        await settle(pilot)
        await app.screen.dismiss(other)
        await settle(pilot)
        assert flat_text(app).startswith(f"⭘ fmb-tui — ws {other} · sort rank ↑ · row 1 of {OBJECTS:,}")
        await pilot.press("ctrl+p")  # the palette reaches every screen
        await pilot.press(*"compare")
        commands = app.screen.query_one(CommandList)
        for _ in range(250):  # it searches in the background: enter once the screen's command is highlighted
            if commands.highlighted is not None and commands.get_option_at_index(
                    commands.highlighted).prompt.plain.startswith("Compare\n"):
                break
            await pilot.pause(0.02)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "compare" and "Spearman rank correlation" in flat_text(app)
        await pilot.press("W")
        await settle(pilot)
        text = flat_text(app)
        assert app.current_mode == "workspace" and "interesting 1" in text
        assert "export a figure" not in text  # its objects have nothing to draw
        assert app.error_log.count == 0
    with LabelStore.for_workspace(pipeline_ws) as store:
        assert store.labels() == {first: "interesting"}


@pytest.mark.parametrize("seed", [11, 12])
async def test_random_keys_on_the_pipeline_workspace(pipeline_template, tmp_path, monkeypatch, seed):
    root = tmp_path / "ws"
    shutil.copytree(pipeline_template, root)
    monkeypatch.chdir(tmp_path)  # a palette "save screenshot" lands here
    finding = await explore(root, seed, 150)
    assert finding is None, str(finding)


async def test_the_next_step_after_evaluate_points_at_its_report(pipeline_ws):
    """Once `evaluate` has scored the current ranking the overview stops asking for it; a new ranking
    (the evaluation then stale) asks again."""
    from fmb_engine.config import load
    from fmb_engine.detect.evaluation import evaluate_workspace
    from fmb_tui.data import WorkspaceData

    evaluate_workspace(pipeline_ws, None)
    ov = WorkspaceData(pipeline_ws).overview()
    assert ov.evaluated and any("analysis/evaluation.md" in s for s in ov.next_steps)
    assert not any("`fmb-engine evaluate`" in s for s in ov.next_steps)
    from fmb_engine.detect.run import detect

    detect(pipeline_ws, load("detect", pipeline_ws, cli={"epochs": 1, "baselines": False, "seed": 3}))
    ov = WorkspaceData(pipeline_ws).overview()
    assert not ov.evaluated and any("`fmb-engine evaluate`" in s for s in ov.next_steps)
