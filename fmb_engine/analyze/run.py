"""Doors of the analysis room: each takes a workspace and the ``analyze`` section, writes
artifacts under ``analysis/`` atomically plus a run manifest, and returns a StageResult."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine import lineage, locks, publish
from fmb_engine.analyze.config import AnalyzeConfig
from fmb_engine.config import Resolved
from fmb_engine.csv_tables import write_csv
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.manifest import RunManifest
from fmb_engine.parallel import resolve_jobs
from fmb_engine.progress import Reporter, Silent
from fmb_engine.publish import StagedSet
from fmb_engine.stage_run import StageResult, config_record, stage_run
from fmb_engine.workspace import Workspace, atomic_path


def _write(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    if path.suffix == ".csv":
        return write_csv(df, path, index=index)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def _publish(ws: Workspace, manifest: RunManifest, folder: Path, tables: dict[str, tuple[pd.DataFrame, str, bool]],
             inputs: tuple[dict[str, str], dict[str, list[int]]]) -> dict[str, Path]:
    """Write an analysis's tables (name -> (frame, file name, write the index)) as one set.

    One writer per folder (BusyError otherwise); the tables and their lineage record are
    staged beside the published ones and swapped in together (:mod:`fmb_engine.publish`)."""
    with locks.hold(folder, f"the analysis outputs in {lineage.key_of(ws, folder)}/"):
        publish.clean(folder)
        with StagedSet(folder, manifest.run_id) as stage:
            outputs = {name: folder / filename for name, (_, filename, _) in tables.items()}
            for name, (df, _, index) in tables.items():
                _write(df, stage.path(outputs[name]), index)
            lineage.write_records(folder, stage.path(folder / lineage.RECORD_FILE), outputs.values(), *inputs)
            stage.publish()
    return outputs


def _inputs(ws: Workspace, paths: list[Path], survey: Path | None = None
            ) -> tuple[dict[str, str], dict[str, list[int]]]:
    """The lineage record of an analysis: the identity of each input file (and of the survey), and the
    files' stamps (:func:`lineage.identify`)."""
    inputs, stamps = lineage.identify(ws, [lineage.key_of(ws, p) for p in paths])
    if survey is not None:
        inputs[lineage.SURVEY] = lineage.survey_digest(survey)
    return inputs, stamps


def systems_file(ws: Workspace) -> Path:
    """scores/systems.parquet, checked against the inputs it records (StaleError when they changed)."""
    from fmb_engine import rankings

    path = ws.folder("scores") / "systems.parquet"
    if not path.is_file():
        raise DataError(f"no rankings: {path} does not exist; run `fmb-engine detect all` first")
    rankings.check_current(ws)
    return path


def load_ranks(ws: Workspace, systems: list[str] | None = None) -> pd.DataFrame:
    """``object_id``-indexed frame of rank columns (named by system), nullable; only the columns
    asked for are read (the score columns double the memory of a 10^6-row table)."""
    import pyarrow.parquet as pq

    path = systems_file(ws)
    have = [c.split(":", 1)[1] for c in pq.read_schema(path).names if c.startswith("rank:")]
    if systems:
        missing = [s for s in systems if s not in have]
        if missing:
            raise DataError(f"unknown system(s) {', '.join(missing)}; present: {', '.join(have)}")
    chosen = systems or have
    table = pd.read_parquet(path, columns=list(dict.fromkeys(["object_id", *[f"rank:{s}" for s in chosen]])))
    out = table.set_index(table["object_id"].astype(str))[[f"rank:{s}" for s in chosen]]
    out.columns = chosen
    return out


def embedding_files(ws: Workspace, models: list[str], survey: Path | None = None) -> list[Path]:
    """The embedding files of ``models``, each made from ``survey`` (default: the active one) or StaleError."""
    from fmb_engine.detect.run import embedding_runs

    paths = embedding_runs(ws, models)
    lineage.check_embeddings(ws, paths, survey if survey is not None else lineage.active_survey(ws))
    return paths


def valid_vectors(ws: Workspace, cfg: AnalyzeConfig, manifest: RunManifest,
                  used: list[Path] | None = None) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(run, modality, object ids, vectors)`` of the chosen runs and modalities, valid rows only:
    each run is recorded as an input (and appended to ``used``), the invalid (imputed) rows are
    counted as dropped."""
    from fmb_engine.embed.store import EmbeddingReader

    for path in embedding_files(ws, cfg.models):
        manifest.input(f"embeddings:{path.stem}", path, digest=lineage.embedding_identity(path))
        if used is not None:
            used.append(path)
        with EmbeddingReader(path) as reader:
            ids_all = reader.object_ids.astype(str)
            for modality in [m for m in reader.modalities if not cfg.modalities or m in cfg.modalities]:
                valid = reader.valid(modality)
                manifest.dropped(f"{path.stem}/{modality}:invalid", int((~valid).sum()))
                yield path.stem, modality, ids_all[valid], reader.load(modality)[valid]


def _finish(manifest: RunManifest, outputs: dict[str, Path], summary: dict) -> StageResult:
    """Record the outputs; the manifest is written when the run's block ends."""
    for name, path in outputs.items():
        manifest.output(name, path)
    return StageResult(outputs, manifest.path, summary)


# -- rankings ---------------------------------------------------------------------------------
def analyze_rankings(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None) -> StageResult:
    """Spearman, Jaccard, retention and disagreement of every pair of systems -> analysis/rankings/."""
    from fmb_engine.analyze.rankings import RankMatrix, compare

    cfg: AnalyzeConfig = resolved.values  # type: ignore[assignment]
    with stage_run(ws, "analyze.rankings", config_record(resolved), seed=cfg.seed) as manifest:
        src = systems_file(ws)
        manifest.input("systems", src)
        ranks = load_ranks(ws, cfg.systems)
        if ranks.shape[1] < 2:
            raise DataError(f"need at least two systems to compare, got {ranks.shape[1]}")
        with manifest.phase("compare"):
            res = compare(RankMatrix(ranks), cfg.top_percent, cfg.disagree_percent, cfg.retention_percents)
        outputs = _publish(ws, manifest, ws.folder("analysis") / "rankings", {
            "spearman": (res["spearman"], "spearman.csv", True),
            "jaccard": (res["jaccard"], "jaccard.csv", True),
            "shared": (res["shared"], "shared.csv", True),
            "retention": (res["retention"], "retention.csv", False),
            "disagreement": (res["disagreement"], "disagreement.csv", False),
            "displacement": (res["displacement"], "displacement.parquet", False),
        }, _inputs(ws, [src]))
        manifest.count("systems", list(ranks.columns))
        manifest.count("objects", len(ranks))
        manifest.count("disagreements", len(res["disagreement"]))
        for note in res["notes"]["note"]:  # why a Spearman is NaN (a constant ranking), instead of a bare NaN
            manifest.warn(note)
        return _finish(manifest, outputs, {"systems": list(ranks.columns), "objects": len(ranks), **res})


# -- similarity -------------------------------------------------------------------------------
def read_query_ids(ids: list[str] | None = None, csv: Path | None = None) -> list[str]:
    """Query ids from repeated ``--id`` and/or a CSV (column ``object_id``, else the first), order kept, duplicates dropped."""
    out = list(ids or [])
    if csv is not None:
        path = Path(csv)
        if not path.is_file():
            raise DataError(f"query CSV not found: {path}")
        table = pd.read_csv(path, dtype=str)
        col = "object_id" if "object_id" in table.columns else table.columns[0]
        out += table[col].dropna().astype(str).str.strip().tolist()
    return list(dict.fromkeys(out))


def analyze_similarity(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None,
                       queries: list[str] | None = None) -> StageResult:
    """Cosine k-NN per model and modality (valid rows only; exact, or approximate with its recall
    measured, per ``analyze.backend``) -> analysis/similarity/neighbours.parquet (every object
    queried) or query_neighbours.parquet (``queries`` given). The manifest's ``knn`` field holds
    each search's backend, index parameters, timings and recall."""
    from fmb_engine.analyze.similarity import choose_backend, knn, neighbour_table

    cfg: AnalyzeConfig = resolved.values  # type: ignore[assignment]
    reporter = reporter or Silent()
    with stage_run(ws, "analyze.similarity", config_record(resolved), seed=cfg.seed) as manifest:
        tables = []
        searches: dict[str, dict] = {}
        used: list[Path] = []
        for run, modality, ids, x in valid_vectors(ws, cfg, manifest, used):
            if queries:
                pos = {o: i for i, o in enumerate(ids)}
                missing = [q for q in queries if q not in pos]
                if missing:
                    manifest.warn(f"{run}/{modality}: {len(missing)} query id(s) not found: {', '.join(missing[:10])}")
                    manifest.dropped(f"{run}/{modality}:query_not_found", len(missing))
                rows = np.array([pos[q] for q in queries if q in pos], np.int64)
            else:
                rows = np.arange(len(ids))
            name = f"{run}/{modality}"
            engine, fallback = choose_backend(cfg.backend, len(ids), len(rows), cfg.approx_threshold)
            with manifest.phase(f"knn:{name}"):
                if engine == "approx":
                    idx, sims, search = _approx(x, rows, queries is None, cfg)
                else:
                    idx, sims = knn(x, x if queries is None else x[rows], cfg.k, self_rows=rows, chunk=cfg.chunk,
                                    backend=engine)
                    search = {"backend": engine, "objects": len(ids), "queries": len(rows), "k": cfg.k}
            if fallback:
                search["fallback"] = fallback
                manifest.warn(f"{name}: {fallback}")
            recall = search.get(f"recall_at_{cfg.k}")
            if recall is not None and recall < cfg.approx_min_recall:
                manifest.warn(f"{name}: approximate recall@{cfg.k} {recall:.3f} < {cfg.approx_min_recall} "
                              "(raise analyze.approx_nprobe or use analyze.backend exact)")
            searches[name] = search
            tables.append(neighbour_table(ids[rows], ids, idx, sims, run, modality))
            reporter.log(f"{name}: {len(rows):,} queries x {len(ids):,} objects, {engine}"
                         + (f", recall@{cfg.k} {recall:.3f} (nprobe {search['nprobe']}/{search['nlist']})" if recall is not None else ""))
        if not tables:
            raise DataError("no embeddings matched the chosen models / modalities")
        table = pd.concat(tables, ignore_index=True)
        # the full self-query is the table the explorer reads; a query run never replaces it
        name = "query_neighbours.parquet" if queries else "neighbours.parquet"
        outputs = _publish(ws, manifest, ws.folder("analysis") / "similarity", {"neighbours": (table, name, False)},
                           _inputs(ws, used, lineage.active_survey(ws)))
        manifest.count("backend", ", ".join(sorted({s["backend"] for s in searches.values()})))
        manifest.record("knn", searches)
        manifest.count("rows", len(table))
        manifest.count("queries", int(table["object_id"].nunique()))
        return _finish(manifest, outputs, {"neighbours": table, "knn": searches})


def _approx(x: np.ndarray, rows: np.ndarray, self_query: bool, cfg: AnalyzeConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """The approximate search of one embedding with the section's index settings."""
    from fmb_engine.analyze.ann import ApproxSettings, approx_knn

    settings = ApproxSettings(nlist=cfg.approx_nlist, nprobe=cfg.approx_nprobe, min_recall=cfg.approx_min_recall,
                              recall_queries=cfg.approx_recall_queries, seed=cfg.seed, chunk=cfg.chunk)
    return approx_knn(x, x if self_query else x[rows], cfg.k, self_rows=rows, settings=settings)


def analyze_neighbor_ranks(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None) -> StageResult:
    """Anomaly-rank percentiles of every neighbour (system <model>/<modality>/<rank_method>)."""
    from fmb_engine.analyze.similarity import neighbour_ranks, summarise_neighbour_ranks

    cfg: AnalyzeConfig = resolved.values  # type: ignore[assignment]
    with stage_run(ws, "analyze.neighbor-ranks", config_record(resolved), seed=cfg.seed) as manifest:
        npath = ws.folder("analysis") / "similarity" / "neighbours.parquet"
        if not npath.is_file():
            raise DataError(f"no neighbours: {npath} does not exist; run `fmb-engine analyze similarity` first")
        lineage.check_output(ws, npath, "fmb-engine analyze similarity")
        manifest.input("neighbours", npath)
        manifest.input("systems", systems_file(ws))
        neighbours = pd.read_parquet(npath)
        ranks = load_ranks(ws)
        parts = []
        for (model, modality), part in neighbours.groupby(["model", "modality"], sort=True):
            system = f"{model}/{modality}/{cfg.rank_method}"
            if system not in ranks.columns:
                manifest.warn(f"no system {system}: neighbours of {model}/{modality} skipped")
                manifest.dropped("no_system", len(part))
                continue
            parts.append(neighbour_ranks(part, ranks[system]).assign(system=system))
        if not parts:
            raise DataError(f"no system <model>/<modality>/{cfg.rank_method} matches the neighbours; try --method")
        table = pd.concat(parts, ignore_index=True)
        summary = summarise_neighbour_ranks(table, cfg.top_percent)
        outputs = _publish(ws, manifest, ws.folder("analysis") / "neighbors", {
            "neighbor_ranks": (table, "neighbor_ranks.parquet", False),
            "summary": (summary, "neighbor_ranks_summary.csv", False)}, _inputs(ws, [npath, systems_file(ws)]))
        return _finish(manifest, outputs, {"table": table, "summary": summary})


# -- regression -------------------------------------------------------------------------------
def analyze_regression(ws: Workspace, resolved: Resolved, survey: Path, reporter: Reporter | None = None,
                       nonlinear: bool = True) -> StageResult:
    """Probe each target from each model/modality (+ a random baseline of the same dim on the same objects).

    Writes ``results_summary.csv`` (flat metrics, one row per probe), ``predictions.parquet`` and
    ``phi.parquet`` (the attribution vectors φ of each probe: list columns ``phi_ridge`` and,
    with the GBM's TreeSHAP on, ``phi_gbm``; keyed like the results rows)."""
    from fmb_engine.analyze.regression import require_shap, run_probes, split_ids
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.survey.store import SurveyReader

    cfg: AnalyzeConfig = resolved.values  # type: ignore[assignment]
    reporter = reporter or Silent()
    with stage_run(ws, "analyze.regression", config_record(resolved), seed=cfg.seed) as manifest:
        gbm_shap = nonlinear and cfg.gbm_shap
        shap_version = require_shap().__version__ if gbm_shap else None  # a clear error before any work, never a silent skip
        manifest.count("shap_version", shap_version)
        with SurveyReader(survey) as sr:
            catalog = sr.table().set_index("object_id")
            manifest.input("survey", survey, digest=sr.summary()["digest"])
        catalog.index = catalog.index.astype(str)
        missing = [t for t in cfg.targets if t not in catalog.columns]
        if missing:
            raise DataError(f"survey has no column(s) {', '.join(missing)}; columns: {', '.join(catalog.columns)}")
        runs = embedding_files(ws, cfg.models, survey)
        for path in runs:
            manifest.input(f"embeddings:{path.stem}", path, digest=lineage.embedding_identity(path))
        rows, preds, phis = [], [], []
        kwargs = dict(alpha=cfg.ridge_alpha, gbm_iter=cfg.gbm_iter, gbm_early_stopping=cfg.gbm_early_stopping,
                      bootstrap=cfg.bootstrap, seed=cfg.seed,
                      nonlinear=nonlinear, gbm_shap=gbm_shap, shap_max_rows=cfg.shap_max_rows,
                      pr_bootstrap=cfg.pr_bootstrap)
        n_jobs = resolve_jobs(cfg.n_jobs)
        for target in cfg.targets:
            y_all = pd.to_numeric(catalog[target], errors="coerce")
            y_all = y_all[np.isfinite(y_all)]
            train_ids, test_ids = split_ids(y_all.index.to_numpy(), cfg.test_fraction, cfg.seed)
            for path in runs:
                jobs = []  # (key, test ids, train x, train y, test x, test y): one run's probes go side by side
                # The random baseline depends only on (seed, dimension, objects): modalities of one run
                # with the same dimension and valid objects share it, so it is fitted once.
                baseline_of: dict[tuple, int] = {}
                same_as: list[int | None] = []
                with EmbeddingReader(path) as reader:
                    ids_all = reader.object_ids.astype(str)
                    for modality in [m for m in reader.modalities if not cfg.modalities or m in cfg.modalities]:
                        valid = reader.valid(modality)
                        x = reader.load(modality)
                        ok = valid & np.isfinite(x).all(axis=1) & pd.Index(ids_all).isin(y_all.index)
                        manifest.dropped(f"{target}:{path.stem}/{modality}:unmatched_or_invalid", int((~ok).sum()))
                        ids, x = ids_all[ok], x[ok]
                        tr = pd.Index(ids).isin(train_ids)
                        te = pd.Index(ids).isin(test_ids)
                        if tr.sum() < cfg.min_train or te.sum() < 2:
                            manifest.warn(f"{target} from {path.stem}/{modality}: {int(tr.sum())} train rows < {cfg.min_train}; skipped")
                            continue
                        y = y_all.loc[ids].to_numpy(np.float64)
                        rng = np.random.default_rng(cfg.seed)
                        signature = (x.shape, hash("\x1f".join(ids)))
                        for features, feats in (("embedding", x), ("random", rng.standard_normal(x.shape).astype(np.float32))):
                            key = {"target": target, "model": path.stem, "modality": modality, "features": features}
                            jobs.append((key, ids[te], feats[tr], y[tr], feats[te], y[te]))
                            same_as.append(baseline_of.get(signature) if features == "random" else None)
                            if features == "random":
                                baseline_of.setdefault(signature, len(jobs) - 1)
                unique = [i for i, s in enumerate(same_as) if s is None]
                ran = dict(zip(unique, run_probes([jobs[i][2:] for i in unique], kwargs, n_jobs), strict=True))
                done = [ran[i] if s is None else (ran[s][0], 0.0) for i, s in enumerate(same_as)]
                for (key, test_ids_, *_), (res, seconds) in zip(jobs, done, strict=True):
                    manifest.timing(f"probe:{target}:{key['model']}/{key['modality']}:{key['features']}", seconds)
                    rows.append({**key, **res.metrics})
                    phis.append({**key, **{f"phi_{k}": v.tolist() for k, v in res.phi.items()}})
                    if key["features"] == "embedding":
                        preds.append(pd.DataFrame({"target": target, "model": key["model"], "modality": key["modality"],
                                                   "object_id": test_ids_, "y_true": res.y_test,
                                                   "pred_ridge": res.pred_ridge, "pred_gbm": res.pred_gbm}))
                        reporter.log(f"{target} <- {key['model']}/{key['modality']}: R² ridge {res.metrics['r2_ridge']:.3f}")
        if not rows:
            raise DataError("no probe had enough rows; lower analyze.min_train or check the survey columns")
        results = pd.DataFrame(rows)
        predictions = pd.concat(preds, ignore_index=True)
        phi = pd.DataFrame(phis)
        outputs = _publish(ws, manifest, ws.folder("analysis") / "regression", {
            "results": (results, "results_summary.csv", False),
            "predictions": (predictions, "predictions.parquet", False),
            "phi": (phi, "phi.parquet", False)}, _inputs(ws, runs, survey))
        manifest.count("probes", len(results))
        return _finish(manifest, outputs, {"results": results, "predictions": predictions, "phi": phi})


# -- umap -------------------------------------------------------------------------------------
def analyze_umap(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None, projector=None) -> StageResult:
    """Seeded 2-D UMAP per model/modality, cached by input digest -> analysis/umap/coords.parquet.

    Every valid object gets a coordinate: UMAP is fitted on a seeded sample of at most
    ``umap_max_points`` objects and places the others with the fitted model, chunk by chunk."""
    from fmb_engine.analyze.umap_embed import FIT_LIMIT, TRANSFORM_CHUNK, project

    cfg: AnalyzeConfig = resolved.values  # type: ignore[assignment]
    if cfg.umap_max_points > FIT_LIMIT:
        raise ConfigError(f"analyze.umap_max_points is {cfg.umap_max_points:,}, above the {FIT_LIMIT:,} objects one "
                          f"UMAP fit can take on a node (docs/science.md, UMAP); set it to {FIT_LIMIT:,} or less: "
                          "the objects beyond the fitted sample are still placed, by the fitted model's transform")
    reporter = reporter or Silent()
    with stage_run(ws, "analyze.umap", config_record(resolved), seed=cfg.seed) as manifest:
        params = {"n_neighbors": cfg.umap_neighbors, "min_dist": cfg.umap_min_dist, "metric": cfg.umap_metric, "seed": cfg.seed,
                  "fit_points": cfg.umap_max_points, "chunk": TRANSFORM_CHUNK}
        out = ws.folder("analysis") / "umap"
        frames, cached = [], {}
        used: list[Path] = []
        for run, modality, ids, x in valid_vectors(ws, cfg, manifest, used):
            fitted = min(len(ids), cfg.umap_max_points)
            with manifest.phase(f"umap:{run}/{modality}"):
                coords, key, hit = project(x, params, out / "cache", projector)
            cached[f"{run}/{modality}"] = {"digest": key, "cached": hit, "fitted": fitted, "transformed": len(ids) - fitted}
            frames.append(pd.DataFrame({"object_id": ids, "model": run, "modality": modality,
                                        "x": coords[:, 0], "y": coords[:, 1]}))
            reporter.log(f"umap {run}/{modality}: {len(ids):,} points"
                         + (f" ({fitted:,} fitted, the rest transformed)" if fitted < len(ids) else "")
                         + (" (cached)" if hit else ""))
        table = pd.concat(frames, ignore_index=True)
        manifest.count("projections", cached)
        outputs = _publish(ws, manifest, out, {"coords": (table, "coords.parquet", False)},
                           _inputs(ws, used, lineage.active_survey(ws)))
        return _finish(manifest, outputs, {"coords": table, "projections": cached})


__all__ = ["analyze_neighbor_ranks", "analyze_rankings", "analyze_regression", "analyze_similarity", "analyze_umap",
           "load_ranks", "read_query_ids", "valid_vectors"]
