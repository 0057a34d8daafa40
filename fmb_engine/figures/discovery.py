"""The discovery-curve figure: interesting objects found against objects inspected, one line per strategy.

Each strategy is its mean over seeds with a band of one standard deviation; ``random`` (inspecting in a
random order) is drawn as a dashed grey floor; given the number of interesting objects, it is drawn as a
dotted ceiling with the perfect order's diagonal. House style and PNG + PDF saving come from
:mod:`fmb_engine.figures.style`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.style import fmb_style, pyplot, save

FLOOR = "random"


def discovery_figure(curves: pd.DataFrame, path: str | Path, title: str | None = None,
                     total: int | None = None) -> list[Path]:
    """Draw ``curves`` (columns strategy, seed, inspected, found) to ``path`` (.png and .pdf).

    ``total``, when given, is the number of interesting objects in the survey, drawn as a horizontal line.
    Returns the files written.
    """
    missing = {"strategy", "seed", "inspected", "found"} - set(curves.columns)
    if missing:
        raise DataError(f"discovery curves lack column(s) {', '.join(sorted(missing))}")
    if not len(curves):
        raise DataError("no discovery curves to draw")
    plt = pyplot()
    with fmb_style():
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        colour = 0
        for name, part in curves.groupby("strategy", sort=False):
            table = part.pivot_table(index="inspected", columns="seed", values="found")
            x = table.index.to_numpy()
            mean, std = table.mean(axis=1).to_numpy(), table.std(axis=1, ddof=0).to_numpy()
            if name == FLOOR:
                style = {"color": "0.45", "ls": "--"}
            else:
                style = {"color": f"C{colour}", "ls": "-"}
                colour += 1
            ax.plot(x, mean, lw=1.4, label=f"{name} ({mean[-1]:.0f})", **style)
            ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.18, lw=0)
        longest = int(curves["inspected"].max())
        if total is not None:
            ax.axhline(total, color="k", lw=0.7, ls=":", label=f"all interesting ({total})")
            ax.plot([0, min(total, longest)], [0, min(total, longest)], color="k", lw=0.5, ls=":")
        ax.set_xlim(0, longest)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("objects inspected")
        ax.set_ylabel("interesting objects found")
        seeds = curves.groupby("strategy")["seed"].nunique().max()
        ax.set_title(title or f"Discovery curves (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        fig.tight_layout()
        return save(fig, path)


__all__ = ["discovery_figure"]
