"""Figure doors: read a workspace's analysis outputs, draw, write PNG + PDF under ``figures/``
and a run manifest (inputs with digests, options, outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fmb_engine import lineage, locks
from fmb_engine.errors import DataError
from fmb_engine.manifest import RunManifest
from fmb_engine.stage_run import StageResult, stage_run
from fmb_engine.workspace import Workspace


def _need(ws: Workspace, path: Path, hint: str, survey: Path | None = None) -> Path:
    """An analysis output that exists and was made from the inputs the workspace holds now."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `{hint}` first")
    lineage.check_output(ws, path, hint, survey)
    return path


def _writing(folder: Path):
    """One writer per figure folder (BusyError otherwise); each file is written atomically."""
    return locks.hold(folder, f"the figures in {folder}")


def _figure_run(ws: Workspace, stage: str, **options: Any):
    """The run of one figure door: its options are the manifest's config (they have no config layers)."""
    return stage_run(ws, f"figures.{stage}", {"values": options, "sources": {}})


def _done(manifest: RunManifest, inputs: dict[str, Path], written: list[Path]) -> StageResult:
    for name, path in inputs.items():
        manifest.input(name, path)
    for path in written:
        manifest.output(path.name, path)
    return StageResult({p.suffix.lstrip("."): p for p in written}, manifest.path, {"files": written})


def _out(ws: Workspace, out: Path | None, *default: str) -> Path:
    return Path(out) if out else ws.folder("figures").joinpath(*default)


def read_ranked_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ranked table not found: {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"object_id": str})


def outlier_grid_figure(ws: Workspace, survey: Path, *, system: str | None = None, table: Path | None = None,
                        ids: list[str] | None = None, top_k: int = 12, columns: int = 2, smooth: float = 2.0,
                        out: Path | None = None) -> StageResult:
    """Top-k of ``system`` in systems.parquet, of a ranked ``table`` (CSV/parquet), or the given ``ids``."""
    from fmb_engine.figures.objects import outlier_grid, top_ids

    with _figure_run(ws, "outlier-grid", system=system, top_k=top_k, ids=ids, columns=columns, smooth=smooth) as manifest:
        inputs = {"survey": Path(survey)}
        src = Path(table) if table else ws.folder("scores") / "systems.parquet"
        ranked = None
        if table or system or not ids:
            if not table:  # the workspace's ranking: checked against the survey drawn from
                from fmb_engine import rankings

                if src.is_file():
                    rankings.check_current(ws, survey=Path(survey))
            inputs["table"] = _need(ws, src, "fmb-engine detect all")
            ranked = top_ids(read_ranked_table(src), 10**12 if ids else top_k, system)
        if ids:
            wanted = list(dict.fromkeys(str(i) for i in ids))
            objects = pd.DataFrame({"object_id": wanted, "rank": float("nan"), "score": float("nan")})
            if ranked is not None:
                objects = ranked.set_index("object_id").reindex(wanted).rename_axis("object_id").reset_index()
            tag = "ids"
        else:
            objects = ranked
            tag = (system or src.stem).replace("/", "_")
        title = system or (src.stem if table else None)
        path = _out(ws, out, "outliers", f"outliers_{tag}")
        with _writing(path.parent):
            written = outlier_grid(survey, objects, path, columns=columns, smooth=smooth, title=title)
        return _done(manifest, inputs, written)


def object_fig(ws: Workspace, survey: Path, object_id: str, smooth: float = 2.0, out: Path | None = None) -> StageResult:
    from fmb_engine.figures.objects import object_figure

    with _figure_run(ws, "object", object_id=object_id, smooth=smooth) as manifest:
        path = _out(ws, out, "objects", f"object_{object_id}")
        with _writing(path.parent):
            written = object_figure(survey, object_id, path, smooth=smooth)
        return _done(manifest, {"survey": Path(survey)}, written)


def heatmap_figures(ws: Workspace, top_percent: float = 1.0, out: Path | None = None) -> StageResult:
    from fmb_engine.figures.heatmaps import jaccard_heatmap, spearman_heatmap

    with _figure_run(ws, "heatmaps", top_percent=top_percent) as manifest:
        folder = ws.folder("analysis") / "rankings"
        sp = _need(ws, folder / "spearman.csv", "fmb-engine analyze rankings")
        jc = _need(ws, folder / "jaccard.csv", "fmb-engine analyze rankings")
        base = _out(ws, out, "rankings")
        with _writing(base):
            written = spearman_heatmap(pd.read_csv(sp, index_col=0), base / "spearman_heatmap")
            written += jaccard_heatmap(pd.read_csv(jc, index_col=0), base / "jaccard_heatmap", top_percent)
        return _done(manifest, {"spearman": sp, "jaccard": jc}, written)


def displacement_figure(ws: Workspace, systems: list[str] | None = None, top_percent: float = 1.0,
                        out: Path | None = None) -> StageResult:
    from fmb_engine.figures.displacement import displacement_grid

    with _figure_run(ws, "displacement", systems=systems) as manifest:
        folder = ws.folder("analysis") / "rankings"
        d = _need(ws, folder / "displacement.parquet", "fmb-engine analyze rankings")
        r = _need(ws, folder / "retention.csv", "fmb-engine analyze rankings")
        disp = pd.read_parquet(d)
        if not systems:
            # default: one method per model x modality keeps the grid readable (flows, else everything)
            names = sorted(set(disp["source"]))
            flows = [s for s in names if s.endswith("/flow")]
            systems = flows if len(flows) >= 2 else names
            manifest.setting("systems", systems)
        path = _out(ws, out, "rankings", "displacement")
        with _writing(path.parent):
            written = displacement_grid(disp, pd.read_csv(r), path, systems, top_percent=top_percent)
        return _done(manifest, {"displacement": d, "retention": r}, written)


def regression_figures(ws: Workspace, targets: list[str] | None = None, predictor: str = "gbm",
                       out: Path | None = None) -> StageResult:
    from fmb_engine.figures.regression import regression_scatter

    with _figure_run(ws, "regression", targets=targets, predictor=predictor) as manifest:
        folder = ws.folder("analysis") / "regression"
        p = _need(ws, folder / "predictions.parquet", "fmb-engine analyze regression")
        s = _need(ws, folder / "results_summary.csv", "fmb-engine analyze regression")
        preds, res = pd.read_parquet(p), pd.read_csv(s)
        written: list[Path] = []
        base = _out(ws, out, "regression")
        with _writing(base):
            for target in targets or sorted(preds["target"].unique()):
                written += regression_scatter(preds, res, target, base / f"scatter_{target}_{predictor}", predictor)
        return _done(manifest, {"predictions": p, "results": s}, written)


def umap_figures(ws: Workspace, survey: Path, colour_by: list[str], out: Path | None = None,
                 thumbnails: int | None = None) -> StageResult:
    """One map per colour; ``thumbnails`` = cells per side of the thumbnail grid beside each map
    (0 = none, None = the workspace's ``analyze.umap_thumbnails``)."""
    from fmb_engine.figures.umap import read_thumbnails, umap_figure
    from fmb_engine.survey.store import SurveyReader

    if thumbnails is None:
        from fmb_engine.config import load

        thumbnails = int(load("analyze", ws).values.umap_thumbnails)  # type: ignore[attr-defined]
    with _figure_run(ws, "umap", colour_by=colour_by, thumbnails=thumbnails) as manifest:
        c = _need(ws, ws.folder("analysis") / "umap" / "coords.parquet", "fmb-engine analyze umap", Path(survey))
        coords = pd.read_parquet(c)
        with SurveyReader(survey) as sr:
            catalog = sr.table().set_index("object_id")
        catalog.index = catalog.index.astype(str)
        grid = read_thumbnails(survey, coords, thumbnails) if thumbnails else None
        written: list[Path] = []
        base = _out(ws, out, "umap")
        with _writing(base):
            for col in colour_by:
                written += umap_figure(coords, catalog, col, base / f"umap_{col}", grid)
        if grid is not None:
            manifest.setting("thumbnail_source", grid.source)
        return _done(manifest, {"coords": c, "survey": Path(survey)}, written)


def similarity_figures(ws: Workspace, survey: Path, queries: list[str] | None = None, top_percent: float = 1.0,
                       smooth: float = 3.0, out: Path | None = None) -> StageResult:
    """Neighbour grid of the query ids (if given) and the neighbour-rank histograms (if computed)."""
    from fmb_engine.figures.objects import neighbour_grid
    from fmb_engine.figures.similarity import neighbour_rank_histograms

    with _figure_run(ws, "similarity", queries=queries, top_percent=top_percent) as manifest:
        base = _out(ws, out, "similarity")
        inputs: dict[str, Path] = {}
        written: list[Path] = []
        if queries:
            folder = ws.folder("analysis") / "similarity"
            found = [p for p in (folder / "query_neighbours.parquet", folder / "neighbours.parquet") if p.is_file()]
            if not found:
                raise DataError(f"no neighbours in {folder}; run `fmb-engine analyze similarity` first")
            for p in found:
                lineage.check_output(ws, p, "fmb-engine analyze similarity", Path(survey))
            inputs.update({p.stem: p for p in found})
            table = pd.concat([pd.read_parquet(p) for p in found], ignore_index=True)
            table = table.drop_duplicates(["object_id", "model", "modality", "neighbour"])
            with _writing(base):
                written += neighbour_grid(survey, table, queries, base / "neighbours", smooth=smooth)
        ranks = ws.folder("analysis") / "neighbors" / "neighbor_ranks.parquet"
        if ranks.is_file():
            inputs["neighbor_ranks"] = _need(ws, ranks, "fmb-engine analyze neighbor-ranks")
            with _writing(base):
                written += neighbour_rank_histograms(pd.read_parquet(ranks), base / "neighbor_ranks", top_percent)
        if not written:
            raise DataError("nothing to draw: give query ids (--id) or run `fmb-engine analyze neighbor-ranks` first")
        return _done(manifest, inputs, written)


__all__ = ["displacement_figure", "heatmap_figures", "object_fig", "outlier_grid_figure", "read_ranked_table",
           "regression_figures", "similarity_figures", "umap_figures"]
