"""A quick PNG of one object: its four bands, RGB composite and spectrum (``data show``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmb_engine.figures.panels import redshift_text
from fmb_engine.survey.bands import EMISSION_LINES
from fmb_engine.survey.composite import asinh_rgb
from fmb_engine.survey.store import SurveyObject
from fmb_engine.workspace import atomic_path


def render_quicklook(obj: SurveyObject, path: Path, smooth: int = 5) -> Path:
    """Write a PNG: bands (1-99.5 % stretch), RGB, spectrum with lines at the object's redshift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 5.2), layout="constrained")
    grid = fig.add_gridspec(2, 5, height_ratios=[1, 1])
    names = ("VIS", "NISP Y", "NISP J", "NISP H")
    for k in range(4):
        ax = fig.add_subplot(grid[0, k])
        band = obj.images[k]
        if obj.has_bands[k] and np.isfinite(band).any():
            lo, hi = np.nanpercentile(band, [1, 99.5])
            ax.imshow(band, origin="lower", cmap="magma", vmin=lo, vmax=hi)
        else:
            ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(names[k], fontsize=10)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 4])
    ax.imshow(obj.rgb if obj.rgb is not None else asinh_rgb(obj.images), origin="lower")
    ax.set_title("RGB (H, Y, VIS)", fontsize=10)
    ax.set_axis_off()

    ax = fig.add_subplot(grid[1, :])
    good = ~obj.mask
    flux = np.where(good, obj.flux, np.nan)
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        weights = np.convolve(good.astype(float), kernel, mode="same")
        flux = np.convolve(np.nan_to_num(flux), kernel, mode="same") / np.where(weights > 0, weights, np.nan)
    ax.plot(obj.wavelength, flux, lw=0.6, color="k")
    if (~good).any():
        ax.plot(obj.wavelength[~good], np.zeros((~good).sum()), "|", color="tab:red", ms=4, label="masked")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    z = float(obj.meta.get("redshift", np.nan))
    if np.isfinite(z):
        for name, lam in EMISSION_LINES.items():
            obs = lam * (1 + z)
            if obj.wavelength[0] < obs < obj.wavelength[-1]:
                ax.axvline(obs, color="tab:blue", ls=":", lw=0.8)
                ax.text(obs, 1.0, name, rotation=90, va="top", ha="right", fontsize=7, color="tab:blue", transform=ax.get_xaxis_transform())
    finite = flux[np.isfinite(flux)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.8])
        pad = 0.1 * (hi - lo + 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("observed wavelength [Å]")
    ax.set_ylabel("flux [1e-17 erg/s/cm²/Å]")
    label = obj.meta.get("anomaly_class") or ""
    fig.suptitle(f"{obj.object_id}   {redshift_text(obj)}   split = {obj.meta.get('split')}" + (f"   [{label}]" if label else ""))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
