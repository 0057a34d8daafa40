"""Approximate cosine k-NN for large tables: a faiss inverted-file index whose recall is
measured, not assumed.

Exact search costs ``Q · N · D`` multiply-adds; at 10⁶ objects a self-query is hours on a few
cores. The inverted file splits the L2-normalised database into ``nlist`` cells by spherical
k-means (trained on a seeded subsample) and compares a query only with the rows of its
``nprobe`` nearest cells. The cells hold 4-bit product-quantiser codes scanned with SIMD lookup
tables (faiss ``IndexIVFPQFastScan``, ``D / 4`` sub-vectors: 96 bytes a row at D = 768), so a
scan costs a small fraction of reading float vectors; the ``RERANK · (k + 1)`` best candidates
of each query are then re-scored in float32 from the embeddings and the best ``k + 1`` kept, so
the similarities written are exact and the codes only decide which rows are looked at.
Measured against float16 and float32 cells and an HNSW graph in docs/benchmarks.md
("Approximate k-NN").

``nprobe`` (unless fixed) is the first step of the ladder 1, 2, 3, 4, 6, 8, 11, 16, … (×√2)
whose recall@k on a seeded *tuning* sample of queries reaches the target; recall@k is then
measured on a separate seeded sample against exact search and reported with the index
parameters and timings. Everything is seeded (subsample, k-means, samples), so the same seed
gives the same neighbours.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from fmb_engine.analyze.similarity import drop_self, knn, normalise, require_faiss

#: Training rows per cell of the k-means (faiss warns below 39; more buys little on 2 cores).
TRAIN_PER_CELL = 64
#: Candidates per wanted neighbour re-scored exactly (the codes' ranking is coarse).
RERANK = 10
#: Gathered candidate vectors per re-scoring block at most (64 MiB of float32).
RERANK_ELEMENTS = 1 << 24


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


def code_size(d: int) -> int:
    """Sub-vectors of the product quantiser: about D / 4 (the largest divisor of D not above it)."""
    return max(v for v in range(1, max(1, d // 4) + 1) if d % v == 0)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found ∩ truth| / |truth|`` (padding -1 ignored)."""
    hits, total = 0, 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += np.intersect1d(f[f >= 0], t).size
        total += t.size
    return hits / total if total else float("nan")


@contextlib.contextmanager
def _timed(report: dict, name: str) -> Iterator[None]:
    """``<name>_s`` (wall) and ``<name>_cpu_s`` (CPU of all threads) into the report: on a shared
    machine their ratio shows how much of the cores the search had."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        report[f"{name}_s"] = round(time.perf_counter() - wall, 3)
        report[f"{name}_cpu_s"] = round(time.process_time() - cpu, 3)


def _build(faiss: ModuleType, database: np.ndarray, nlist: int, s: ApproxSettings) -> tuple[object, dict]:
    """Train spherical k-means on a seeded subsample, then add the database in normalised chunks."""
    n, d = database.shape
    rng = np.random.default_rng(s.seed)
    train_rows = np.sort(rng.choice(n, min(n, nlist * TRAIN_PER_CELL), replace=False))
    index = faiss.index_factory(d, f"IVF{nlist},PQ{code_size(d)}x4fs", faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = s.seed
    index.cp.spherical = True  # centroids on the unit sphere: cells by cosine
    index.pq.cp.seed = s.seed
    report = {"train_rows": int(train_rows.size)}
    with _timed(report, "build"):
        with _timed(report, "train"):
            index.train(normalise(database[train_rows]))
        for start in range(0, n, s.chunk):
            index.add(normalise(database[start:start + s.chunk]))
    return index, report


def _search(index, database: np.ndarray, queries: np.ndarray, kk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` of each query: ``RERANK · kk`` candidates from the codes, re-scored in float32
    from the database (queries normalised block by block)."""
    pool = min(RERANK * kk, database.shape[0])
    step = max(1, min(chunk, RERANK_ELEMENTS // (pool * database.shape[1])))
    idx = np.empty((len(queries), kk), np.int64)
    sims = np.empty((len(queries), kk), np.float32)
    for start in range(0, len(queries), step):
        q = normalise(queries[start:start + step])
        _, found = index.search(q, pool)
        vectors = normalise(database[np.maximum(found, 0).ravel()]).reshape(*found.shape, -1)
        exact = np.where(found >= 0, np.matmul(vectors, q[:, :, None])[..., 0], -np.inf).astype(np.float32)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :kk]
        idx[start:start + step] = np.take_along_axis(found, order, 1)
        sims[start:start + step] = np.take_along_axis(exact, order, 1)
    return idx, sims


def _exact(database, queries, self_rows, rows, k, chunk) -> np.ndarray:
    """Exact top-``k`` indices of the queries ``rows`` (the reference of the recall)."""
    return knn(database, queries[rows], k, self_rows=self_rows[rows], chunk=chunk, backend="torch", symmetric=False)[0]


def _tune(index, database, queries, self_rows, rows, k, s: ApproxSettings) -> tuple[int, dict]:
    """The first nprobe of the ladder 1, 2, 3, 4, 6, 8, 11, … whose recall@k on ``rows`` reaches the target."""
    truth = _exact(database, queries, self_rows, rows, k, s.chunk)
    kk = min(k + 1, database.shape[0])
    steps, nprobe = [], 1
    while True:
        index.nprobe = nprobe
        found = drop_self(*_search(index, database, queries[rows], kk, s.chunk), self_rows[rows], k)[0]
        steps.append({"nprobe": nprobe, "recall": round(recall_at_k(found, truth), 4)})
        if steps[-1]["recall"] >= s.min_recall or nprobe >= index.nlist:
            return nprobe, {"queries": int(rows.size), "steps": steps}
        nprobe = min(max(nprobe + 1, round(nprobe * math.sqrt(2))), index.nlist)


class ApproxIndex:
    """The inverted-file index of one database, built once, its ``nprobe`` chosen once, then
    searched by any number of query blocks (detect scores a million objects chunk by chunk
    against one reference set); :func:`approx_knn` is one build, tune, search and check."""

    def __init__(self, database: np.ndarray, settings: ApproxSettings = ApproxSettings(),
                 setting: str = "analyze.backend"):
        faiss = require_faiss(f"{setting} approx", setting)
        self.database, self.settings = database, settings
        n, d = database.shape
        nlist = min(settings.nlist or auto_nlist(n), n)
        self.index, built = _build(faiss, database, nlist, settings)
        self.report = {"backend": "approx",
                       "index": f"IVF{nlist},PQ{code_size(d)}x4fs (faiss), exact re-ranking of {RERANK} x (k+1)",
                       "metric": "inner product of L2-normalised rows", "objects": n, "nlist": nlist, **built}

    def tune(self, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None) -> np.ndarray:
        """Fix ``nprobe`` (the setting, or the ladder on a seeded tuning sample of ``queries``) and
        return the separate seeded sample of query positions whose recall :meth:`recall` measures."""
        s, nq = self.settings, queries.shape[0]
        self_rows = _self_rows(self_rows, nq)
        rng = np.random.default_rng(s.seed + 1)  # disjoint seeded samples: one chooses nprobe, one checks it
        order = rng.permutation(nq)
        check = np.sort(order[:min(s.recall_queries, nq)])
        tune = np.sort(order[check.size:check.size + s.tune_queries]) if not s.nprobe else check[:0]
        with _timed(self.report, "tune"):
            if s.nprobe:
                nprobe = min(s.nprobe, self.index.nlist)
            else:  # too few queries for two samples: tune on the check sample (the report says so)
                nprobe, self.report["tuning"] = _tune(self.index, self.database, queries, self_rows,
                                                      tune if tune.size else check, k, s)
                self.report["tuning"]["separate_from_check"] = bool(tune.size)
        self.index.nprobe = self.report["nprobe"] = nprobe
        return check

    def search(self, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of ``queries`` (a query's own row ``self_rows`` left out), as
        :func:`~fmb_engine.analyze.similarity.knn` returns them."""
        kk = min(k + 1, self.database.shape[0])
        idx, sims = _search(self.index, self.database, queries, kk, self.settings.chunk)
        return drop_self(idx, sims, _self_rows(self_rows, queries.shape[0]), k)

    def recall(self, found: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int,
               self_rows: np.ndarray | None = None) -> float:
        """Recall@k of ``found`` (the neighbours of ``queries[rows]``) against exact search, into the report."""
        with _timed(self.report, "exact_sample"):
            exact = _exact(self.database, queries, _self_rows(self_rows, queries.shape[0]), rows, k, self.settings.chunk)
        self.report["recall_queries"] = int(rows.size)
        self.report[f"recall_at_{k}"] = recall = round(recall_at_k(found, exact), 4)
        self.report["min_recall"] = self.settings.min_recall
        return recall


def _self_rows(self_rows: np.ndarray | None, nq: int) -> np.ndarray:
    return np.full(nq, -1, np.int64) if self_rows is None else np.asarray(self_rows, np.int64)


def approx_knn(database: np.ndarray, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None,
               settings: ApproxSettings = ApproxSettings()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Approximate top-``k`` cosine neighbours, as :func:`~fmb_engine.analyze.similarity.knn`
    returns them, plus a report: index parameters, timings, tuning steps and the measured recall@k."""
    index = ApproxIndex(database, settings)
    index.report["queries"], index.report["k"] = queries.shape[0], k
    check = index.tune(queries, k, self_rows)
    with _timed(index.report, "search"):
        out_i, out_s = index.search(queries, k, self_rows)
    index.recall(out_i[check], queries, check, k, self_rows)
    return out_i, out_s, index.report


__all__ = ["ApproxIndex", "ApproxSettings", "approx_knn", "auto_nlist", "code_size", "recall_at_k"]
