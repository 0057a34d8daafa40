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

The fitting and scoring go through a score source (:class:`InProcess` here; a sharded run's
merge reads what its jobs computed with the same functions, :mod:`fmb_engine.detect.shards`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmb_engine import lineage, locks, publish
from fmb_engine.config import Resolved
from fmb_engine.csv_tables import write_csv
from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector, detector_table
from fmb_engine.detect.config import DetectConfig
from fmb_engine.detect.degenerate import check_embeddings, check_scores
from fmb_engine.detect.flows import fit_flows, score_out_of_fold
from fmb_engine.detect.fusion import FUSION_COLUMNS, fuse
from fmb_engine.detect.mismatch import MISMATCH_COLUMNS, LearnedMismatch, cosine_similarity_rows, mismatch_table
from fmb_engine.detect.params import FUSION_METHODS, PARTS
from fmb_engine.detect.preprocess import Preprocessor
from fmb_engine.detect.stream import Scorers, fit_sample, gather, sample_keys, streamed_scores, usable_sample
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


def _dropped(keep: np.ndarray, manifest: RunManifest, what: str) -> None:
    """Count the rows left out of fitting and scoring (imputed or non-finite) in the manifest."""
    if (dropped := int((~keep).sum())):
        manifest.dropped(f"{what}:invalid_or_nonfinite", dropped)


Scorer = Callable[..., np.ndarray]


@dataclass
class RowPlan:
    """Which rows of one embedding file a detect run uses: per modality the usable rows (mask),
    the fit sample (increasing positions) and the sample's vectors."""

    keeps: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]
    fit_x: dict[str, np.ndarray]


@dataclass
class Scored:
    """One fitted system group's scores: the fit sample's (``fit``) and the other usable rows' (``rest``,
    in row order), by method; :meth:`full` puts them together in the order of the usable rows."""

    fit: dict[str, np.ndarray]
    rest: dict[str, np.ndarray]

    def full(self, keep: np.ndarray, sample: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.flatnonzero(keep)
        in_sample = np.isin(rows, sample, assume_unique=True)
        out = {}
        for name, fit in self.fit.items():
            values = np.empty(rows.shape[0], dtype=np.float64)
            values[in_sample] = fit
            values[~in_sample] = self.rest[name]
            out[name] = values
        return out


def plan_rows(reader: EmbeddingReader, modalities: list[str] | tuple[str, ...], cfg: DetectConfig) -> RowPlan:
    """Usable rows, seeded fit sample and its vectors of ``modalities`` (one pass over each modality)."""
    keys = sample_keys(reader.n_objects, cfg.seed)
    keeps, samples, fit_x = {}, {}, {}
    for m in modalities:
        keeps[m], samples[m], fit_x[m] = usable_sample(reader, m, keys, cfg.fit_max_objects, cfg.chunk_rows)
    return RowPlan(keeps, samples, fit_x)


def mismatch_rows(keeps: dict[str, np.ndarray], cfg: DetectConfig) -> tuple[np.ndarray, np.ndarray]:
    """(objects usable in both image and spectrum, the mismatch's fit sample among them)."""
    keep = keeps["image"] & keeps["spectrum"]
    return keep, fit_sample(keep, sample_keys(keep.shape[0], cfg.seed), cfg.fit_max_objects)


def flow_state(pre: Preprocessor, flow: Any) -> dict[str, np.ndarray]:
    """The arrays of ``models/<model>/flow_<modality>.npz``: fitted preprocessing and flow."""
    return {f"pre.{k}": v for k, v in pre.state_dict().items()} | {f"flow.{k}": v for k, v in flow.state_dict().items()}


def save_state(state: dict[str, np.ndarray], path: Path) -> Path:
    """``state`` as an .npz file, written atomically (read back with ``allow_pickle=False``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **state)
    return path


def fit_modalities(xs: dict[str, np.ndarray], cfg: DetectConfig, side_by_side: int | None = None,
                   n_scored: dict[str, int] | None = None
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Scorers], dict[str, dict], dict[str, dict]]:
    """Fit preprocessing + flow (and the baselines) on each modality's fit sample.

    Returns per modality the sample rows' scores by method (higher = more anomalous), the
    scorers of other rows (:func:`_scorers`: the flow and the baselines share the chunk's
    preprocessing), the flow's state (:func:`flow_state`) and the k-NN baseline's search record
    (:func:`_baselines`; ``n_scored`` is each modality's usable rows). The baselines are fitted
    on the sample as the flow sees it, preprocessed. The modalities' flows
    train side by side (``n_jobs``). ``side_by_side`` is how many modalities the one-node run
    fits together (default: those in ``xs``): a sharded fit job fits one modality with the
    thread count the one-node run would use, so both give the same bits. With ``out_of_fold``
    the sample rows are scored by fold flows that never saw them; rows outside the sample are
    scored by the flow fitted on the whole sample, which never saw them either.
    """
    pre_kw, flow_kw = cfg.flow_params()
    jobs = cfg.flow_jobs()
    if flow_kw.get("threads") is None and jobs > 1 and (side_by_side or len(xs)) > 1:
        flow_kw["threads"] = 1  # what fit_flows gives each worker
    for modality, x in xs.items():
        if cfg.out_of_fold >= 2 and x.shape[0] < 2 * cfg.out_of_fold:
            raise DataError(f"out_of_fold={cfg.out_of_fold} needs at least 2 rows per fold: only {x.shape[0]} "
                            f"usable {modality} rows; lower --out-of-fold")
    pres = {m: Preprocessor(**pre_kw).fit(x) for m, x in xs.items()}
    zs = {m: pres[m].transform(x) for m, x in xs.items()}
    flows = fit_flows(zs, n_jobs=jobs, **flow_kw)
    fitted, scorers, states, searches = {}, {}, {}, {}
    for modality, x in xs.items():
        if cfg.out_of_fold >= 2:
            fit = -score_out_of_fold(x, cfg.out_of_fold, preprocess=pre_kw, **flow_kw)  # seed: in flow_kw
        else:
            fit = -flows[modality].score_samples(zs[modality])
        states[modality] = flow_state(pres[modality], flows[modality])
        fitted[modality] = {"flow": fit}
        baselines: dict[str, Scorer] = {}
        if cfg.baselines:
            more_fit, baselines, searches[modality] = _baselines(zs[modality], (n_scored or {}).get(modality, x.shape[0]),
                                                                 cfg)
            fitted[modality] |= more_fit
        scorers[modality] = _scorers(pres[modality], flows[modality], baselines)
    return fitted, scorers, states, searches


def _scorers(pre: Preprocessor, flow: Any, baselines: dict[str, Scorer]) -> Scorers:
    """The scorers of a modality's other rows: each chunk preprocessed once (:func:`_mapper`), then
    the flow's ``-log p`` and the baselines (:func:`_baselines`) of that one preprocessed chunk.

    With the flow on a GPU and no baseline to share the mapped chunk, the map runs on the GPU
    too, batch by batch (:meth:`Preprocessor.device_map`): only raw rows cross the bus, and the
    map's product no longer bounds the scoring on one CPU thread (docs/benchmarks.md, "Scoring
    throughput"). With baselines the chunk is mapped on the CPU once, for all of them.
    """
    if flow.device_.type != "cpu" and not baselines:
        before = pre.device_map(flow.device_)
        return Scorers({"flow": lambda v: -flow.score_samples(v, before=before)})
    return Scorers({"flow": lambda z: -flow.score_samples(z)} | baselines, prepare=_mapper(pre, flow.threads))


def _mapper(pre: Preprocessor, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """:meth:`Preprocessor.apply`, its BLAS product on ``threads`` threads (``detect.threads``, default 1).

    Why: :func:`~fmb_engine.detect.stream.streamed_scores` reads the next chunk on another core
    meanwhile, and a second BLAS thread only fought that reader (and other processes) for it --
    1.4-1.7x slower on the 2-core machine (docs/benchmarks.md, "Scoring throughput"). The result
    is the same bits: BLAS splits a product by rows and columns among its threads, never along
    the summed dimension.
    """
    if threads is None:
        return pre.apply
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")

    def apply(v: np.ndarray) -> np.ndarray:
        with blas.limit(limits=threads):
            return pre.apply(v)

    return apply


def _baselines(z: np.ndarray, n_scored: int, cfg: DetectConfig) -> tuple[dict[str, np.ndarray], dict[str, Scorer], dict]:
    """IsolationForest and k-NN fitted on one modality's preprocessed fit sample ``z`` (what the flow
    is trained on): the sample's scores (k-NN without each row itself), scorers of other preprocessed
    rows (k-NN against the sample as reference set) and the k-NN search's record (backend and engine;
    for approx the index and its measured recall, :mod:`fmb_engine.analyze.ann`).

    ``auto`` searches approximately when the reference set has at least ``knn_approx_threshold``
    rows and faiss is installed (the choice of a self-query of the reference set): per query, exact
    search costs in proportion to the reference rows and the index's saving grows with them, while
    the number of scored rows scales both alike. Exact search is faiss's when installed, else torch's."""
    from fmb_engine.analyze.ann import ApproxSettings
    from fmb_engine.analyze.similarity import choose_backend

    forest = IsolationForestDetector(seed=cfg.seed, n_estimators=cfg.iforest_trees).fit(z)
    engine, fallback = choose_backend(cfg.knn_backend, z.shape[0], z.shape[0], cfg.knn_approx_threshold, section="detect")
    knn = KNNDistanceDetector(k=min(cfg.knn_k, max(1, z.shape[0] - 1)), backend="approx" if engine == "approx" else "exact",
                              engine="auto" if engine == "approx" else engine, threads=cfg.threads or None,
                              approx=ApproxSettings(min_recall=cfg.knn_min_recall, seed=cfg.seed),
                              exact_if_short=cfg.knn_backend == "auto").fit(z)
    fitted = {"iforest": forest.score_samples(z), "knn": knn.score_samples()}
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


def modality_scorers(state: dict[str, np.ndarray], x: np.ndarray, cfg: DetectConfig, n_scored: int) -> Scorers:
    """Scorers of a modality rebuilt from a saved :func:`flow_state` and the fit sample ``x``.

    The flow and its preprocessing come back from their arrays. The baselines are refitted on
    ``x`` preprocessed by the restored preprocessing (the same arrays, so the same bits as the
    fit's): the k-NN reference set *is* the sample, and the IsolationForest is rebuilt with the
    same seed on the same rows, which gives the same trees (scikit-learn cannot save a forest
    without pickle, which FMB never uses for its files); the k-NN search is chosen as in the fit
    (the same reference rows), an approximate index is rebuilt from the same rows and seed, and
    ``n_scored`` (the modality's usable rows) goes into its record as in the fit.
    """
    _, flow_kw = cfg.flow_params()
    pre, flow = restore_flow(state, device=flow_kw["device"], threads=flow_kw["threads"])
    return _scorers(pre, flow, _baselines(pre.transform(x), n_scored, cfg)[1] if cfg.baselines else {})


def restore_flow(state: dict[str, np.ndarray], device: str = "cpu", threads: int | None = 1) -> tuple[Preprocessor, Any]:
    """The preprocessing and flow of a saved :func:`flow_state` (``models/<model>/flow_<modality>.npz``)."""
    from fmb_engine.detect.flows import FlowDensity

    pre = Preprocessor.from_state_dict({k[4:]: v for k, v in state.items() if k.startswith("pre.")})
    flow = FlowDensity.from_state_dict({k[5:]: v for k, v in state.items() if k.startswith("flow.")},
                                       device=device, threads=threads)
    return pre, flow


def fit_mismatch(reader: EmbeddingReader, sample: np.ndarray, cfg: DetectConfig, plan: RowPlan
                 ) -> tuple[str, dict[str, np.ndarray], Scorers, dict[str, np.ndarray]]:
    """(method, the sample's native scores, scorer of other rows, fitted state) of the cross-modal mismatch.

    Cosine (aligned embedders) needs no fit: no sample, every row is scored chunk by chunk.
    The learned map is fitted on the sample (each sample row scored out of fold).
    """
    if reader.aligned:
        return "cosine", {"native": np.zeros(0)}, Scorers({"native": cosine_similarity_rows}), {}
    img, spec = (plan.fit_x[m] if np.array_equal(plan.samples[m], sample) else gather(reader, m, sample, cfg.chunk_rows)
                 for m in ("image", "spectrum"))
    learned = LearnedMismatch(alpha=cfg.mismatch_alpha, seed=cfg.seed)
    fitted = learned.fit_score(img, spec)
    return learned.method, {"native": fitted}, Scorers({"native": learned.score}), learned.state_dict()


def mismatch_scorer(method: str, state: dict[str, np.ndarray]) -> Scorers:
    """The scorer :func:`fit_mismatch` returned, rebuilt from its method and saved state."""
    if method == "cosine":
        return Scorers({"native": cosine_similarity_rows})
    return Scorers({"native": LearnedMismatch.from_state_dict(state).score})


def score_rows(reader: EmbeddingReader, modalities: tuple[str, ...], keep: np.ndarray, sample: np.ndarray,
               scorers: Scorers, chunk_rows: int, start: int = 0, stop: int | None = None
               ) -> dict[str, np.ndarray]:
    """Scores of the usable rows outside the fit sample within rows ``[start, stop)``, in row order.

    The file is read ``chunk_rows`` rows at a time from row 0, so a range that starts and
    stops on chunk boundaries (:func:`fmb_engine.detect.shards.shard_ranges`) scores each row
    in exactly the batch the whole-file pass uses: the same bits, whatever the ranges.
    """
    stop = keep.shape[0] if stop is None else stop
    todo = np.zeros_like(keep)
    todo[start:stop] = keep[start:stop]
    todo[sample] = False
    return streamed_scores(reader, modalities, todo, scorers, chunk_rows)


class InProcess:
    """Fits and scores every system of a run in this process (the one-node ``detect``).

    A sharded run (:mod:`fmb_engine.detect.shards`) gets the same results from its jobs'
    files instead; :func:`score_run` turns either into the same tables.
    """

    def __init__(self, cfg: DetectConfig, manifest: RunManifest):
        self.cfg, self.manifest = cfg, manifest

    def plan(self, reader: EmbeddingReader, model: str) -> RowPlan:
        return plan_rows(reader, reader.meta.modalities, self.cfg)

    def flows(self, reader: EmbeddingReader, model: str, plan: RowPlan, live: list[str]
              ) -> tuple[dict[str, Scored], dict[str, dict[str, np.ndarray]]]:
        from fmb_engine.devices import resolve_device

        self.manifest.record("device", resolve_device(self.cfg.device))  # GPU and CPU scores differ in the last bits
        with self.manifest.phase(f"flows:{model}"):
            fitted, scorers, states, searches = fit_modalities(
                {m: plan.fit_x[m] for m in live}, self.cfg, n_scored={m: int(plan.keeps[m].sum()) for m in live})
        scored = {}
        for modality in live:
            with self.manifest.phase(f"score:{model}/{modality}"):
                rest = score_rows(reader, (modality,), plan.keeps[modality], plan.samples[modality],
                                  scorers[modality], self.cfg.chunk_rows)
            scored[modality] = Scored(fitted[modality], rest)
        if searches:  # after scoring: the approximate searches have measured their recall on the scored rows
            _record_knn(self.manifest, {f"{model}/{m}": search for m, search in searches.items()}, self.cfg)
        return scored, states

    def mismatch(self, reader: EmbeddingReader, model: str, plan: RowPlan, keep: np.ndarray, sample: np.ndarray
                 ) -> tuple[str, Scored, np.ndarray]:
        method, fit, scorers, _ = fit_mismatch(reader, sample, self.cfg, plan)
        if method == "cosine":
            sample = sample[:0]
        rest = score_rows(reader, ("image", "spectrum"), keep, sample, scorers, self.cfg.chunk_rows)
        return method, Scored(fit, rest), sample


def _skip(manifest: RunManifest, systems: list[str], reason: str) -> None:
    """Warn about the systems a run cannot score and list them in the manifest (the CLI prints them)."""
    manifest.warn(f"skipped {', '.join(systems)}: {reason}")
    for system in systems:
        manifest.skip(system, reason)


def _too_few(n: int, what: str) -> str | None:
    """The skip reason when ``n`` usable rows are below :data:`MIN_ROWS`, else None."""
    return f"only {n} usable {what} (a system needs >= {MIN_ROWS})" if n < MIN_ROWS else None


def live_modalities(keeps: dict[str, np.ndarray]) -> list[str]:
    """The modalities with enough usable rows to be fitted and scored."""
    return [m for m, keep in keeps.items() if _too_few(int(keep.sum()), "rows") is None]


def score_run(ws: Workspace, path: Path, cfg: DetectConfig, manifest: RunManifest, reporter: Reporter,
              flows: bool, mismatch: bool, stage: StagedSet, source: Any = None) -> list[str]:
    """Flows (+ baselines) per modality and/or the cross-modal mismatch of one embedding run.

    Every model is fitted on a seeded sample of at most ``detect.fit_max_objects`` usable rows
    and applied to the file ``detect.chunk_rows`` rows at a time (:mod:`fmb_engine.detect.stream`),
    so memory does not grow with the number of objects beyond a few per-object vectors.
    ``source`` fits and scores (:class:`InProcess` by default; a sharded run's merge reads what
    its jobs wrote). Returns the systems scored; those with too few usable rows are skipped (:func:`_skip`).
    """
    source = source or InProcess(cfg, manifest)
    model = path.stem
    out = ws.folder("scores")
    scored: list[str] = []
    with EmbeddingReader(path) as reader:
        meta = reader.meta
        ids = np.asarray(reader.object_ids, dtype=object)
        manifest.input(f"embeddings:{model}", path, digest=f"survey={meta.survey_digest} weights={meta.weights_digest}")
        manifest.count(f"objects:{model}", int(ids.shape[0]))
        with manifest.phase(f"sample:{model}"):  # one pass over each modality: its usable rows and fit sample
            plan = source.plan(reader, model)
        keeps, samples, fit_x = plan.keeps, plan.samples, plan.fit_x
        manifest.count(f"fit_rows:{model}", {m: int(rows.shape[0]) for m, rows in samples.items()})
        check_embeddings(path, fit_x, {m: np.ones(x.shape[0], bool) for m, x in fit_x.items()},
                         cfg.max_duplicate_fraction, manifest, MIN_ROWS)
        family = family_of(meta.embedder)
        steps = (len(meta.modalities) * (3 if cfg.baselines else 1) if flows else 0) + int(mismatch)
        with reporter.task(f"detect {model}", steps) as task:
            if flows:
                flow_tables, baseline_tables = [], []
                methods = ("flow", "iforest", "knn") if cfg.baselines else ("flow",)
                live = live_modalities({m: keeps[m] for m in meta.modalities})
                for modality in meta.modalities:
                    _dropped(keeps[modality], manifest, f"{model}/{modality}")
                    if modality not in live:
                        reason = _too_few(int(keeps[modality].sum()), f"{modality} rows")
                        _skip(manifest, [system_name(model, modality, m) for m in methods], reason or "")
                        stage.remove(out / "models" / model / f"flow_{modality}.npz")
                        task.advance(len(methods))
                modality_scores, states = source.flows(reader, model, plan, live)
                for modality in live:
                    save_state(states[modality], stage.path(out / "models" / model / f"flow_{modality}.npz"))
                    scores = modality_scores[modality].full(keeps[modality], samples[modality])
                    keyed, key = ids[keeps[modality]], reference_key(family, modality)
                    flow_tables.append(anomaly_table(keyed, -scores["flow"], key))
                    scored.append(system_name(model, modality, "flow"))
                    task.advance()
                    for method in methods[1:]:
                        baseline_tables.append(detector_table(keyed, scores[method], key).assign(method=method))
                        scored.append(system_name(model, modality, method))
                        task.advance()
                write_csv(_concat(flow_tables, ANOMALY_COLUMNS), stage.path(out / f"anomaly_scores_{model}.csv"))
                if cfg.baselines:
                    write_csv(_concat(baseline_tables, (*ANOMALY_COLUMNS, "method")),
                              stage.path(out / f"baseline_scores_{model}.csv"))
            if mismatch:
                if not {"image", "spectrum"} <= set(meta.modalities):
                    manifest.warn(f"{model}: no image and spectrum vectors, no mismatch")
                    return scored
                _dropped(keeps["image"], manifest, f"{model}/mismatch:image")
                _dropped(keeps["spectrum"], manifest, f"{model}/mismatch:spectrum")
                keep, sample = mismatch_rows(keeps, cfg)
                if reason := _too_few(int(keep.sum()), "objects with both image and spectrum rows"):
                    _skip(manifest, [system_name(model, "cross", "mismatch")], reason)
                    table = pd.DataFrame(columns=list(MISMATCH_COLUMNS))
                else:
                    with manifest.phase(f"mismatch:{model}"):
                        method, result, sample = source.mismatch(reader, model, plan, keep, sample)
                    native = result.full(keep, sample)["native"]
                    table = mismatch_table(ids[keep], native, method).sort_values("rank")
                    manifest.count(f"mismatch_method:{model}", method)
                    scored.append(system_name(model, "cross", "mismatch"))
                write_csv(table, stage.path(out / f"cosine_scores_{model}.csv"))
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
    write_csv(ranked, stage.path(ranked_path))
    filtered = fused[fused["passes_thresholds"]].sort_values("rank_fused", kind="stable").head(cfg.top_k)
    if filtered.empty:
        manifest.warn(f"{model}: no object passes t_img={cfg.t_img}, t_spec={cfg.t_spec}, t_mis={cfg.t_mis}")
    write_csv(filtered, stage.path(filtered_path))
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
                   survey: Path | None) -> tuple[dict[str, str], dict[str, list[int]]]:
    """The record of what the systems table is built from: survey, embedding files, score tables, fitted
    flows; and the files' stamps (:func:`lineage.hashed`: a staged file keeps its size and mtime when
    it is published)."""
    inputs = {f"embeddings/{m}.h5": embeddings[m] for m in models if embeddings.get(m)}
    stamps = {}
    if survey is not None:
        inputs[lineage.SURVEY] = lineage.survey_digest(survey)
    for model in models:
        fitted = ws.folder("scores") / "models" / model  # the flows that scored the tables belong to the set
        flows = set(fitted.glob("flow_*.npz")) | {p for p in stage.written if p.parent == fitted}
        for path in [*score_tables(ws, model), *sorted(flows)]:
            if stage.exists(path):
                key = lineage.key_of(ws, path)
                inputs[key], file_stamp = lineage.hashed(stage.read_path(path))
                if file_stamp is not None:
                    stamps[key] = file_stamp
    return inputs, stamps


def write_systems_table(ws: Workspace, stage: StagedSet, table: pd.DataFrame, runs: dict[str, dict],
                        scored: list[str], dropped: list[str], inputs: tuple[dict[str, str], dict[str, list[int]]]
                        ) -> Path:
    """systems.parquet (staged) with the provenance of its systems and its inputs in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fmb_engine.rankings import PROVENANCE_KEY, systems_path

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    record = json.dumps({"runs": runs, "scored": scored, "dropped": dropped}, sort_keys=True)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PROVENANCE_KEY: record.encode(),
                                           lineage.SYSTEMS_KEY: lineage.systems_json(*inputs)})
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
           survey: Path | None = None, source: Callable[[DetectConfig, RunManifest], Any] | None = None) -> Any:
    """Run the chosen parts for every embedding run, then rebuild ``scores/systems.parquet``.

    ``source(cfg, manifest)`` makes what fits and scores (:class:`InProcess` by default; the merge
    of a sharded run reads its jobs' files, :mod:`fmb_engine.detect.shards`).

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
                scorer = (source or InProcess)(cfg, manifest)
                for path in runs:
                    scored += score_run(ws, path, cfg, manifest, reporter, flows="flows" in parts,
                                        mismatch="mismatch" in parts, stage=stage, source=scorer)
            if "fuse" in parts:
                with manifest.phase("fuse"):
                    fused = {m: fuse_run(ws, m, cfg, manifest, stage) for m in models}
                fused = {m: table for m, table in fused.items() if table is not None}
                scored += [system_name(m, "fused", method) for m in fused for method in FUSION_METHODS]
                all_scores = scores_dir / "multimodal" / "all_scores.csv"
                write_csv(_merge_fused(all_scores, list(fused.values()), models), stage.path(all_scores))
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
