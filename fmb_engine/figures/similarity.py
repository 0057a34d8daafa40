"""Neighbour anomaly-rank histograms (one panel per model x modality, top-q % share annotated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.style import fmb_style, pyplot, save


def neighbour_rank_histograms(table: pd.DataFrame, path: Path, top_percent: float = 1.0, bins: int = 50) -> list[Path]:
    groups = list(table.groupby(["model", "modality"], sort=True))
    if not groups:
        raise DataError("no neighbour ranks to draw; run `fmb-engine analyze neighbor-ranks`")
    cols = min(3, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    plt = pyplot()
    with fmb_style():
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False)
        for ax in axes.ravel()[len(groups):]:
            ax.set_axis_off()
        for ax, ((model, modality), part) in zip(axes.ravel(), groups):
            pct = part["percentile"].dropna().astype(float).to_numpy()
            ax.hist(pct, bins=np.linspace(0, 100, bins + 1), color="tab:blue", alpha=0.8)
            ax.axhline(len(pct) / bins, color="k", ls=":", lw=0.7)
            share = 100.0 * float((pct <= top_percent).mean()) if len(pct) else float("nan")
            ax.text(0.97, 0.95, f"N = {len(pct)}\ntop {top_percent:g} %: {share:.1f} %", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
            ax.set_title(f"{model} / {modality}")
            ax.set_xlim(0, 100)
            ax.set_xlabel("neighbour rank percentile")
        fig.suptitle(f"Anomaly ranks of nearest neighbours (queries: {table['object_id'].nunique()})")
        fig.tight_layout()
        return save(fig, path)


__all__ = ["neighbour_rank_histograms"]
