"""Regression scatter: held-out truth vs prediction per model x modality, R² with its interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.style import fmb_style, pyplot, save


def regression_scatter(predictions: pd.DataFrame, results: pd.DataFrame, target: str, path: Path,
                       predictor: str = "gbm") -> list[Path]:
    pred_col = f"pred_{predictor}"
    data = predictions[predictions["target"] == target]
    if not len(data):
        raise DataError(f"no predictions for target {target!r}; targets: {', '.join(sorted(predictions['target'].unique()))}")
    models = sorted(data["model"].unique())
    modalities = [m for m in ("image", "spectrum", "joint") if m in set(data["modality"])] + \
        sorted(set(data["modality"]) - {"image", "spectrum", "joint"})
    res = results[(results["target"] == target)].set_index(["model", "modality", "features"])
    lo_all = np.nanmin(data[["y_true", pred_col]].to_numpy(float))
    hi_all = np.nanmax(data[["y_true", pred_col]].to_numpy(float))
    plt = pyplot()
    with fmb_style():
        fig, axes = plt.subplots(len(modalities), len(models), figsize=(2.4 * len(models) + 0.4, 2.3 * len(modalities)),
                                 squeeze=False, sharex=True, sharey=True)
        for i, mod in enumerate(modalities):
            for j, model in enumerate(models):
                ax = axes[i, j]
                part = data[(data["model"] == model) & (data["modality"] == mod)]
                ax.scatter(part["y_true"], part[pred_col], s=3, alpha=0.5, color="tab:blue", lw=0, rasterized=True)
                ax.plot([lo_all, hi_all], [lo_all, hi_all], color="k", lw=0.7, ls="--")
                key = (model, mod, "embedding")
                if key in res.index:
                    r = res.loc[key]
                    base = res.loc[(model, mod, "random")] if (model, mod, "random") in res.index else None
                    txt = f"R² = {r[f'r2_{predictor}']:.3f} [{r[f'r2_{predictor}_lo']:.2f}, {r[f'r2_{predictor}_hi']:.2f}]"
                    if base is not None:
                        txt += f"\nrandom: {base[f'r2_{predictor}']:.3f}"
                    ax.text(0.04, 0.96, txt, transform=ax.transAxes, va="top", fontsize=6)
                if i == 0:
                    ax.set_title(model)
                if j == 0:
                    ax.set_ylabel(f"{mod}\npredicted {target}")
                if i == len(modalities) - 1:
                    ax.set_xlabel(f"true {target}")
        fig.suptitle(f"{target}: held-out predictions ({predictor})")
        fig.tight_layout()
        return save(fig, path)


__all__ = ["regression_scatter"]
