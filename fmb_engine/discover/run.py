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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine import locks
from fmb_engine.config import Resolved
from fmb_engine.errors import ConfigError, DataError
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
    """What the strategy learns on: one run's finite feature rows and the base scores of those rows."""

    system: str  # the base system
    model: str
    modalities: list[str]
    object_ids: np.ndarray  # (N,) str, rows with a finite vector in every modality used
    X: np.ndarray  # (N, D) float32
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
    preferred = system_name(parse_system(own[0]).model if not model else model, "fused", fusion)
    return default_system(own, preferred if preferred in own else None)


def load_problem(ws: Workspace, cfg: Any, survey: Path | None = None) -> Problem:
    """Read the base system and the features' source rows named by the ``discover`` settings ``cfg``."""
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.rankings import load_rankings

    from fmb_engine.config import load

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
        X = np.concatenate([np.asarray(reader.load(m), dtype=np.float32) for m in held], axis=1)
    finite = np.isfinite(X).all(axis=1)
    scores = load_rankings(ws, [system], survey).set_index("object_id")[SCORE_PREFIX + system]
    base = scores.reindex(ids[finite]).to_numpy(dtype=np.float64)
    return Problem(system, model, held, ids[finite], X[finite], base, ids[~finite])


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
    from fmb_engine.discover.features import Features
    from fmb_engine.discover.relevance import targets
    from fmb_engine.discover.strategies import make

    cfg = resolved.values
    reporter = reporter or Silent()
    scores_dir = ws.folder("scores")
    with locks.hold(scores_dir, "the rankings in scores/"), \
            stage_run(ws, "discover.rerank", config_record(resolved), seed=cfg.seed) as manifest:
        problem = load_problem(ws, cfg, survey)
        manifest.input("embeddings", ws.folder("embeddings") / f"{problem.model}.h5")
        manifest.input("systems", systems_path(ws))
        if problem.not_finite.size:
            manifest.dropped("not_finite_vector", int(problem.not_finite.size))
            manifest.count("not_finite_examples", problem.not_finite[:EXAMPLES].tolist())
        labels, users, version = read_labels(ws)
        t = targets(labels, problem.object_ids, cfg.relevance, tuple(cfg.ignored))
        relevant = int((t.relevance >= 0.5).sum())
        manifest.count("labels", {"total": len(labels), "used": int(t.rows.size), "relevant": relevant,
                                  "not_relevant": int(t.rows.size) - relevant, "ignored": t.ignored,
                                  "not_in_run": len(t.not_in_run), "not_in_run_examples": t.not_in_run[:EXAMPLES],
                                  "users": users})
        with manifest.phase("features"):
            features = Features(dims=cfg.dims, fit_rows=cfg.fit_rows, seed=cfg.seed)
            Z = features.fit_transform(problem.X)
        manifest.setting("features", {"dims": int(Z.shape[1]), "fit_rows": features.fitted_rows_,
                                      "explained_variance": round(features.explained_variance_ratio_, 6)})
        with manifest.phase("fit+score"):
            try:
                strategy = make(cfg.strategy, seed=cfg.seed, **cfg.params)
            except TypeError as exc:
                raise ConfigError(f"discover.params {cfg.params} do not fit strategy {cfg.strategy!r}: {exc}") from None
            score = strategy.fit(Z, problem.base, t.rows, t.relevance).score(Z, problem.base)
        for note in strategy.notes:
            manifest.warn(note)
            reporter.log(note)
        name = active_system(problem.model, problem.modalities)
        record = {"strategy": cfg.strategy, "params": dict(cfg.params), "seed": cfg.seed, "base": problem.system,
                  "modalities": problem.modalities, "labels": int(t.rows.size), "labels_total": len(labels),
                  "labels_digest": labels_digest(labels), "label_version": version, "users": users,
                  "run_id": manifest.run_id, "time": manifest.started_at, "notes": list(strategy.notes)}
        manifest.record("active", {"system": name} | record)
        with manifest.phase("write"):
            out = write_active(ws, name, problem.object_ids, score, rank_descending, record)
        manifest.output("systems", out)
    unlabelled = ~np.isin(problem.object_ids, list(labels))
    best = problem.object_ids[unlabelled][np.argmax(np.where(np.isfinite(score[unlabelled]), score[unlabelled], -np.inf))] \
        if unlabelled.any() else None
    summary = {"system": name, "strategy": cfg.strategy, "base": problem.system, "labels_used": int(t.rows.size),
               "labels_total": len(labels), "ignored": t.ignored, "not_in_run": len(t.not_in_run), "users": users,
               "notes": list(strategy.notes), "best_unlabelled": best}
    return StageResult({"systems": out}, manifest.path, summary)


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


__all__ = ["Problem", "active_system", "choose_base", "labels_digest", "load_problem", "read_labels", "rerank",
           "write_active"]
