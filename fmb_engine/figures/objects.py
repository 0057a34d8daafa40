"""Object figures: the outlier grid (top-k of a ranking or a list of ids) and one object in detail."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.figures.panels import draw_band, draw_rgb, draw_spectrum, redshift_text, short_id
from fmb_engine.figures.style import fmb_style, pyplot, save


def top_ids(table: pd.DataFrame, k: int, system: str | None = None) -> pd.DataFrame:
    """First ``k`` rows of a ranked table: ``rank:<system>`` of systems.parquet, a ``rank`` column, else file order.

    Returns ``object_id, rank, score`` (rank / score NaN where unknown)."""
    if "object_id" not in table.columns:
        raise DataError("the ranked table has no object_id column")
    t = table.copy()
    t["object_id"] = t["object_id"].astype(str)
    rank_cols = [c for c in t.columns if c.startswith("rank:")]
    if rank_cols:
        col = f"rank:{system}" if system else rank_cols[0]
        if col not in t.columns:
            raise DataError(f"no ranking {system!r}; present: {', '.join(c[5:] for c in rank_cols)}")
        score = "score:" + col[5:]
        t = t.dropna(subset=[col]).sort_values(col, kind="stable")
        out = pd.DataFrame({"object_id": t["object_id"], "rank": t[col].astype(float),
                            "score": t[score].astype(float) if score in t.columns else np.nan})
    elif "rank" in t.columns:
        t = t.sort_values("rank", kind="stable")
        sc = next((c for c in ("score", "neg_log_prob", "mismatch_score") if c in t.columns), None)
        out = pd.DataFrame({"object_id": t["object_id"], "rank": t["rank"].astype(float),
                            "score": t[sc].astype(float) if sc else np.nan})
    else:
        out = pd.DataFrame({"object_id": t["object_id"], "rank": np.nan, "score": np.nan})
    return out.drop_duplicates("object_id").head(k).reset_index(drop=True)


def outlier_grid(survey: Path, objects: pd.DataFrame, path: Path, columns: int = 2, smooth: float = 2.0,
                 title: str | None = None) -> list[Path]:
    """Per object: asinh RGB (id, rank, score, z) + spectrum with lines; ``objects`` has object_id[, rank, score].

    Long ids are shortened in the captions (:func:`~fmb_engine.figures.panels.short_id`)."""
    from fmb_engine.survey.store import SurveyReader

    if not len(objects):
        raise DataError("no objects to draw")
    n = len(objects)
    rows = int(np.ceil(n / columns))
    plt = pyplot()
    with fmb_style(), SurveyReader(survey) as reader:
        fig = plt.figure(figsize=(4.6 * columns, 1.45 * rows + 0.4))
        grid = fig.add_gridspec(rows, 2 * columns, width_ratios=[1, 2.4] * columns, wspace=0.08, hspace=0.12)
        for i, rec in enumerate(objects.itertuples(index=False)):
            r, c = divmod(i, columns)
            obj = reader.get(str(rec.object_id))
            parts = [short_id(rec.object_id)]
            rank = getattr(rec, "rank", np.nan)
            score = getattr(rec, "score", np.nan)
            if pd.notna(rank):
                parts.append(f"rank {int(rank)}")
            if pd.notna(score):
                parts.append(f"score {float(score):.3g}")
            parts.append(redshift_text(obj))
            draw_rgb(fig.add_subplot(grid[r, 2 * c]), obj, "\n".join(parts))
            ax = fig.add_subplot(grid[r, 2 * c + 1])
            draw_spectrum(ax, obj, smooth=smooth, absorption=False, label_lines=(r == 0))
            ax.set_yticks([])
            if r == rows - 1 or i + columns >= n:
                ax.set_xlabel("observed wavelength [Å]")
            else:
                ax.set_xticklabels([])
        if title:
            fig.suptitle(title)
        return save(fig, path)


def object_figure(survey: Path, object_id: str, path: Path, smooth: float = 2.0) -> list[Path]:
    """4 bands + RGB above the spectrum with emission / absorption lines at the object's redshift."""
    from fmb_engine.survey.store import SurveyReader

    plt = pyplot()
    with fmb_style(), SurveyReader(survey) as reader:
        obj = reader.get(str(object_id))
        fig = plt.figure(figsize=(11, 4.6))
        grid = fig.add_gridspec(2, 5, height_ratios=[1, 1.1], hspace=0.25)
        for k in range(4):
            draw_band(fig.add_subplot(grid[0, k]), obj, k)
        ax = fig.add_subplot(grid[0, 4])
        draw_rgb(ax, obj)
        ax.set_title("RGB (H, Y, VIS)")
        ax = fig.add_subplot(grid[1, :])
        draw_spectrum(ax, obj, smooth=smooth)
        ax.set_xlabel("observed wavelength [Å]")
        ax.set_ylabel("flux [10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹]")
        label = obj.meta.get("anomaly_class") or ""
        fig.suptitle(f"{obj.object_id}   {redshift_text(obj)}" + (f"   [{label}]" if label else ""))
        return save(fig, path)


def neighbour_grid(survey: Path, neighbours: pd.DataFrame, queries: Sequence[str], path: Path, smooth: float = 3.0) -> list[Path]:
    """One row block per (model, modality, query): the query then its neighbours (RGB above spectrum)."""
    from fmb_engine.survey.store import SurveyReader

    blocks = [(key, part.sort_values("neighbour")) for key, part in
              neighbours[neighbours["object_id"].isin(list(queries))].groupby(["model", "modality", "object_id"], sort=True)]
    if not blocks:
        raise DataError("none of the query ids has neighbours; run `fmb-engine analyze similarity` with them")
    cols = 1 + max(len(p) for _, p in blocks)
    plt = pyplot()
    with fmb_style(), SurveyReader(survey) as reader:
        fig = plt.figure(figsize=(2.0 * cols, 2.9 * len(blocks)))
        grid = fig.add_gridspec(2 * len(blocks), cols, height_ratios=[1.4, 1] * len(blocks), hspace=0.3, wspace=0.08)
        for b, ((model, modality, qid), part) in enumerate(blocks):
            entries = [(qid, "query", None)] + [(r.neighbour_id, f"#{r.neighbour}", r.similarity) for r in part.itertuples()]
            for c, (oid, tag, sim) in enumerate(entries):
                obj = reader.get(str(oid))
                cap = f"{tag}\n{short_id(oid)}\n{redshift_text(obj)}" + (f"  cos {sim:.3f}" if sim is not None else "")
                ax = fig.add_subplot(grid[2 * b, c])
                draw_rgb(ax, obj, cap)
                if c == 0:
                    ax.set_ylabel(f"{model}\n{modality}")
                ax = fig.add_subplot(grid[2 * b + 1, c])
                draw_spectrum(ax, obj, smooth=smooth, absorption=False, label_lines=False)
                ax.set_yticks([])
                ax.tick_params(labelsize=5)
        return save(fig, path)


__all__ = ["neighbour_grid", "object_figure", "outlier_grid", "top_ids"]
