"""Stage doors of detection: flows, mismatch, baselines, fusion, and the systems table.

Inputs are the embedding stores in ``embeddings/``; outputs go to ``scores/``:

* ``anomaly_scores_<model>.csv`` — flows, the reference's long format
  (object_id, embedding_key, log_prob, neg_log_prob, anomaly_sigma, rank);
* ``cosine_scores_<model>.csv`` — mismatch (object_id, cosine_similarity,
  mismatch_score, method, rank): cosine only for aligned embedders;
* ``baseline_scores_<model>.csv`` — IsolationForest and k-NN, same columns as
  the flows plus ``method``;
* ``multimodal/all_scores.csv``, ``multimodal/ranked/top{K}_{model}_{fusion}.csv``,
  ``multimodal/filtered/top{K}_{model}_{fusion}_filtered.csv`` — fusion;
* ``models/<model>/flow_<modality>.npz`` — fitted preprocessing + flow, to score new objects;
* ``systems.parquet`` — one row per object, ``rank:<system>`` and ``score:<system>``
  for every system ``<model>/<modality>/<method>`` (higher score = more anomalous), of the runs
  scored now and of the other runs kept from earlier detect runs (:func:`systems_runs`); its
  ``fmb:systems`` metadata says which detect run scored each.

Detection degrades per system, not per run: a flow or baseline whose modality
has fewer than ``MIN_ROWS`` usable rows, a mismatch with fewer objects usable in
both modalities, and the fusion of a model missing one of its three inputs are
skipped; each is logged and listed under ``skipped_systems`` in the manifest,
its table keeps a header only (a stale one is never read). The run fails only
when it scores no system at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmb_engine import lineage, locks, publish
from fmb_engine.config import Resolved
from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector, detector_table
from fmb_engine.detect.config import DetectConfig
from fmb_engine.detect.degenerate import check_embeddings, check_scores
from fmb_engine.detect.flows import fit_flows, score_out_of_fold
from fmb_engine.detect.fusion import FUSION_COLUMNS, fuse
from fmb_engine.detect.mismatch import MISMATCH_COLUMNS, LearnedMismatch, cosine_similarity_rows, mismatch_table
from fmb_engine.detect.params import FUSION_METHODS, PARTS
from fmb_engine.detect.preprocess import Preprocessor
from fmb_engine.detect.stream import fit_sample, gather, sample_keys, streamed_scores, usable_sample
from fmb_engine.detect.tables import ANOMALY_COLUMNS, anomaly_table, rank_descending
from fmb_engine.embed.keys import family_of, modality_of, reference_key
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import DataError, FMBError
from fmb_engine.manifest import RunManifest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.publish import StagedSet
from fmb_engine.rankings import system_name
from fmb_engine.workspace import Workspace, atomic_path

#: Usable rows a flow, a baseline or the mismatch needs; with fewer that system is skipped.
MIN_ROWS = 10



def embedding_runs(ws: Workspace, models: list[str]) -> list[Path]:
    folder = ws.folder("embeddings")
    found = sorted(folder.glob("*.h5"))
    if models:
        paths = [folder / f"{m}.h5" for m in models]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            have = ", ".join(p.stem for p in found) or "none"
            raise DataError(f"no embeddings for {', '.join(p.stem for p in missing)} in {folder} (present: {have}); "
                            "run `fmb-engine embed MODEL`")
        return paths
    if not found:
        raise DataError(f"no embeddings in {folder}; run `fmb-engine embed cca` (or another model) first")
    return found


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _dropped(keep: np.ndarray, manifest: RunManifest, what: str) -> None:
    """Count the rows left out of fitting and scoring (imputed or non-finite) in the manifest."""
    if (dropped := int((~keep).sum())):
        manifest.dropped(f"{what}:invalid_or_nonfinite", dropped)


Scorer = Callable[..., np.ndarray]


def _fit_flows(xs: dict[str, np.ndarray], cfg: DetectConfig, folder: Path,
               stage: StagedSet) -> tuple[dict[str, np.ndarray], dict[str, Scorer]]:
    """Fit preprocessing + flow on each modality's fit sample; -log p of the sample rows, and a scorer of other rows.

    Each fitted preprocessing + flow is saved to ``folder/flow_<modality>.npz`` (staged with the
    run's other outputs). The modalities' flows train side by side (``n_jobs``). With
    ``out_of_fold`` the sample rows are scored by fold flows that never saw them; rows outside
    the sample are scored by the flow fitted on the whole sample, which never saw them either.
    """
    pre_kw, flow_kw = cfg.flow_params()
    for modality, x in xs.items():
        if cfg.out_of_fold >= 2 and x.shape[0] < 2 * cfg.out_of_fold:
            raise DataError(f"out_of_fold={cfg.out_of_fold} needs at least 2 rows per fold: only {x.shape[0]} "
                            f"usable {modality} rows; lower --out-of-fold")
    pres = {m: Preprocessor(**pre_kw).fit(x) for m, x in xs.items()}
    zs = {m: pres[m].transform(x) for m, x in xs.items()}
    flows = fit_flows(zs, n_jobs=cfg.flow_jobs(), **flow_kw)
    fitted, scorers = {}, {}
    for modality, x in xs.items():
        if cfg.out_of_fold >= 2:
            fitted[modality] = -score_out_of_fold(x, cfg.out_of_fold, preprocess=pre_kw, **flow_kw)  # seed: in flow_kw
        else:
            fitted[modality] = -flows[modality].score_samples(zs[modality])
        pre, flow = pres[modality], flows[modality]
        scorers[modality] = lambda v, pre=pre, flow=flow: -flow.score_samples(pre.apply(v))
        state = ({f"pre.{k}": v for k, v in pre.state_dict().items()}
                 | {f"flow.{k}": v for k, v in flow.state_dict().items()})
        with atomic_path(stage.path(folder / f"flow_{modality}.npz")) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **state)
    return fitted, scorers


def _baselines(x: np.ndarray, n_scored: int, cfg: DetectConfig) -> tuple[dict[str, np.ndarray], dict[str, Scorer], dict]:
    """IsolationForest and k-NN fitted on one modality's fit sample: the sample's scores (k-NN without
    each row itself), scorers of the other rows (k-NN against the sample as reference set) and the
    k-NN search's record (backend; for approx the index and its measured recall, :mod:`fmb_engine.analyze.ann`)."""
    from fmb_engine.analyze.ann import ApproxSettings
    from fmb_engine.analyze.similarity import choose_backend

    forest = IsolationForestDetector(seed=cfg.seed, n_estimators=cfg.iforest_trees).fit(x)
    engine, fallback = choose_backend(cfg.knn_backend, x.shape[0], n_scored, cfg.knn_approx_threshold, section="detect")
    knn = KNNDistanceDetector(k=min(cfg.knn_k, max(1, x.shape[0] - 1)), backend="approx" if engine == "approx" else "exact",
                              approx=ApproxSettings(min_recall=cfg.knn_min_recall, seed=cfg.seed),
                              exact_if_short=cfg.knn_backend == "auto").fit(x)
    fitted = {"iforest": forest.score_samples(x), "knn": knn.score_samples()}
    knn.search_report.update({"queries": n_scored} | ({"fallback": fallback} if fallback else {}))
    # the live record: the scoring of the other rows adds their measured recall to it
    return fitted, {"iforest": forest.score_samples, "knn": knn.score_samples}, knn.search_report


def _record_knn(manifest: RunManifest, searches: dict[str, dict], cfg: DetectConfig) -> None:
    """The k-NN baselines' searches in the manifest (``knn_baseline``), with a warning for a fallback or a low recall."""
    for name, search in searches.items():
        if search.get("fallback"):
            manifest.warn(f"{name} k-NN baseline: {search['fallback']}")
        recall = search.get(f"recall_at_{search['k']}")
        if recall is not None and recall < cfg.knn_min_recall:
            manifest.warn(f"{name} k-NN baseline: approximate recall@{search['k']} {recall:.3f} < {cfg.knn_min_recall} "
                          "(use detect.knn_backend exact)")
    manifest.record("knn_baseline", manifest.data.get("knn_baseline", {}) | searches)  # every model's


def _mismatch(reader: EmbeddingReader, keep: np.ndarray, sample: np.ndarray, cfg: DetectConfig,
              fit_x: dict[str, np.ndarray], fit_rows: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """(method, native score of every ``keep`` row in row order) of the cross-modal mismatch.

    Cosine (aligned embedders) needs no fit and is computed chunk by chunk. The learned map is
    fitted on the sample (each sample row scored out of fold) and scores the other rows chunk by chunk.
    """
    if reader.aligned:
        return "cosine", streamed_scores(reader, ("image", "spectrum"), keep, sample[:0], {"native": np.zeros(0)},
                                         {"native": cosine_similarity_rows}, cfg.chunk_rows)["native"]
    img, spec = (fit_x[m] if np.array_equal(fit_rows[m], sample) else gather(reader, m, sample, cfg.chunk_rows)
                 for m in ("image", "spectrum"))
    learned = LearnedMismatch(alpha=cfg.mismatch_alpha, seed=cfg.seed)
    fitted = learned.fit_score(img, spec)
    del img, spec
    return learned.method, streamed_scores(reader, ("image", "spectrum"), keep, sample, {"native": fitted},
                                           {"native": learned.score}, cfg.chunk_rows)["native"]


def _skip(manifest: RunManifest, systems: list[str], reason: str) -> None:
    """Warn about the systems a run cannot score and list them in the manifest (the CLI prints them)."""
    manifest.warn(f"skipped {', '.join(systems)}: {reason}")
    for system in systems:
        manifest.skip(system, reason)


def _too_few(n: int, what: str) -> str | None:
    """The skip reason when ``n`` usable rows are below :data:`MIN_ROWS`, else None."""
    return f"only {n} usable {what} (a system needs >= {MIN_ROWS})" if n < MIN_ROWS else None


def score_run(ws: Workspace, path: Path, cfg: DetectConfig, manifest: RunManifest, reporter: Reporter,
              flows: bool, mismatch: bool, stage: StagedSet) -> list[str]:
    """Flows (+ baselines) per modality and/or the cross-modal mismatch of one embedding run.

    Every model is fitted on a seeded sample of at most ``detect.fit_max_objects`` usable rows
    and applied to the file ``detect.chunk_rows`` rows at a time (:mod:`fmb_engine.detect.stream`),
    so memory does not grow with the number of objects beyond a few per-object vectors.
    Returns the systems scored; those with too few usable rows are skipped (:func:`_skip`).
    """
    model = path.stem
    out = ws.folder("scores")
    scored: list[str] = []
    with EmbeddingReader(path) as reader:
        meta = reader.meta
        ids = np.asarray(reader.object_ids, dtype=object)
        manifest.input(f"embeddings:{model}", path, digest=f"survey={meta.survey_digest} weights={meta.weights_digest}")
        manifest.count(f"objects:{model}", int(ids.shape[0]))
        keys = sample_keys(ids.shape[0], cfg.seed)
        keeps, samples, fit_x = {}, {}, {}
        with manifest.phase(f"sample:{model}"):  # one pass over each modality: its usable rows and fit sample
            for m in meta.modalities:
                keeps[m], samples[m], fit_x[m] = usable_sample(reader, m, keys, cfg.fit_max_objects, cfg.chunk_rows)
        manifest.count(f"fit_rows:{model}", {m: int(rows.shape[0]) for m, rows in samples.items()})
        check_embeddings(path, fit_x, {m: np.ones(x.shape[0], bool) for m, x in fit_x.items()},
                         cfg.max_duplicate_fraction, manifest, MIN_ROWS)
        family = family_of(meta.embedder)
        steps = (len(meta.modalities) * (3 if cfg.baselines else 1) if flows else 0) + int(mismatch)
        with reporter.task(f"detect {model}", steps) as task:
            if flows:
                flow_tables, baseline_tables = [], []
                methods = ("flow", "iforest", "knn") if cfg.baselines else ("flow",)
                knn_searches: dict[str, dict] = {}
                live = []
                for modality in meta.modalities:
                    _dropped(keeps[modality], manifest, f"{model}/{modality}")
                    if reason := _too_few(int(keeps[modality].sum()), f"{modality} rows"):
                        _skip(manifest, [system_name(model, modality, m) for m in methods], reason)
                        stage.remove(out / "models" / model / f"flow_{modality}.npz")
                        task.advance(len(methods))
                    else:
                        live.append(modality)
                with manifest.phase(f"flows:{model}"):
                    fitted, scorers = _fit_flows({m: fit_x[m] for m in live}, cfg, out / "models" / model, stage)
                for modality in live:
                    fit_scores, modality_scorers = {"flow": fitted[modality]}, {"flow": scorers[modality]}
                    if cfg.baselines:
                        with manifest.phase(f"baselines:{model}/{modality}"):
                            more_scores, more_scorers, knn_searches[f"{model}/{modality}"] = _baselines(
                                fit_x[modality], int(keeps[modality].sum()), cfg)
                        fit_scores |= more_scores
                        modality_scorers |= more_scorers
                    with manifest.phase(f"score:{model}/{modality}"):
                        scores = streamed_scores(reader, (modality,), keeps[modality], samples[modality], fit_scores,
                                                 modality_scorers, cfg.chunk_rows)
                    keyed, key = ids[keeps[modality]], reference_key(family, modality)
                    flow_tables.append(anomaly_table(keyed, -scores["flow"], key))
                    scored.append(system_name(model, modality, "flow"))
                    task.advance()
                    for method in methods[1:]:
                        baseline_tables.append(detector_table(keyed, scores[method], key).assign(method=method))
                        scored.append(system_name(model, modality, method))
                        task.advance()
                _write_csv(_concat(flow_tables, ANOMALY_COLUMNS), stage.path(out / f"anomaly_scores_{model}.csv"))
                if cfg.baselines:
                    _write_csv(_concat(baseline_tables, (*ANOMALY_COLUMNS, "method")),
                               stage.path(out / f"baseline_scores_{model}.csv"))
                    _record_knn(manifest, knn_searches, cfg)
            if mismatch:
                if not {"image", "spectrum"} <= set(meta.modalities):
                    manifest.warn(f"{model}: no image and spectrum vectors, no mismatch")
                    return scored
                _dropped(keeps["image"], manifest, f"{model}/mismatch:image")
                _dropped(keeps["spectrum"], manifest, f"{model}/mismatch:spectrum")
                keep = keeps["image"] & keeps["spectrum"]
                if reason := _too_few(int(keep.sum()), "objects with both image and spectrum rows"):
                    _skip(manifest, [system_name(model, "cross", "mismatch")], reason)
                    table = pd.DataFrame(columns=list(MISMATCH_COLUMNS))
                else:
                    with manifest.phase(f"mismatch:{model}"):
                        method, native = _mismatch(reader, keep, fit_sample(keep, keys, cfg.fit_max_objects), cfg,
                                                   fit_x, samples)
                    table = mismatch_table(ids[keep], native, method).sort_values("rank")
                    manifest.count(f"mismatch_method:{model}", method)
                    scored.append(system_name(model, "cross", "mismatch"))
                _write_csv(table, stage.path(out / f"cosine_scores_{model}.csv"))
                task.advance()
    return scored


def _concat(tables: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """The tables one under the other; a header-only table when every system was skipped."""
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(columns))


def _modalities(keys: pd.Series) -> pd.Series:
    """The modality of each row's embedding key, looked up once per distinct key (millions of rows, a few keys)."""
    return keys.map({key: modality_of(key) for key in keys.unique()})


def _read(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: run `fmb-engine detect {what}` first")
    return pd.read_csv(path, dtype={"object_id": str})


def fuse_run(ws: Workspace, model: str, cfg: DetectConfig, manifest: RunManifest, stage: StagedSet) -> pd.DataFrame | None:
    """Fuse image flow, spectrum flow and mismatch ranks of one run (reads their tables).

    The modality of each table row comes from the key table of ``embed.keys``
    (AION's joint key is joint, not image: reference bug L1); p = (N - rank + 1) / N
    re-ranked within the objects all three systems scored (bug L2). Fusion needs
    all three: when one was skipped (or the run has one modality) the model's
    fusion is skipped too (None) and its stale top-k tables are removed.
    """
    out = ws.folder("scores")
    ranked_path = out / "multimodal" / "ranked" / f"top{cfg.top_k}_{model}_{cfg.fusion}.csv"
    filtered_path = out / "multimodal" / "filtered" / f"top{cfg.top_k}_{model}_{cfg.fusion}_filtered.csv"
    flows = _read(stage.read_path(out / f"anomaly_scores_{model}.csv"), "flows")
    flows["modality"] = _modalities(flows["embedding_key"])
    img = flows[flows["modality"] == "image"].set_index("object_id")["neg_log_prob"]
    spec = flows[flows["modality"] == "spectrum"].set_index("object_id")["neg_log_prob"]
    mis_s = pd.Series(dtype=float)
    if len(img) and len(spec):
        mis_s = _read(stage.read_path(out / f"cosine_scores_{model}.csv"), "mismatch").set_index("object_id")["mismatch_score"]
    if missing := [name for name, series in (("image flow", img), ("spectrum flow", spec), ("mismatch", mis_s))
                   if not len(series)]:
        _skip(manifest, [system_name(model, "fused", m) for m in FUSION_METHODS],
              f"fusion needs image flow, spectrum flow and mismatch scores; no {', no '.join(missing)} scores")
        stage.remove(ranked_path)
        stage.remove(filtered_path)
        return None
    joined = pd.concat({"img": img, "spec": spec, "mis": mis_s}, axis=1, join="inner")
    for name, series in (("image", img), ("spectrum", spec), ("mismatch", mis_s)):
        if (lost := len(series) - len(joined)):
            manifest.dropped(f"{model}/fuse:not_in_all_three:{name}", lost)
    ranks = [rank_descending(joined[c].to_numpy()) for c in ("img", "spec", "mis")]
    n = len(joined)
    fused = fuse(joined.index.to_numpy(), *ranks, n, n, n, method=cfg.fusion,
                 thresholds={"img": cfg.t_img, "spec": cfg.t_spec, "mis": cfg.t_mis})
    fused.insert(1, "model", model)
    ranked = fused.sort_values("rank_fused", kind="stable").head(cfg.top_k)
    _write_csv(ranked, stage.path(ranked_path))
    filtered = fused[fused["passes_thresholds"]].sort_values("rank_fused", kind="stable").head(cfg.top_k)
    if filtered.empty:
        manifest.warn(f"{model}: no object passes t_img={cfg.t_img}, t_spec={cfg.t_spec}, t_mis={cfg.t_mis}")
    _write_csv(filtered, stage.path(filtered_path))
    return fused


def score_tables(ws: Workspace, model: str) -> list[Path]:
    """The published score tables the systems of ``model`` are read from."""
    out = ws.folder("scores")
    return [out / f"anomaly_scores_{model}.csv", out / f"baseline_scores_{model}.csv", out / f"cosine_scores_{model}.csv",
            out / "multimodal" / "all_scores.csv"]


def system_scores(ws: Workspace, model: str, stage: StagedSet) -> dict[str, pd.Series]:
    """Every system of one run that has a table: name -> score per object_id (higher = more anomalous).

    Reads this run's staged tables where it wrote one, the published ones otherwise."""
    anomaly, baseline, cosine, fused_path = score_tables(ws, model)
    found: dict[str, pd.Series] = {}
    for path, method_col, score_col in ((anomaly, None, "neg_log_prob"), (baseline, "method", "neg_log_prob")):
        if stage.exists(path):
            table = pd.read_csv(stage.read_path(path), dtype={"object_id": str})
            table["modality"] = _modalities(table["embedding_key"])
            for (modality, method), part in table.groupby(["modality", method_col or "modality"], sort=False):
                found[system_name(model, modality, method if method_col else "flow")] = part.set_index("object_id")[score_col]
    if stage.exists(cosine):
        mismatch = pd.read_csv(stage.read_path(cosine), dtype={"object_id": str})
        if len(mismatch):  # header only: the mismatch was skipped
            found[system_name(model, "cross", "mismatch")] = mismatch.set_index("object_id")["mismatch_score"]
    if stage.exists(fused_path):
        fused = pd.read_csv(stage.read_path(fused_path), dtype={"object_id": str})
        fused = fused[fused["model"] == model].set_index("object_id")
        for method in FUSION_METHODS:
            if len(fused):
                found[system_name(model, "fused", method)] = fused[f"score_mm_{method}"]
    return found


def build_systems_table(ws: Workspace, models: list[str], stage: StagedSet) -> pd.DataFrame:
    """One row per object; ``rank:<system>`` (1 = most anomalous, nullable) and ``score:<system>``."""
    columns: dict[str, pd.Series] = {}
    for model in models:
        for name, score in system_scores(ws, model, stage).items():
            columns[f"score:{name}"] = score.astype(float)
            columns[f"rank:{name}"] = pd.Series(rank_descending(score.to_numpy()), index=score.index, dtype="Int64")
    if not columns:
        raise DataError(f"no score tables in {ws.folder('scores')}: run `fmb-engine detect all`")
    table = pd.concat(columns, axis=1, join="outer")
    table.index.name = "object_id"
    names = sorted({c.split(":", 1)[1] for c in table.columns})
    ordered = [f"{kind}:{n}" for n in names for kind in ("rank", "score")]
    return table[ordered].reset_index()


def scored_models(ws: Workspace) -> set[str]:
    """Embedding runs that have score tables in ``scores/`` (from this or any earlier detect run)."""
    out = ws.folder("scores")
    return {p.stem[len(prefix):] for prefix in ("anomaly_scores_", "baseline_scores_", "cosine_scores_")
            for p in out.glob(f"{prefix}*.csv")}


def _previous_systems(ws: Workspace) -> tuple[dict[str, dict], dict[str, str]]:
    """The published systems table's provenance runs and recorded inputs ({} without one)."""
    import pyarrow.parquet as pq

    from fmb_engine import rankings

    path = rankings.systems_path(ws)
    try:
        meta = pq.read_schema(path).metadata if path.is_file() else None
        prov = rankings.provenance_of(meta, path)
    except Exception:  # noqa: BLE001 - an unreadable table is rebuilt from the score tables
        return {}, {}
    return (prov.runs if prov else {}), (lineage.systems_record(meta) or {})


def systems_runs(ws: Workspace, models: list[str], manifest: RunManifest,
                 survey: Path | None = None) -> tuple[dict[str, dict], dict[str, str], dict[str, str]]:
    """Which embedding runs the systems table holds, and which detect run scored each.

    Rule (docs/formats.md): the runs this detect run scored, plus every other run that still
    has score tables *and* its embedding store, made from that same store and survey: a
    detect run over fewer runs keeps the others' systems (with their older provenance)
    instead of dropping them. Runs whose embeddings were removed, recomputed or made from
    another survey since they were scored, or that cannot be scored with this run's (a
    survey-free synthetic run beside a survey's, :func:`lineage.check_embeddings`), are dropped
    from the table (named in the manifest).
    Returns (model -> {"run_id", "started"}, dropped model -> why, kept model -> the identity
    of the embedding file its scores were made from).
    """
    previous, recorded = _previous_systems(ws)
    embedded = {p.stem for p in ws.folder("embeddings").glob("*.h5")}
    others = sorted(scored_models(ws) - set(models))
    now = {"run_id": manifest.run_id, "started": manifest.started_at}
    runs = {m: dict(now) for m in models}
    dropped: dict[str, str] = {}
    kept: dict[str, str] = {}
    for model in others:
        key = f"embeddings/{model}.h5"
        if model not in embedded:
            dropped[model] = f"{key} no longer exists"
            continue
        current = lineage.identity(ws, key)
        if recorded.get(key) and recorded[key] != current:
            dropped[model] = f"{key} was recomputed after its scores were made; rerun `fmb-engine detect all -m {model}`"
            continue
        try:
            lineage.check_embeddings(ws, [ws.folder("embeddings") / f"{m}.h5" for m in models] + [ws.root / key], survey)
        except FMBError as exc:
            dropped[model] = str(exc)
            continue
        kept[model] = current or ""
        newest = max(p.stat().st_mtime for p in ws.folder("scores").glob(f"*_scores_{model}.csv"))
        runs[model] = previous.get(model) or {"run_id": None, "started": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(newest))}
    return runs, dropped, kept


def systems_inputs(ws: Workspace, stage: StagedSet, models: list[str], embeddings: dict[str, str],
                   survey: Path | None) -> dict[str, str]:
    """The record of what the systems table is built from: survey, embedding files, score tables, fitted flows."""
    inputs = {f"embeddings/{m}.h5": embeddings[m] for m in models if embeddings.get(m)}
    if survey is not None:
        inputs[lineage.SURVEY] = lineage.survey_digest(survey)
    for model in models:
        fitted = ws.folder("scores") / "models" / model  # the flows that scored the tables belong to the set
        flows = set(fitted.glob("flow_*.npz")) | {p for p in stage.written if p.parent == fitted}
        for path in [*score_tables(ws, model), *sorted(flows)]:
            if stage.exists(path):
                inputs[lineage.key_of(ws, path)] = lineage.file_digest(stage.read_path(path))
    return inputs


def write_systems_table(ws: Workspace, stage: StagedSet, table: pd.DataFrame, runs: dict[str, dict],
                        scored: list[str], dropped: list[str], inputs: dict[str, str]) -> Path:
    """systems.parquet (staged) with the provenance of its systems and its inputs in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fmb_engine.rankings import PROVENANCE_KEY, systems_path

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    record = json.dumps({"runs": runs, "scored": scored, "dropped": dropped}, sort_keys=True)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PROVENANCE_KEY: record.encode(),
                                           lineage.SYSTEMS_KEY: json.dumps({"inputs": inputs}, sort_keys=True).encode()})
    out = systems_path(ws)
    with atomic_path(stage.path(out)) as tmp:
        pq.write_table(arrow, tmp)
    return out


def _merge_fused(path: Path, fused: list[pd.DataFrame], models: list[str]) -> pd.DataFrame:
    """This run's fused scores plus the earlier rows of the runs it did not fuse (kept, like their systems)."""
    new = _concat(fused, ("object_id", "model", *FUSION_COLUMNS[1:]))
    if path.is_file():  # the published table: this run has not written its own yet
        old = pd.read_csv(path, dtype={"object_id": str})
        if "model" in old.columns:
            new = pd.concat([old[~old["model"].isin(models)], new], ignore_index=True)
    return new


def detect(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None, parts: tuple[str, ...] = PARTS,
           survey: Path | None = None) -> Any:
    """Run the chosen parts for every embedding run, then rebuild ``scores/systems.parquet``.

    ``survey`` (default: the workspace's active survey) is what the embeddings must have been
    made from (StaleError otherwise). Every output is staged and published as one set when the
    run succeeds, systems.parquet last (:mod:`fmb_engine.publish`); one detect run at a time
    writes ``scores/`` (BusyError otherwise).
    """
    from fmb_engine.rankings import systems_path
    from fmb_engine.stage_run import StageResult, config_record, stage_run

    cfg: DetectConfig = resolved.values  # type: ignore[assignment]
    reporter = reporter or Silent()
    scores_dir = ws.folder("scores")
    with locks.hold(scores_dir, "the detect outputs in scores/"), \
            stage_run(ws, "detect." + "+".join(parts), config_record(resolved), seed=cfg.seed) as manifest:
        if left := publish.clean(scores_dir):
            reporter.log(f"removed {len(left)} unpublished output set(s) of interrupted detect runs")
        survey = Path(survey) if survey is not None else lineage.active_survey(ws)
        runs = embedding_runs(ws, cfg.models)
        lineage.check_embeddings(ws, runs, survey)
        if lineage.is_survey_free(runs[0]):  # then all are (check_embeddings refuses a mix): no survey to check
            survey = None
            manifest.record("survey_free", True)
            reporter.log("survey-free runs (synthetic embeddings): no survey is read or checked")
        models = [p.stem for p in runs]
        identities = {p.stem: lineage.embedding_identity(p) for p in runs}
        scored: list[str] = []
        with StagedSet(scores_dir, manifest.run_id) as stage:
            if "flows" in parts or "mismatch" in parts:
                for path in runs:
                    scored += score_run(ws, path, cfg, manifest, reporter, flows="flows" in parts,
                                        mismatch="mismatch" in parts, stage=stage)
            if "fuse" in parts:
                with manifest.phase("fuse"):
                    fused = {m: fuse_run(ws, m, cfg, manifest, stage) for m in models}
                fused = {m: table for m, table in fused.items() if table is not None}
                scored += [system_name(m, "fused", method) for m in fused for method in FUSION_METHODS]
                all_scores = scores_dir / "multimodal" / "all_scores.csv"
                _write_csv(_merge_fused(all_scores, list(fused.values()), models), stage.path(all_scores))
            skipped = manifest.skipped
            if not scored:
                reasons = "; ".join(f"{s['system']}: {s['reason']}" for s in skipped)
                raise DataError(f"no system could be scored: {reasons or 'nothing to score'}. "
                                "See docs/science.md (detection)")
            with manifest.phase("systems"):
                sruns, dropped, kept = systems_runs(ws, models, manifest, survey)
                table = build_systems_table(ws, list(sruns), stage)
                inputs = systems_inputs(ws, stage, list(sruns), identities | kept, survey)
                out = write_systems_table(ws, stage, table, sruns, models, list(dropped), inputs)
            stage.publish(last=(systems_path(ws),))
        systems = sorted(c.split(":", 1)[1] for c in table.columns if c.startswith("rank:"))
        check_scores({s: table[f"score:{s}"] for s in scored if f"score:{s}" in table.columns}, manifest)
        manifest.count("systems", systems)
        manifest.count("systems_runs", {m: "scored now" if m in models else f"kept from {r['run_id'] or r['started']}"
                                        for m, r in sruns.items()})
        for model, why in dropped.items():
            manifest.warn(f"systems of {model} dropped from systems.parquet: {why}")
        manifest.output("systems", out)
        manifest.output("scores", scores_dir)
    return StageResult({"systems": out, "scores": scores_dir}, manifest.path,
                       {"systems": systems, "objects": len(table), "skipped": skipped, "warnings": manifest.warnings})
