"""The spectrum (braille) and image (half blocks) widgets; the drawing itself is in ``fmb_tui.render``."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widget import Widget

from fmb_tui.render import SpectrumView, grey_rgb, halfblock_text, smooth, spectrum_text

BAND_CHOICES = ("RGB", "VIS", "NISP_Y", "NISP_J", "NISP_H")
#: What a reader calls each choice (the Object screen's title over the image).
BAND_TITLES = {"RGB": "RGB colour", "VIS": "VIS", "NISP_Y": "NISP Y", "NISP_J": "NISP J", "NISP_H": "NISP H"}


class SpectrumPlot(Widget):
    """The current object's spectrum with its emission lines; zoom, pan and smoothing."""

    DEFAULT_CSS = "SpectrumPlot { height: 1fr; min-height: 5; }"

    def __init__(self, smoothing: int = 5, id: str | None = None) -> None:
        super().__init__(id=id)
        self.obj = None
        self.view: SpectrumView | None = None
        self.smoothing = smoothing
        self.message = "no object"
        self._smoothed: tuple[int, int, np.ndarray] | None = None

    @property
    def full(self) -> tuple[float, float]:
        w = self.obj.wavelength  # type: ignore[union-attr]
        return float(w[0]), float(w[-1])

    def set_object(self, obj, keep_view: bool = False) -> None:
        self.obj = obj
        self._smoothed = None
        if obj is None:
            self.view = None
        elif not keep_view or self.view is None:
            self.view = SpectrumView(*self.full, self.smoothing)
        self.refresh()

    def show_message(self, message: str) -> None:
        self.obj, self.view, self.message = None, None, message
        self.refresh()

    def zoom(self, factor: float) -> None:
        if self.view is not None:
            self.view = self.view.zoom(factor, self.full)
            self.refresh()

    def pan(self, fraction: float) -> None:
        if self.view is not None:
            self.view = self.view.pan(fraction, self.full)
            self.refresh()

    def reset(self) -> None:
        if self.obj is not None:
            self.view = SpectrumView(*self.full, self.view.smoothing if self.view else self.smoothing)
            self.refresh()

    def cycle_smoothing(self) -> int:
        if self.view is not None:
            self.view = self.view.next_smoothing()
            self.smoothing = self.view.smoothing
            self.refresh()
        return self.smoothing

    def _smoothed_flux(self) -> np.ndarray:
        obj, view = self.obj, self.view
        key = (id(obj), view.smoothing)  # type: ignore[union-attr]
        if self._smoothed is None or self._smoothed[:2] != key:
            good = (~np.asarray(obj.mask, bool)) & (np.asarray(obj.ivar) > 0) & np.isfinite(obj.flux)
            self._smoothed = (*key, smooth(np.asarray(obj.flux), good, view.smoothing))  # type: ignore[union-attr]
        return self._smoothed[2]

    def render(self) -> Text:
        if self.obj is None or self.view is None:
            return Text(self.message, style="dim")
        obj = self.obj
        z = obj.meta.get("redshift")
        z = float(z) if z is not None else None
        if not bool(obj.meta.get("has_spectrum", True)) or not np.any(np.asarray(obj.ivar) > 0):
            return Text("no spectrum for this object (missing or fully masked)", style="dim")
        return spectrum_text(obj.wavelength, obj.flux, obj.ivar, obj.mask, z, self.size.width, self.size.height,
                             self.view, smoothed=self._smoothed_flux())


class ImageView(Widget):
    """Half-block colour composite, or one band in grey."""

    DEFAULT_CSS = "ImageView { width: 22; height: 1fr; min-height: 4; }"

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.obj = None
        self.band = 0
        self.message = ""
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def set_object(self, obj) -> None:
        self.obj = obj
        self._cache.clear()
        self.border_subtitle = BAND_CHOICES[self.band]
        self.refresh()

    def show_message(self, message: str) -> None:
        self.obj, self.message = None, message
        self.refresh()

    @property
    def band_title(self) -> str:
        return BAND_TITLES[BAND_CHOICES[self.band]]

    def cycle_band(self) -> str:
        self.band = (self.band + 1) % len(BAND_CHOICES)
        self.border_subtitle = BAND_CHOICES[self.band]
        self.refresh()
        return BAND_CHOICES[self.band]

    def _rgb(self) -> np.ndarray:
        key = (id(self.obj), self.band)
        if key not in self._cache:
            obj = self.obj
            if self.band == 0:
                if obj.rgb is not None:  # type: ignore[union-attr]
                    rgb = np.asarray(obj.rgb)  # type: ignore[union-attr]
                else:
                    from fmb_engine.survey.composite import asinh_rgb

                    rgb = asinh_rgb(obj.images)  # type: ignore[union-attr]
            else:
                rgb = grey_rgb(obj.images[self.band - 1])  # type: ignore[union-attr]
            # images are stored with origin at the bottom (as matplotlib's origin="lower" shows them)
            self._cache[key] = rgb[::-1]
        return self._cache[key]

    def render(self) -> Text:
        if self.obj is None:
            return Text(self.message, style="dim")
        if self.band and not bool(self.obj.has_bands[self.band - 1]):
            return Text(f"{BAND_CHOICES[self.band]} missing", style="dim")
        return halfblock_text(self._rgb(), self.size.width, self.size.height)
