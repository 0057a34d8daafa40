"""Displacement histograms: where a source system's top q % land in a target system's ranking."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.style import fmb_style, pyplot, save


def displacement_grid(displacement: pd.DataFrame, retention: pd.DataFrame, path: Path,
                      systems: Sequence[str] | None = None, bins: int = 40, top_percent: float = 1.0) -> list[Path]:
    """Grid source (rows) x target (columns) of target-percentile histograms with retention labels."""
    systems = list(systems) if systems else sorted(set(displacement["source"]) | set(displacement["target"]))
    if len(systems) < 2:
        raise DataError("need at least two systems for displacement histograms")
    n = len(systems)
    ret = retention.set_index(["source", "target"])
    ret_cols = [c for c in retention.columns if c.startswith("retention_")]
    groups = {k: g for k, g in displacement.groupby(["source", "target"], sort=False)}
    plt = pyplot()
    with fmb_style():
        fig, axes = plt.subplots(n, n, figsize=(1.9 * n + 0.6, 1.5 * n + 0.6), squeeze=False, sharex=True)
        edges = np.linspace(0, 100, bins + 1)
        for i, src in enumerate(systems):
            for j, tgt in enumerate(systems):
                ax = axes[i, j]
                ax.tick_params(labelsize=5)
                if i == j:
                    ax.text(0.5, 0.5, src.replace("/", "\n"), ha="center", va="center", fontsize=6, transform=ax.transAxes)
                    ax.set_yticks([])
                    continue
                part = groups.get((src, tgt))
                if part is not None and len(part):
                    ax.hist(part["target_percentile"], bins=edges, color="0.3", histtype="stepfilled", alpha=0.8)
                ax.axvspan(0, 1, color="tab:red", alpha=0.15, lw=0)
                ax.axvspan(1, 10, color="tab:orange", alpha=0.1, lw=0)
                if (src, tgt) in ret.index:
                    text = "\n".join(f"{c.split('_', 1)[1].replace('p', '.')} %: {ret.loc[(src, tgt), c]:.0f}" for c in ret_cols)
                    ax.text(0.97, 0.95, text, ha="right", va="top", fontsize=5, transform=ax.transAxes)
                ax.set_xlim(0, 100)
                if i == n - 1:
                    ax.set_xlabel(f"percentile in {tgt}", fontsize=5)
        fig.suptitle(f"Displacement of each system's top {top_percent:g} % (rows: source, columns: target)")
        fig.tight_layout()
        return save(fig, path)


__all__ = ["displacement_grid"]
