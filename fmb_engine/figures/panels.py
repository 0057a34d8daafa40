"""Shared panels: smoothed spectrum with redshifted lines, RGB / band images of one object."""

from __future__ import annotations

import numpy as np

from fmb_engine.survey.bands import ABSORPTION_LINES, BANDS, EMISSION_LINES
from fmb_engine.survey.composite import asinh_rgb


#: Longest object id shown in a panel caption: at the captions' 6 pt it fits the grids' image
#: panels, about one inch wide (24-character SDSS ids such as ``sdss_J220248.31+123656.3`` did not).
ID_CHARS = 16


def short_id(object_id: str, max_chars: int = ID_CHARS) -> str:
    """``object_id`` as is, or cut in the middle with an ellipsis to ``max_chars`` characters:
    both ends stay readable (survey prefix, coordinate / fibre suffix); the full id is in the tables."""
    text = str(object_id)
    if len(text) <= max_chars:
        return text
    tail = max_chars // 2
    return f"{text[:max_chars - 1 - tail]}…{text[-tail:]}"


def redshift_text(obj) -> str:
    """'z = 0.123', or 'z unknown' for an object imported without a redshift (never 'nan')."""
    z = float(obj.meta.get("redshift", np.nan))
    return f"z = {z:.3f}" if np.isfinite(z) else "z unknown"


def smooth_spectrum(flux: np.ndarray, mask: np.ndarray | None, sigma: float) -> np.ndarray:
    """Masked pixels -> NaN; Gaussian smoothing (σ in pixels) normalised by the unmasked weight."""
    good = np.isfinite(flux) if mask is None else (~np.asarray(mask, bool) & np.isfinite(flux))
    f = np.where(good, flux, 0.0).astype(np.float64)
    if sigma and sigma > 0:
        from scipy.ndimage import gaussian_filter1d

        num = gaussian_filter1d(f, sigma, mode="nearest")
        den = gaussian_filter1d(good.astype(np.float64), sigma, mode="nearest")
        out = np.where(den > 1e-3, num / np.where(den > 0, den, 1.0), np.nan)
    else:
        out = np.where(good, f, np.nan)
    return out


def draw_spectrum(ax, obj, smooth: float = 2.0, lines: bool = True, absorption: bool = True, label_lines: bool = True,
                  colour: str = "k") -> None:
    """Observed-frame spectrum; emission (blue dotted) and absorption (red dashed) lines at the object's redshift."""
    flux = smooth_spectrum(obj.flux, obj.mask, smooth)
    wave = np.asarray(obj.wavelength)
    ax.plot(wave, flux, lw=0.6, color=colour)
    z = float(obj.meta.get("redshift", np.nan))
    if lines and np.isfinite(z):
        sets = [(EMISSION_LINES, "tab:blue", ":")] + ([(ABSORPTION_LINES, "tab:red", "--")] if absorption else [])
        for table, col, ls in sets:
            for name, lam in table.items():
                obs = lam * (1.0 + z)
                if wave[0] < obs < wave[-1]:
                    ax.axvline(obs, color=col, ls=ls, lw=0.6, alpha=0.8)
                    if label_lines:
                        ax.text(obs, 0.98, name, rotation=90, va="top", ha="right", fontsize=5.5, color=col,
                                transform=ax.get_xaxis_transform())
    finite = flux[np.isfinite(flux)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.8])
        pad = 0.1 * (hi - lo + 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(wave[0], wave[-1])


def rgb_of(obj) -> np.ndarray:
    return obj.rgb if obj.rgb is not None else asinh_rgb(obj.images)


def draw_rgb(ax, obj, caption: str | None = None) -> None:
    ax.imshow(rgb_of(obj), origin="lower", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if caption:
        ax.text(0.03, 0.97, caption, transform=ax.transAxes, va="top", ha="left", fontsize=6, color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0})


def draw_band(ax, obj, k: int) -> None:
    band = obj.images[k]
    if bool(np.asarray(obj.has_bands)[k]) and np.isfinite(band).any():
        lo, hi = np.nanpercentile(band, [1, 99.5])
        ax.imshow(band, origin="lower", cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(BANDS[k].replace("_", " "))
    ax.set_xticks([])
    ax.set_yticks([])


__all__ = ["draw_band", "draw_rgb", "draw_spectrum", "rgb_of", "smooth_spectrum"]
