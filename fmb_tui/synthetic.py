"""Synthetic detection outputs for demos, tests and benchmarks (no UI imports).

Writes files in the documented formats (``docs/formats.md``) the detection and analysis
stages produce: ``scores/systems.parquet``, ``analysis/rankings/{spearman,jaccard}.csv`` and
``analysis/similarity/neighbours.parquet``. Scores are seeded random numbers, raised for
objects with an injected anomaly when a survey table is given, so a mock workspace ranks
its anomalies near the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmb_engine.rankings import comparison_path, neighbours_path, systems_path
from fmb_engine.workspace import Workspace, atomic_path

DEFAULT_SYSTEMS: tuple[str, ...] = (
    "astropt/image/flow", "astropt/spectrum/flow", "astropt/cross/mismatch", "astropt/fused/geo",
    "aion/image/flow", "aion/spectrum/flow", "aion/cross/mismatch", "aion/fused/geo",
)


def _ranks(score: np.ndarray) -> np.ndarray:
    order = np.argsort(-score, kind="stable")
    rank = np.empty(score.size, dtype=np.int64)
    rank[order] = np.arange(1, score.size + 1)
    return rank


def write_rankings(ws: Workspace, object_ids: Sequence[str] | np.ndarray, systems: Sequence[str] = DEFAULT_SYSTEMS,
                   anomalous: np.ndarray | None = None, seed: int = 0) -> Path:
    """``scores/systems.parquet`` for ``object_ids``; ``anomalous`` (bool) objects score higher."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = np.asarray(object_ids).astype(str)
    n = ids.size
    boost = np.zeros(n) if anomalous is None else np.asarray(anomalous, dtype=float) * 3.0
    base = rng.normal(size=n)
    columns: dict[str, object] = {"object_id": pa.array(ids, type=pa.string())}
    for k, name in enumerate(systems):
        score = 0.6 * base + 0.8 * rng.normal(size=n) + boost * (0.5 + 0.5 * ((k % 3) != 1))
        score = np.round(score, 6)
        columns[f"rank:{name}"] = pa.array(_ranks(score))
        columns[f"score:{name}"] = pa.array(score)
    table = pa.table(columns)
    out = systems_path(ws)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, row_group_size=256 * 1024)
    return out


def write_comparisons(ws: Workspace, systems: Sequence[str] = DEFAULT_SYSTEMS, seed: int = 0) -> list[Path]:
    """Plausible ``spearman.csv`` and ``jaccard.csv`` matrices (symmetric, unit diagonal)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    k = len(systems)
    a = rng.normal(size=(k, 3))
    sim = a @ a.T
    d = np.sqrt(np.diag(sim))
    rho = np.clip(sim / np.outer(d, d), -1, 1)
    jac = np.clip((rho + 1) / 2 * 0.6, 0, 1)
    np.fill_diagonal(jac, 1.0)
    out = []
    for kind, matrix in (("spearman", rho), ("jaccard", jac)):
        path = comparison_path(ws, kind)
        with atomic_path(path) as tmp:
            pd.DataFrame(np.round(matrix, 4), index=list(systems), columns=list(systems)).to_csv(tmp)
        out.append(path)
    return out


def write_neighbours(ws: Workspace, object_ids: Sequence[str] | np.ndarray, k: int = 5,
                     models: Sequence[str] = ("astropt", "aion"), modalities: Sequence[str] = ("joint",),
                     seed: int = 0) -> Path:
    """``analysis/similarity/neighbours.parquet`` with ``k`` random neighbours per object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = np.asarray(object_ids).astype(str)
    n = ids.size
    rows: dict[str, list] = {"object_id": [], "model": [], "modality": [], "neighbour": [], "neighbour_id": [],
                             "similarity": []}
    for model in models:
        for modality in modalities:
            for i in range(n):
                picks = rng.choice(n - 1, size=min(k, n - 1), replace=False)
                picks = picks + (picks >= i)
                sims = np.sort(rng.uniform(0.7, 0.99, size=picks.size))[::-1]
                for j, (p, s) in enumerate(zip(picks, sims, strict=True)):
                    rows["object_id"].append(ids[i])
                    rows["model"].append(model)
                    rows["modality"].append(modality)
                    rows["neighbour"].append(j + 1)
                    rows["neighbour_id"].append(ids[p])
                    rows["similarity"].append(float(round(s, 4)))
    path = neighbours_path(ws)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(rows), tmp)
    return path


def populate(ws: Workspace, survey: Path | None = None, systems: Sequence[str] = DEFAULT_SYSTEMS,
             neighbours: bool = True, seed: int = 0) -> dict[str, Path]:
    """Rankings (+ comparisons and neighbours) for the objects of ``survey`` (default: the first one)."""
    from fmb_engine.survey.store import SurveyReader

    survey = survey or ws.surveys()[0]
    with SurveyReader(survey) as reader:
        table = reader.table()
        ids = table["object_id"].to_numpy().astype(str)
        anomalous = table["anomaly_class"].to_numpy().astype(str) != ""
    out = {"systems": write_rankings(ws, ids, systems, anomalous, seed)}
    out["spearman"], out["jaccard"] = write_comparisons(ws, systems, seed)
    if neighbours:
        out["neighbours"] = write_neighbours(ws, ids, seed=seed)
    return out
