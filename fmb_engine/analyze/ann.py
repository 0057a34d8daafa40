"""Approximate cosine k-NN for large tables: a faiss inverted-file index whose recall is
measured, not assumed.

Exact search costs ``Q · N · D`` multiply-adds; at 10⁶ objects a self-query is hours on a few
cores. The inverted file splits the L2-normalised database into ``nlist`` cells by spherical
k-means (trained on a seeded subsample) and compares a query only with the vectors of its
``nprobe`` nearest cells. The cells store the vectors in float16 (faiss
``IndexIVFScalarQuantizer``, ``QT_fp16``): the scan is bound by memory traffic, so half the
bytes is about three times the speed of float32 cells at the same recall, and half the
memory. The similarities of the candidates found are then recomputed in float32 from the
database and the candidates re-sorted, so the reported similarities are exact. Measured
against float32 cells (IVF-Flat) and an HNSW graph in docs/benchmarks.md ("Approximate k-NN").

``nprobe`` (unless fixed) is the first step of the ladder 1, 2, 3, 4, 6, 8, 11, 16, … (×√2)
whose recall@k on a seeded *tuning* sample of queries reaches the target; recall@k is then measured on a separate seeded sample
against exact search and reported with the index parameters and timings. Everything is
seeded (subsample, k-means, samples), so the same seed gives the same neighbours.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from fmb_engine.analyze.similarity import drop_self, knn, normalise, require_faiss

#: Training rows per cell of the k-means (faiss warns below 39; more buys little on 2 cores).
TRAIN_PER_CELL = 64


@dataclass(frozen=True)
class ApproxSettings:
    """How the index is built and checked (the ``approx_*`` keys of the analyze section)."""

    nlist: int = 0  # cells; 0 = round(sqrt(N)), at most N / TRAIN_PER_CELL
    nprobe: int = 0  # cells scanned per query; 0 = tuned to reach min_recall
    min_recall: float = 0.95
    recall_queries: int = 1000
    tune_queries: int = 256
    seed: int = 42
    chunk: int = 4096


def auto_nlist(n: int) -> int:
    """About ``sqrt(N)`` cells, each with enough rows to train on."""
    return max(1, min(round(math.sqrt(n)), n // TRAIN_PER_CELL))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found ∩ truth| / |truth|`` (padding -1 ignored)."""
    hits, total = 0, 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += np.intersect1d(f[f >= 0], t).size
        total += t.size
    return hits / total if total else float("nan")


def _build(faiss: ModuleType, database: np.ndarray, nlist: int, s: ApproxSettings) -> tuple[object, dict]:
    """Train spherical k-means on a seeded subsample, then add the database in normalised chunks."""
    n, d = database.shape
    rng = np.random.default_rng(s.seed)
    train_rows = np.sort(rng.choice(n, min(n, nlist * TRAIN_PER_CELL), replace=False))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = s.seed
    index.cp.spherical = True  # centroids on the unit sphere: cells by cosine
    t0 = time.perf_counter()
    index.train(normalise(database[train_rows]))
    t_train = time.perf_counter() - t0
    for start in range(0, n, s.chunk):
        index.add(normalise(database[start:start + s.chunk]))
    return index, {"train_rows": int(train_rows.size), "train_s": round(t_train, 3),
                   "build_s": round(time.perf_counter() - t0, 3)}


def _search(index, database: np.ndarray, queries: np.ndarray, kk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` of each query (normalised chunk by chunk), re-scored in float32 from the database."""
    idx = np.empty((len(queries), kk), np.int64)
    sims = np.empty((len(queries), kk), np.float32)
    for start in range(0, len(queries), chunk):
        q = normalise(queries[start:start + chunk])
        _, found = index.search(q, kk)
        vectors = normalise(database[np.maximum(found, 0).ravel()]).reshape(*found.shape, -1)
        exact = np.where(found >= 0, np.einsum("qd,qkd->qk", q, vectors), -np.inf).astype(np.float32)
        order = np.argsort(-exact, axis=1, kind="stable")
        idx[start:start + chunk] = np.take_along_axis(found, order, 1)
        sims[start:start + chunk] = np.take_along_axis(exact, order, 1)
    return idx, sims


def _exact(database, queries, self_rows, rows, k, chunk) -> np.ndarray:
    """Exact top-``k`` indices of the queries ``rows`` (the reference of the recall)."""
    return knn(database, queries[rows], k, self_rows=self_rows[rows], chunk=chunk, backend="torch", symmetric=False)[0]


def approx_knn(database: np.ndarray, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None,
               settings: ApproxSettings = ApproxSettings()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Approximate top-``k`` cosine neighbours, as :func:`~fmb_engine.analyze.similarity.knn`
    returns them, plus a report: index parameters, timings, tuning steps and the measured recall@k."""
    faiss = require_faiss("analyze.backend approx")
    s = settings
    n, nq = database.shape[0], queries.shape[0]
    self_rows = np.full(nq, -1, np.int64) if self_rows is None else np.asarray(self_rows, np.int64)
    kk = min(k + 1, n)
    nlist = min(s.nlist or auto_nlist(n), n)
    index, report = _build(faiss, database, nlist, s)
    report = {"backend": "approx", "index": "IVF,SQfp16 (faiss IndexIVFScalarQuantizer)", "metric": "inner product of L2-normalised rows",
              "objects": n, "queries": nq, "k": k, "nlist": nlist, **report}
    # disjoint seeded samples: one to choose nprobe, one to report the recall of that choice
    rng = np.random.default_rng(s.seed + 1)
    order = rng.permutation(nq)
    check = np.sort(order[:min(s.recall_queries, nq)])
    tune = np.sort(order[check.size:check.size + s.tune_queries]) if not s.nprobe else check[:0]
    t0 = time.perf_counter()
    if s.nprobe:
        nprobe = min(s.nprobe, nlist)
    else:  # too few queries for two samples: tune on the check sample (the report says so)
        rows = tune if tune.size else check
        truth = _exact(database, queries, self_rows, rows, k, s.chunk)
        steps, nprobe = [], 1
        while True:
            index.nprobe = nprobe
            found = drop_self(*_search(index, database, queries[rows], kk, s.chunk), self_rows[rows], k)[0]
            steps.append({"nprobe": nprobe, "recall": round(recall_at_k(found, truth), 4)})
            if steps[-1]["recall"] >= s.min_recall or nprobe >= nlist:
                break
            nprobe = min(max(nprobe + 1, round(nprobe * math.sqrt(2))), nlist)
        report["tuning"] = {"queries": int(rows.size), "separate_from_check": bool(tune.size), "steps": steps}
    report["tune_s"] = round(time.perf_counter() - t0, 3)
    index.nprobe = nprobe
    report["nprobe"] = nprobe
    t0 = time.perf_counter()
    idx, sims = _search(index, database, queries, kk, s.chunk)
    report["search_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    exact = _exact(database, queries, self_rows, check, k, s.chunk)
    report["exact_sample_s"] = round(time.perf_counter() - t0, 3)
    out_i, out_s = drop_self(idx, sims, self_rows, k)
    report["recall_queries"] = int(check.size)
    report[f"recall_at_{k}"] = round(recall_at_k(out_i[check], exact), 4)
    report["min_recall"] = s.min_recall
    return out_i, out_s, report


__all__ = ["ApproxSettings", "approx_knn", "auto_nlist", "recall_at_k"]
