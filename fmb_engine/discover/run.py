"""Doors of active discovery: `discover rerank` (labels -> a new system) and `discover simulate`.

``rerank`` reads the workspace's labels (``triage/labels.sqlite``, every user's), maps them to
relevance, learns on the features of one embedding run and writes the system
``<model>/<modality>/active`` into ``scores/systems.parquet`` beside detect's systems, so every
screen and command can rank by it. ``<modality>`` is the one modality used, or ``fused`` when the
features concatenate several. The file's metadata (key ``fmb:active``) records, per active
system, the strategy, its parameters and seed, and the labels it reflects (count, digest, the
label store's version, users), which is how the explorer says whether the order is stale. A new
detect run rebuilds systems.parquet from its score tables and so drops the active systems:
re-rank again after it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine import locks
from fmb_engine.config import Resolved
from fmb_engine.discover.features import Features
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.manifest import RunManifest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.rankings import (
    ACTIVE_KEY,
    ACTIVE_METHOD,
    SCORE_PREFIX,
    RANK_PREFIX,
    default_system,
    list_systems,
    parse_system,
    system_name,
    systems_path,
)
from fmb_engine.stage_run import StageResult, config_record, stage_run
from fmb_engine.workspace import Workspace, atomic_path

#: Object ids listed in the manifest per reason at most.
EXAMPLES = 10


@dataclass
class Problem:
    """What the strategy learns on: one run's finite rows reduced to features, and their base scores."""

    system: str  # the base system
    model: str
    modalities: list[str]
    object_ids: np.ndarray  # (N,) str, rows with a finite vector in every modality used
    Z: np.ndarray  # (N, dims) float32, the features of those rows
    features: Features  # fitted on them
    seconds: float  # the features took
    base: np.ndarray  # (N,) float64, NaN where the base system has no score
    not_finite: np.ndarray  # ids of the run's rows left out (a non-finite vector)


def active_system(model: str, modalities: list[str]) -> str:
    """``<model>/<modality>/active``; ``fused`` names a concatenation of several modalities."""
    return system_name(model, modalities[0] if len(modalities) == 1 else "fused", ACTIVE_METHOD)


def choose_base(systems: list[str], model: str = "", system: str = "", fusion: str = "fisher") -> str:
    """The base system: ``system`` when given, else ``model``'s fusion by rule ``fusion`` (detect.fusion),
    else its first fused system; without ``model``, the first run's."""
    if system:
        return default_system(systems, system)
    own = [s for s in systems if parse_system(s).method != ACTIVE_METHOD
           and (not model or parse_system(s).model == model)]
    if not own:
        raise ConfigError(f"no system of embedding run {model!r} in the ranking; systems: {', '.join(systems)}")
    preferred = system_name(model or parse_system(own[0]).model, "fused", fusion)
    return default_system(own, preferred if preferred in own else None)


def embedding_features(reader: Any, modalities: list[str], features: Features) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``features`` on the rows of ``reader`` finite in every one of ``modalities`` (concatenated) and
    reduce those rows: (Z, their file positions), read block by block, never the whole file.

    The rows are taken as all finite first, which one pass checks; a run with non-finite rows is reduced
    again without them (a second pass), so the sample and Z are exactly those of the finite rows alone.
    """
    from fmb_engine.discover.rows import EmbeddingRows

    rows = EmbeddingRows(reader, modalities)
    Z = features.fit_transform(rows)
    if rows.not_finite:
        finite = np.ones(reader.n_objects, dtype=bool)
        finite[np.concatenate(rows.not_finite)] = False
        rows = EmbeddingRows(reader, modalities, np.flatnonzero(finite))
        Z = features.fit_transform(rows)
    return Z, rows.keep


def load_problem(ws: Workspace, cfg: Any, survey: Path | None = None, manifest: RunManifest | None = None) -> Problem:
    """Read the base system and reduce the embedding rows named by the ``discover`` settings ``cfg`` to
    features (``cfg.dims``, ``cfg.fit_rows``, ``cfg.seed``; one BLAS thread); ``manifest`` gets the inputs
    and the rows left out (a non-finite vector), with example ids."""
    import time

    from threadpoolctl import threadpool_limits

    from fmb_engine import lineage
    from fmb_engine.config import load
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.rankings import load_rankings

    system = choose_base(list_systems(ws, survey), cfg.model, cfg.system, load("detect", ws).values.fusion)
    model = cfg.model or parse_system(system).model
    path = ws.folder("embeddings") / f"{model}.h5"
    if not path.is_file():
        raise ConfigError(f"discover.model: no embedding run {path} (runs: "
                          f"{', '.join(p.stem for p in sorted(ws.folder('embeddings').glob('*.h5'))) or 'none'})")
    with EmbeddingReader(path) as reader:
        held = [m for m in cfg.modalities if m in reader.meta.modalities]
        if not held:
            raise ConfigError(f"discover.modalities {cfg.modalities} not in {path.name} "
                              f"(it holds {', '.join(reader.meta.modalities)})")
        ids = reader.object_ids.astype(str)
        features = Features(dims=cfg.dims, fit_rows=cfg.fit_rows, seed=cfg.seed)
        started = time.perf_counter()
        with (manifest.phase("features") if manifest is not None else nullcontext()), threadpool_limits(1):
            Z, kept = embedding_features(reader, held, features)
        seconds = time.perf_counter() - started
    finite = np.zeros(ids.size, dtype=bool)
    finite[kept] = True
    scores = load_rankings(ws, [system], survey).set_index("object_id")[SCORE_PREFIX + system]
    base = scores.reindex(ids[finite]).to_numpy(dtype=np.float64)
    problem = Problem(system, model, held, ids[finite], Z, features, seconds, base, ids[~finite])
    if manifest is not None:
        manifest.input("embeddings", path, digest=lineage.embedding_identity(path))  # no re-hash of GBs per re-rank
        manifest.input("systems", systems_path(ws))
        if problem.not_finite.size:
            manifest.dropped("not_finite_vector", int(problem.not_finite.size))
            manifest.count("not_finite_examples", problem.not_finite[:EXAMPLES].tolist())
    return problem


def labels_digest(labels: dict[str, str]) -> str:
    """sha256 of the sorted (object id, label) pairs: same labels, same digest, whoever set them."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()


def read_labels(ws: Workspace) -> tuple[dict[str, str], dict[str, int], int]:
    """Every current label (object id -> name), labels per user, and the store's version."""
    from fmb_engine.triage.labels import open_labels

    store = open_labels(ws)
    try:
        current = store.current()
        version = store.data_version()
    finally:
        store.close()
    labels = {oid: c.label for oid, c in current.items() if c.label}
    users = Counter(current[oid].label_user or "?" for oid in labels)
    return labels, dict(sorted(users.items())), version


def rerank(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None,
           survey: Path | None = None) -> StageResult:
    """Re-rank the objects of one embedding run by the workspace's labels; a new system in systems.parquet."""
    from fmb_engine.detect.tables import rank_descending
    from fmb_engine.discover.relevance import targets
    from fmb_engine.discover.rerank import rerank_features

    cfg = resolved.values
    reporter = reporter or Silent()
    scores_dir = ws.folder("scores")
    with locks.hold(scores_dir, "the rankings in scores/"), \
            stage_run(ws, "discover.rerank", config_record(resolved), seed=cfg.seed) as manifest:
        problem = load_problem(ws, cfg, survey, manifest)
        labels, users, version = read_labels(ws)
        t = targets(labels, problem.object_ids, cfg.relevance, tuple(cfg.ignored))
        manifest.count("labels", {"total": len(labels), "used": int(t.rows.size),
                                  "relevant": int((t.relevance >= 0.5).sum()),
                                  "not_relevant": int((t.relevance < 0.5).sum()), "ignored": t.ignored,
                                  "not_in_run": len(t.not_in_run), "not_in_run_examples": t.not_in_run[:EXAMPLES],
                                  "users": users})
        with manifest.phase("rerank"):
            try:
                done = rerank_features(problem.Z, problem.base, t.rows, t.relevance, problem.features, cfg.strategy,
                                       seed=cfg.seed, params=dict(cfg.params), seconds=problem.seconds)
            except TypeError as exc:  # a parameter the strategy does not have
                raise ConfigError(f"discover.params {cfg.params} do not fit strategy {cfg.strategy!r}: {exc}") from None
        manifest.setting("features", done.features)
        notes = ([done.fallback] if done.fallback else []) + list(done.notes)
        for note in notes:
            manifest.warn(note)
            reporter.log(note)
        score = done.score
        name = active_system(problem.model, problem.modalities)
        record = {"strategy": done.strategy, "params": done.params, "seed": cfg.seed, "base": problem.system,
                  "modalities": problem.modalities, "labels": int(t.rows.size), "labels_total": len(labels),
                  "labels_digest": labels_digest(labels), "label_version": version, "users": users,
                  "run_id": manifest.run_id, "time": manifest.started_at, "notes": notes,
                  "fallback": done.fallback, "seconds": {k: round(v, 3) for k, v in done.seconds.items()}}
        manifest.record("active", {"system": name} | record)
        with manifest.phase("write"):
            out = write_active(ws, name, problem.object_ids, score, rank_descending, record)
        manifest.output("systems", out)
    unlabelled = ~np.isin(problem.object_ids, list(labels))
    best = problem.object_ids[unlabelled][np.argmax(np.where(np.isfinite(score[unlabelled]), score[unlabelled], -np.inf))] \
        if unlabelled.any() else None
    summary = {"system": name, "strategy": done.strategy, "base": problem.system, "labels_used": int(t.rows.size),
               "labels_total": len(labels), "ignored": t.ignored, "not_in_run": len(t.not_in_run), "users": users,
               "notes": notes, "fallback": done.fallback, "best_unlabelled": best}
    return StageResult({"systems": out}, manifest.path, summary)


def read_truth(ws: Workspace, model: str, object_ids: np.ndarray, survey: Path | None = None) -> np.ndarray:
    """The injected ``anomaly_class`` of ``object_ids`` ('' = normal): from the embedding file when it carries
    its own truth (a synthetic run), else from the survey (default: the active one)."""
    from fmb_engine import lineage
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.survey.store import SurveyReader

    path = ws.folder("embeddings") / f"{model}.h5"
    with EmbeddingReader(path) as reader:
        columns = reader.columns()
        ids = reader.object_ids.astype(str)
    if "anomaly_class" in columns:
        truth = dict(zip(ids, np.asarray(columns["anomaly_class"]).astype(str)))
        where = str(path)
    else:
        survey = survey or lineage.active_survey(ws)
        if survey is None or not Path(survey).is_file():
            raise DataError(f"discover simulate needs injected truth: {path.name} carries none and there is no "
                            "active survey (general.survey)")
        with SurveyReader(survey) as reader:
            table = reader.table()
        if "anomaly_class" not in table.columns:
            raise DataError(f"{survey}: no anomaly_class column; discover simulate needs a survey with injected "
                            "truth (the mock)")
        truth = dict(zip(table["object_id"].astype(str), table["anomaly_class"].astype(str)))
        where = str(survey)
    missing = [oid for oid in object_ids[:EXAMPLES * 100] if oid not in truth]
    if missing:
        raise DataError(f"{where}: no truth for object(s) {', '.join(missing[:EXAMPLES])} of embedding run {model}")
    return np.array([truth[oid] for oid in object_ids], dtype=object)


def simulate(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None,
             survey: Path | None = None) -> StageResult:
    """Discovery curves on the workspace: an oracle from the injected truth labels what each strategy shows.

    Writes ``analysis/discovery/curves.csv`` (strategy, seed, inspected, found), ``summary.csv``
    (mean and std over seeds at 50/100/200 inspections) and ``figures/discovery_curves.png|pdf``."""
    from threadpoolctl import threadpool_limits

    from fmb_engine.csv_tables import write_csv
    from fmb_engine.discover.simulate import CHECKPOINTS, simulate as run_curves, summarize
    from fmb_engine.figures.discovery import discovery_figure

    cfg = resolved.values
    reporter = reporter or Silent()
    out_dir = ws.folder("analysis") / "discovery"
    with stage_run(ws, "discover.simulate", config_record(resolved), seed=cfg.seed) as manifest:
        problem = load_problem(ws, cfg, survey, manifest)
        classes = read_truth(ws, problem.model, problem.object_ids, survey)
        known = sorted(set(classes) - {""})
        unknown = [c for c in cfg.interesting if c not in known]
        if unknown:
            raise ConfigError(f"discover.interesting: no object of class {', '.join(unknown)} in the truth; "
                              f"classes there: {', '.join(known) or 'none'}")
        interesting = np.isin(classes, list(cfg.interesting))
        manifest.count("objects", int(classes.size))
        manifest.count("interesting", int(interesting.sum()))
        Z = problem.Z
        runs = len(cfg.strategies) * cfg.seeds
        with manifest.phase("curves"), threadpool_limits(1), reporter.task("discovery curves", total=runs) as step:
            curves = run_curves(Z, problem.base, interesting, cfg.strategies, seeds=range(cfg.seed, cfg.seed + cfg.seeds),
                                budget=cfg.budget, batch=cfg.batch,
                                params={cfg.strategy: dict(cfg.params)} if cfg.params else None,
                                progress=lambda name, seed: step.advance())
        summary = summarize(curves, [a for a in CHECKPOINTS if a <= cfg.budget] or [cfg.budget])
        files = {"curves": out_dir / "curves.csv", "summary": out_dir / "summary.csv"}
        for name, table in (("curves", curves), ("summary", summary)):
            write_csv(table, files[name])
            manifest.output(name, files[name])
        title = f"{problem.system}: {int(interesting.sum())} interesting of {classes.size:,}"
        for path in discovery_figure(curves, ws.folder("figures") / "discovery_curves", title=title,
                                     total=int(interesting.sum())):
            files[f"figure {path.suffix[1:]}"] = path
            manifest.output(f"figure_{path.suffix[1:]}", path)
    return StageResult(files, manifest.path, {"base": problem.system, "model": problem.model,
                                              "objects": int(classes.size), "interesting": int(interesting.sum()),
                                              "summary": summary, "strategies": list(cfg.strategies),
                                              "seeds": cfg.seeds, "budget": cfg.budget, "batch": cfg.batch})


def write_active(ws: Workspace, name: str, object_ids: np.ndarray, score: np.ndarray, rank_of, record: dict) -> Path:
    """Put system ``name`` (scores of ``object_ids``; ranked over the file's rows) into systems.parquet.

    Rows of the file the run does not hold get no score and rank after every scored row. The
    rest of the file — other systems, its provenance and lineage metadata — is kept as it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = systems_path(ws)
    table = pq.read_table(path)
    ids = np.asarray(table.column("object_id").to_pylist(), dtype=str)
    position = {oid: i for i, oid in enumerate(object_ids)}
    at = np.fromiter((position.get(oid, -1) for oid in ids), dtype=np.int64, count=ids.size)
    full = np.where(at >= 0, score[np.maximum(at, 0)], np.nan)
    for column in (RANK_PREFIX + name, SCORE_PREFIX + name):
        if column in table.column_names:
            table = table.drop_columns([column])
    table = table.append_column(RANK_PREFIX + name, pa.array(rank_of(full), pa.int64()))
    table = table.append_column(SCORE_PREFIX + name, pa.array(full, pa.float64()))
    meta = dict(table.schema.metadata or {})
    active = json.loads(meta.get(ACTIVE_KEY, b"{}"))
    active[name] = record
    meta[ACTIVE_KEY] = json.dumps(active, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


__all__ = ["Problem", "active_system", "choose_base", "embedding_features", "labels_digest", "load_problem", "read_labels", "read_truth",
           "rerank", "simulate", "write_active"]
