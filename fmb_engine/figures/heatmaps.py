"""Spearman and Jaccard heatmaps of the systems, ordered by hierarchical clustering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.figures.style import fmb_style, pyplot, save


def cluster_order(matrix: pd.DataFrame, method: str = "average") -> list[int]:
    """Leaf order of an average-linkage clustering on the distance 1 - similarity (identity if < 3 systems)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = len(matrix)
    if n < 3:
        return list(range(n))
    sim = np.nan_to_num(matrix.to_numpy(dtype=float), nan=0.0)
    dist = np.clip(1.0 - (sim + sim.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), method=method, optimal_ordering=True))]


def heatmap(matrix: pd.DataFrame, path: Path, title: str, cmap: str = "viridis", vmin: float | None = None,
            vmax: float | None = None, cluster: bool = True, annotate: bool | None = None, label: str = "") -> list[Path]:
    order = cluster_order(matrix) if cluster else list(range(len(matrix)))
    m = matrix.iloc[order, order]
    n = len(m)
    annotate = n <= 16 if annotate is None else annotate
    plt = pyplot()
    with fmb_style():
        size = max(3.5, 0.38 * n + 2.2)
        fig, ax = plt.subplots(figsize=(size + 0.8, size))
        im = ax.imshow(m.to_numpy(dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
        ax.set_xticks(range(n), m.columns, rotation=90, fontsize=6 if n > 12 else 7)
        ax.set_yticks(range(n), m.index, fontsize=6 if n > 12 else 7)
        if annotate:
            vals = m.to_numpy(dtype=float)
            lo, hi = np.nanmin(vals), np.nanmax(vals)
            for i in range(n):
                for j in range(n):
                    v = vals[i, j]
                    if np.isfinite(v):
                        light = (v - lo) / (hi - lo + 1e-12) < 0.5
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color="white" if light else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label)
        ax.set_title(title)
        return save(fig, path)


def spearman_heatmap(matrix: pd.DataFrame, path: Path) -> list[Path]:
    return heatmap(matrix, path, "Spearman rank correlation (shared objects)", cmap="RdBu_r", vmin=-1, vmax=1, label="ρ")


def jaccard_heatmap(matrix: pd.DataFrame, path: Path, top_percent: float = 1.0) -> list[Path]:
    return heatmap(matrix, path, f"Jaccard index of the top {top_percent:g} %", cmap="YlGnBu", vmin=0, vmax=1, label="J")


__all__ = ["cluster_order", "heatmap", "jaccard_heatmap", "spearman_heatmap"]
