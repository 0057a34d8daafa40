"""Object screen: metadata, spectrum zoom/pan/smoothing, image bands, neighbours."""

import pytest

from fmb_tui.app import FMBApp
from fmb_tui.screens.object import ObjectScreen
from fmb_tui.widgets.plots import ImageView, SpectrumPlot

from .conftest import settle
from .screen_text import screen_text

pytestmark = pytest.mark.asyncio


async def test_spectrum_image_and_neighbours(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ObjectScreen)
        text = screen_text(app)
        assert screen.object_id in text and "z=" in text and "rank 1 in astropt/fused/geo" in text
        assert "Hb" in text or "Ha" in text or "OII" in text  # lines marked at the redshift
        spec = screen.query_one(SpectrumPlot)
        full = (spec.view.lo, spec.view.hi)
        await pilot.press("plus")
        assert spec.view.hi - spec.view.lo == pytest.approx((full[1] - full[0]) / 2)
        await pilot.press("right")
        assert spec.view.lo > full[0]
        await pilot.press("minus", "minus", "r")
        assert (spec.view.lo, spec.view.hi) == full
        await pilot.press("s")
        assert spec.view.smoothing == 9
        image = screen.query_one(ImageView)
        await pilot.press("b")
        assert image.band == 1 and image.border_subtitle == "VIS"
        # neighbours from the similarity analysis; enter opens one (a new object screen)
        assert "astropt/joint #1" in screen_text(app)
        await pilot.press("v", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ObjectScreen) and app.screen is not screen
        assert app.screen.navigator is None
        await pilot.press("j")  # no ranking to walk from a neighbour: a hint, no crash
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen


async def test_object_missing_from_the_survey_is_a_message(tui_ws, config):
    app = FMBApp(tui_ws, config, start="anomalies")
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        app.push_screen(ObjectScreen("no-such-object"))
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        assert "no object with object_id 'no-such-object'" in text
        assert "Traceback" not in text
