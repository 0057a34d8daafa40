"""Baseline anomaly detectors to run beside the flow: IsolationForest and kNN distance.

Why: no unsupervised detector is best everywhere (ADBench; Bouman et al. 2024
find IsolationForest-type methods strongest on global anomalies and kNN on
local ones), so a flow's ranking should be compared with cheap, well
understood baselines on the same preprocessed matrix: detect fits them on the
modality's fit sample as the flow sees it (PCA -> standardise -> clip,
:class:`~fmb_engine.detect.preprocess.Preprocessor`) and scores the other rows
through the same preprocessing, once per chunk for the flow and both baselines
(:func:`fmb_engine.detect.run.fit_modalities`). On the raw 768/1536-d vectors
the k-NN distances were dominated by the many low-variance directions the flow
never sees, and the search cost 8-15x more (docs/science.md, "Baselines").

Both expose ``fit(X)`` / ``score_samples(X)`` with **higher = more anomalous**
(the opposite sign of :meth:`FlowDensity.score_samples`, which returns
``log p``). :func:`detector_table` writes their scores in the flow's table
format: ``log_prob = -score`` so that ``neg_log_prob = score`` and the
``anomaly_sigma``/``rank`` columns mean exactly what they mean for a flow
(rank 1 = highest score). ``log_prob`` is then *not* a log-density, only the
negated detector score; the columns are kept so tables are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import IsolationForest

from fmb_engine.analyze.ann import ApproxIndex, ApproxSettings
from fmb_engine.analyze.similarity import has_faiss, require_faiss
from fmb_engine.detect.preprocess import check_matrix
from fmb_engine.detect.tables import anomaly_table


#: Queries of each scoring call (a chunk of the file) whose approximate neighbours are checked against exact search.
RECALL_PER_CALL = 64
#: Reference rows per block of the torch exact search: a block of ``chunk_size`` x this many distances
#: (8 MiB at the defaults) stays in cache while its top k is taken, and memory stays bounded at any size.
REFERENCE_BLOCK = 4096


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class IsolationForestDetector:
    """sklearn ``IsolationForest`` (always seeded); score = ``-score_samples`` = ``2^(-E[h(x)]/c(n))`` in (0, 1].

    Higher = shorter average isolation path = more anomalous.
    """

    def __init__(self, n_estimators: int = 200, max_samples: int | str = "auto", seed: int = 42,
                 n_jobs: int | None = None):
        self.n_estimators = _positive_int("n_estimators", n_estimators)
        if not (max_samples == "auto" or (isinstance(max_samples, (int, np.integer)) and max_samples >= 2)):
            raise ValueError(f"max_samples must be 'auto' or an int >= 2, got {max_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.max_samples = max_samples
        self.seed = int(seed)
        self.n_jobs = n_jobs
        self.model_: IsolationForest | None = None

    def fit(self, X: np.ndarray) -> IsolationForestDetector:
        X = check_matrix(X, "IsolationForestDetector.fit")
        if X.shape[0] < 2:
            raise ValueError("IsolationForestDetector.fit needs at least 2 rows")
        self.n_features_in_ = X.shape[1]
        self.model_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=self.seed, n_jobs=self.n_jobs
        ).fit(X)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row (float64, higher = more anomalous)."""
        if self.model_ is None:
            raise RuntimeError("IsolationForestDetector is not fitted; call fit(X) first")
        X = check_matrix(X, "IsolationForestDetector.score_samples", self.n_features_in_)
        return -self.model_.score_samples(X).astype(np.float64)


class KNNDistanceDetector:
    """Mean Euclidean distance to the ``k`` nearest training rows (higher = more anomalous).

    ``score(x) = (1/k) * sum_{j in kNN(x)} ||x - x_j||``. ``score_samples()``
    with no argument scores the training rows themselves, each *excluding
    itself* (by index, so an exact duplicate elsewhere still counts as a
    neighbour at distance 0).

    ``backend="exact"``, on the ``engine``: ``faiss`` (``IndexFlatL2``: blocked float32 matrix
    products with the top k kept on the fly; ``auto`` when faiss-cpu is installed) or ``torch``
    (blocks of ``chunk_size`` queries x :data:`REFERENCE_BLOCK` reference rows,
    ``d^2 = |q|^2 + (|x|^2 - 2 q.x)`` with the bracket fused into the product, clamped at 0, the
    top k of each block then of the blocks' candidates; memory is one block). Both are exact up
    to float32 rounding (they differ by ~1e-7 relative) and each gives the same bits for the same
    batch of queries; on PCA-100 rows faiss is ~2x faster than torch (docs/benchmarks.md). The
    self-query (training rows without themselves) masks each row's own column (torch) or drops
    it from the top ``k + 1`` (faiss; the last one when an exact duplicate outranked it, which
    has the same distance). ``backend="approx"``: the neighbours come from the analyze stage's
    inverted-file index (:class:`~fmb_engine.analyze.ann.ApproxIndex`, built once at fit) through
    :class:`EuclideanAsCosine`, and their distances are then computed exactly; the index's report
    (``search_report``) gets the recall@k against exact search, measured on a seeded sample of the
    training rows' self-query and of every later call's queries. With ``exact_if_short``
    (detect's ``auto``) a tuning that cannot reach ``min_recall`` even with every cell scanned
    switches to the exact search, and the report says why. ``threads``: torch's and faiss's
    thread count while searching (None: as they are).
    """

    def __init__(self, k: int = 10, chunk_size: int = 512, threads: int | None = None, backend: str = "exact",
                 approx: ApproxSettings | None = None, exact_if_short: bool = False, engine: str = "auto"):
        self.k = _positive_int("k", k)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.threads = None if threads is None else _positive_int("threads", threads)
        if backend not in ("exact", "approx"):
            raise ValueError(f"backend must be 'exact' or 'approx', got {backend!r}")
        if engine not in ("auto", "faiss", "torch"):
            raise ValueError(f"engine must be 'auto', 'faiss' or 'torch', got {engine!r}")
        self.backend = backend
        self.engine = ("faiss" if has_faiss() else "torch") if engine == "auto" else engine
        self.approx = approx or ApproxSettings()
        self.exact_if_short = exact_if_short
        self._train: torch.Tensor | None = None

    def fit(self, X: np.ndarray) -> KNNDistanceDetector:
        X = check_matrix(X, "KNNDistanceDetector.fit")
        if X.shape[0] < self.k + 1:
            raise ValueError(f"KNNDistanceDetector needs more than k={self.k} training rows, got {X.shape[0]}")
        self._train = torch.from_numpy(np.array(X, dtype=np.float32, copy=True))
        self._train_sq = (self._train * self._train).sum(dim=1)
        self.n_features_in_ = X.shape[1]
        if self.engine == "faiss":
            self._flat = require_faiss("the k-NN baseline's faiss engine", "detect.knn_backend").IndexFlatL2(X.shape[1])
            self._flat.add(self._train.numpy())
        self.search_report = {"backend": self.backend, "engine": self.engine, "objects": int(X.shape[0]), "k": self.k}
        if self.backend == "approx":
            self._lift = EuclideanAsCosine(self._train.numpy())
            self._index = ApproxIndex(self._lift.database, self.approx, setting="detect.knn_backend")
            self._calls = 0
            self.search_report |= self._index.report
        return self

    def score_samples(self, X: np.ndarray | None = None) -> np.ndarray:
        """Mean kNN distance per row (float64); ``X=None`` scores the training rows without themselves."""
        if self._train is None:
            raise RuntimeError("KNNDistanceDetector is not fitted; call fit(X) first")
        exclude_self = X is None
        if exclude_self:
            Q = self._train
        else:
            Q = torch.from_numpy(np.asarray(check_matrix(X, "KNNDistanceDetector.score_samples", self.n_features_in_),
                                            dtype=np.float32))
        faiss = require_faiss("the k-NN baseline's faiss engine", "detect.knn_backend") if self.engine == "faiss" else None
        old = torch.get_num_threads(), faiss.omp_get_max_threads() if faiss else None
        if self.threads is not None:
            torch.set_num_threads(self.threads)
            if faiss:
                faiss.omp_set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                if self.backend == "approx":
                    return self._approx_scores(Q, exclude_self)
                return self._exact_scores(Q, torch.arange(Q.shape[0]) if exclude_self else None)
        finally:
            if self.threads is not None:
                torch.set_num_threads(old[0])
                if faiss:
                    faiss.omp_set_num_threads(old[1])

    def _exact_neighbours(self, Q: torch.Tensor, self_rows: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact search: (mean distance to the k nearest training rows (float64), their rows);
        ``self_rows[i]`` is the training row query ``i`` is (left out), or None."""
        d2, found = (self._faiss_nearest if self.engine == "faiss" else self._torch_nearest)(Q, self_rows)
        return np.sqrt(d2).astype(np.float64).mean(axis=1), found

    def _faiss_nearest(self, Q: torch.Tensor, self_rows: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances (float32, clamped at 0 by faiss), rows) of the k nearest, by ``IndexFlatL2``."""
        d2, found = self._flat.search(np.ascontiguousarray(Q.numpy()), self.k + (self_rows is not None))
        if self_rows is None:
            return d2, found
        drop = found == self_rows.numpy()[:, None]
        drop[~drop.any(axis=1), -1] = True  # an exact duplicate outranked the row itself: drop the last instead
        keep = ~drop
        return d2[keep].reshape(-1, self.k), found[keep].reshape(-1, self.k)

    def _torch_nearest(self, Q: torch.Tensor, self_rows: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances (float32), rows) of the k nearest, in blocks of queries x reference rows."""
        d2 = np.empty((Q.shape[0], self.k), dtype=np.float32)
        found = np.empty((Q.shape[0], self.k), dtype=np.int64)
        n = self._train.shape[0]
        for s in range(0, Q.shape[0], self.chunk_size):
            q = Q[s : s + self.chunk_size]
            values, rows = [], []
            for r in range(0, n, REFERENCE_BLOCK):
                # |x|^2 - 2 q.x: the squared distance less the query's own |q|^2, which ranks alike
                part = torch.addmm(self._train_sq[r : r + REFERENCE_BLOCK], q, self._train[r : r + REFERENCE_BLOCK].T,
                                   alpha=-2.0)
                if self_rows is not None:
                    own = self_rows[s : s + q.shape[0]] - r
                    inside = torch.nonzero((own >= 0) & (own < part.shape[1])).squeeze(1)
                    part[inside, own[inside]] = float("inf")
                v, i = torch.topk(part, min(self.k, part.shape[1]), dim=1, largest=False)
                values.append(v)
                rows.append(i + r)
            v, pos = torch.topk(torch.cat(values, dim=1), self.k, dim=1, largest=False)
            d2[s : s + q.shape[0]] = (v + (q * q).sum(dim=1, keepdim=True)).clamp_(min=0.0).numpy()
            found[s : s + q.shape[0]] = torch.gather(torch.cat(rows, dim=1), 1, pos).numpy()
        return d2, found

    def _exact_scores(self, Q: torch.Tensor, self_rows: torch.Tensor | None) -> np.ndarray:
        return self._exact_neighbours(Q, self_rows)[0]

    def _approx_scores(self, Q: torch.Tensor, exclude_self: bool) -> np.ndarray:
        """Neighbours from the index, distances exact; rows the index found fewer than k for are scored exactly.

        The first call (the training rows' self-query, made right after fit by detect) fixes ``nprobe``;
        every call measures the recall on a seeded sample of its queries (:meth:`_check_recall`)."""
        queries = self._lift.queries(Q.numpy())
        self_rows = np.arange(Q.shape[0]) if exclude_self else None
        if "nprobe" not in self._index.report:
            self._index.tune(queries, self.k, self_rows)
            self.search_report |= self._index.report
            steps = self._index.report.get("tuning", {}).get("steps", [])
            if self.exact_if_short and steps and (reached := steps[-1]["recall"]) < self.approx.min_recall:
                self.backend = "exact"
                self.search_report |= {"backend": "exact", "fallback": (
                    f"the approximate index reached recall@{self.k} {reached} < {self.approx.min_recall} on its tuning "
                    f"sample even scanning every cell: exact search instead")}
                return self._exact_scores(Q, torch.arange(Q.shape[0]) if exclude_self else None)
        idx = self._index.search(queries, self.k, self_rows)[0]
        self._check_recall(Q, idx, exclude_self)
        out = np.empty(Q.shape[0], dtype=np.float64)
        for s in range(0, Q.shape[0], self.chunk_size):
            q, nb = Q[s : s + self.chunk_size], torch.from_numpy(np.maximum(idx[s : s + self.chunk_size], 0))
            d2 = (q * q).sum(dim=1, keepdim=True) + self._train_sq[nb] - 2.0 * torch.einsum("qd,qkd->qk", q, self._train[nb])
            out[s : s + q.shape[0]] = d2.clamp_(min=0.0).sqrt().double().mean(dim=1).numpy()
        if (short := np.flatnonzero((idx < 0).any(axis=1))).size:
            short_t = torch.from_numpy(short)
            out[short] = self._exact_scores(Q[short_t], short_t if exclude_self else None)
        return out

    def _check_recall(self, Q: torch.Tensor, found: np.ndarray, exclude_self: bool) -> None:
        """Recall@k against exact search on a seeded sample of this call's queries, summed over calls
        under ``recall`` (``self_query``: the training rows, ``scored_rows``: the rows scored later,
        :data:`RECALL_PER_CALL` of each call), the overall figure as ``recall_at_<k>``."""
        rng = np.random.default_rng([self.approx.seed, self._calls])
        self._calls += 1
        n = min(Q.shape[0], self.approx.recall_queries if exclude_self else RECALL_PER_CALL)
        rows = np.sort(rng.choice(Q.shape[0], n, replace=False))
        rows_t = torch.from_numpy(rows)
        truth = self._exact_neighbours(Q[rows_t], rows_t if exclude_self else None)[1]
        hits = sum(np.intersect1d(f[f >= 0], t).size for f, t in zip(found[rows], truth, strict=True))
        part = self.search_report.setdefault("recall", {}).setdefault(
            "self_query" if exclude_self else "scored_rows", {"queries": 0, "hits": 0})
        part["queries"] += n
        part["hits"] += int(hits)
        part[f"recall_at_{self.k}"] = round(part["hits"] / (part["queries"] * self.k), 4)
        parts = self.search_report["recall"].values()
        self.search_report[f"recall_at_{self.k}"] = round(
            sum(p["hits"] for p in parts) / (sum(p["queries"] for p in parts) * self.k), 4)
        self.search_report["min_recall"] = self.approx.min_recall


class EuclideanAsCosine:
    """Euclidean nearest neighbours of a reference set as a cosine search, so that one index
    (the analyze stage's, cosine only) serves the k-NN baseline too.

    With ``a = (x - c) / sigma`` (centred on the reference mean, scaled to unit mean square norm:
    neither changes which rows are nearest), a reference row is lifted to
    ``[a, -|a|^2 / 2, sqrt(R^2 - |a|^2 - |a|^4 / 4)]`` and a query to ``[a_q, 1, 0]``. Every lifted
    reference row has norm ``R``, so the cosine of a query with a row is
    ``(a_q . a - |a|^2 / 2) / (|q'| R)``, for a fixed query a decreasing function of
    ``|a_q - a|^2``: the most similar rows are the nearest ones, in the same order. Zero columns
    pad the width to a multiple of 4 (they change no cosine): the index's product quantiser then
    gets 4-dimensional sub-vectors (:func:`~fmb_engine.analyze.ann.code_size`) whatever ``D``.
    """

    def __init__(self, reference: np.ndarray):
        self.centre = reference.mean(axis=0, dtype=np.float64).astype(np.float32)
        a = reference - self.centre
        sq = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        self.scale = np.float32(np.sqrt(sq.mean()) or 1.0)
        a /= self.scale
        sq /= float(self.scale) ** 2
        norm2 = sq + sq**2 / 4
        self.width = -(-(a.shape[1] + 2) // 4) * 4
        self.database = np.zeros((a.shape[0], self.width), dtype=np.float32)
        self.database[:, : a.shape[1]] = a
        self.database[:, a.shape[1]] = -sq / 2
        self.database[:, a.shape[1] + 1] = np.sqrt(np.clip(norm2.max() - norm2, 0.0, None))

    def queries(self, X: np.ndarray) -> np.ndarray:
        """The lifted queries ``[a_q, 1, 0, ...]`` (float32)."""
        d = X.shape[1]
        out = np.zeros((X.shape[0], self.width), dtype=np.float32)
        np.subtract(X, self.centre, out=out[:, :d])
        out[:, :d] /= self.scale
        out[:, d] = 1.0
        return out


def detector_table(object_ids: Sequence | np.ndarray, score: np.ndarray, embedding_key: str) -> pd.DataFrame:
    """A baseline's scores in the flow table format (``log_prob = -score``; see module docstring)."""
    return anomaly_table(object_ids, -np.asarray(score, dtype=np.float64), embedding_key)
