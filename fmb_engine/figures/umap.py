"""UMAP maps coloured by a physical parameter (2-98 % colour limits shared across panels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.style import fmb_style, pyplot, save


def umap_figure(coords: pd.DataFrame, catalog: pd.DataFrame, colour_by: str, path: Path) -> list[Path]:
    """``coords``: object_id, model, modality, x, y; ``catalog``: object_id-indexed with ``colour_by``.

    Joins on object_id only (reference bug L13); the matched count is printed on each panel."""
    if colour_by not in catalog.columns:
        raise DataError(f"no column {colour_by!r} to colour by; columns: {', '.join(catalog.columns)}")
    values = pd.to_numeric(catalog[colour_by], errors="coerce")
    values.index = values.index.astype(str)
    c_all = coords["object_id"].astype(str).map(values)
    finite = c_all[np.isfinite(c_all)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if len(finite) else (0.0, 1.0))
    panels = [k for k, _ in coords.groupby(["modality", "model"], sort=True)]
    models = sorted(coords["model"].unique())
    modalities = [m for m in ("image", "spectrum", "joint") if m in set(coords["modality"])] + \
        sorted(set(coords["modality"]) - {"image", "spectrum", "joint"})
    plt = pyplot()
    with fmb_style():
        fig, axes = plt.subplots(len(modalities), len(models), figsize=(2.6 * len(models) + 0.9, 2.5 * len(modalities)),
                                 squeeze=False)
        mappable = None
        for i, mod in enumerate(modalities):
            for j, model in enumerate(models):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if (mod, model) not in panels:
                    ax.set_axis_off()
                    continue
                sel = (coords["modality"] == mod) & (coords["model"] == model)
                part, c = coords[sel], c_all[sel].to_numpy(float)
                ok = np.isfinite(c)
                ax.scatter(part["x"][~ok], part["y"][~ok], s=2, color="0.8", lw=0, rasterized=True)
                mappable = ax.scatter(part["x"][ok], part["y"][ok], c=c[ok], s=2, cmap="plasma", vmin=vmin, vmax=vmax,
                                      lw=0, rasterized=True)
                ax.text(0.02, 0.02, f"N = {int(ok.sum())}/{len(part)}", transform=ax.transAxes, fontsize=6)
                if i == 0:
                    ax.set_title(model)
                if j == 0:
                    ax.set_ylabel(mod)
        if mappable is not None:
            fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label=colour_by)
        fig.suptitle(f"UMAP coloured by {colour_by}")
        return save(fig, path)


__all__ = ["umap_figure"]
