"""Runs screen: a form generated from the config schema, origins, inline errors, submit, manifests."""

import pytest
from textual.widgets import Input, OptionList, Select

from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State
from fmb_tui.app import FMBApp
from fmb_tui.widgets.config_form import ConfigForm

from .conftest import settle
from .screen_text import flat_text, screen_text

pytestmark = pytest.mark.asyncio


async def wait_for(pilot, predicate, what: str):
    for _ in range(600):
        await settle(pilot, 1)
        if predicate():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_form_origins_errors_and_submit(tui_ws, config):
    tui_ws.config_file.write_text("general:\n  survey: mock\nmock:\n  seed: 7\n")
    app = FMBApp(tui_ws, config, start="runs")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: bool(screen.query(ConfigForm)), "the stage catalogue")
        stages = [o.id for o in screen.query_one("#stages", OptionList).options]
        assert stages[0] == "data.mock" and "embed.pca" in stages
        assert {"retrain.aion-adapter", "retrain.astroclip-heads", "retrain.astropt"} <= set(stages)
        form = screen.query_one(ConfigForm)
        # defaults shown with their layer; the workspace value names fmb.yaml
        assert form.query_one("#edit-objects", Input).value == "2000"
        assert str(form.query_one("#origin-objects").render()) == "default"
        assert form.query_one("#edit-seed", Input).value == "7"
        assert "fmb.yaml" in str(form.query_one("#origin-seed").render())
        assert isinstance(form.query_one("#edit-compression"), Select)
        # an invalid value is flagged inline with the engine's own message
        form.query_one("#edit-objects", Input).value = "5"
        await settle(pilot)
        error = str(form.query_one("#error-objects").render())
        assert "greater than or equal to 20" in error
        assert str(form.query_one("#origin-objects").render()) == "TUI form"
        form.query_one("#edit-objects", Input).value = "lots"
        await settle(pilot)
        assert "valid integer" in str(form.query_one("#error-objects").render())
        await pilot.press("ctrl+s")  # refused while invalid
        await settle(pilot)
        assert "fix the values flagged" in " ".join(n.message for n in app._notifications)
        # valid values, debug executor (runs here, at once), submit
        form.query_one("#edit-objects", Input).value = "24"
        form.query_one("#edit-image_size", Input).value = "16"
        form.query_one("#edit-workers", Input).value = "-1"
        form.query_one("#edit-name", Input).value = "tiny"
        await settle(pilot)
        assert str(form.query_one("#error-objects").render()) == ""
        screen.query_one("#executor", Select).value = "debug"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "submitted" in str(screen.query_one("#form-problem").render()), "the submission")
        with open_registry(tui_ws) as reg:
            runs = reg.runs()
            assert [r.stage for r in runs] == ["data.mock"] and runs[0].executor == "debug"
            job = reg.jobs(runs[0].run_id)[0]
            assert job.state is State.COMPLETED
            assert runs[0].config["stage"]["values"]["objects"] == 24
            assert runs[0].config["stage"]["sources"]["objects"] == "TUI form"
            assert runs[0].config["stage"]["sources"]["seed"].endswith("fmb.yaml")
        assert (tui_ws.folder("survey") / "tiny.h5").is_file()
        await wait_for(pilot, lambda: "data.mock" in screen_text(app), "the manifest list")


async def test_invalid_workspace_config_is_shown_not_raised(tui_ws, config):
    app = FMBApp(tui_ws, config, start="runs")
    tui_ws.config_file.write_text("mock:\n  objects: 3\n")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: bool(screen.query(ConfigForm)), "the stage catalogue")
        text = flat_text(app)
        assert "configured values are invalid" in text and "objects = 3" in text
        assert "Traceback" not in text
        # the form starts from the defaults; it cannot hide the bad workspace value (the run would
        # read fmb.yaml again): the value stays an error naming the file until the file is fixed
        form = screen.query_one(ConfigForm)
        form.query_one("#edit-objects", Input).value = "30"
        await settle(pilot)
        assert not screen.validate()
        assert "fmb.yaml must be valid too" in screen.form_errors.get("objects", "")


async def test_retrain_form_is_generated_and_validates(tui_ws, config):
    """The retrain tasks' forms come from their schemas like every stage's (tuples, optionals, literals)."""
    app = FMBApp(tui_ws, config, start="runs")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: bool(screen.query(ConfigForm)), "the stage catalogue")
        screen.choose("retrain.astropt")
        await settle(pilot)
        form = screen.query_one(ConfigForm)
        assert form.query_one("#edit-steps", Input).value == "3000"
        form.query_one("#edit-steps", Input).value = "20"
        await settle(pilot)
        assert screen.validate() and screen.resolved.values.steps == 20
        assert screen.resolved.values.betas == (0.9, 0.95)
        # an optional choice (patch_order: None = the layout's) starts blank and stays None
        assert form.query_one("#edit-patch_order", Select).value is Select.NULL
        assert screen.resolved.values.patch_order is None
        form.query_one("#edit-steps", Input).value = "0"
        await settle(pilot)
        assert not screen.validate() and "Traceback" not in flat_text(app)

