"""Baseline anomaly detectors to run beside the flow: IsolationForest and kNN distance.

Why: no unsupervised detector is best everywhere (ADBench; Bouman et al. 2024
find IsolationForest-type methods strongest on global anomalies and kNN on
local ones), so a flow's ranking should be compared with cheap, well
understood baselines on the same preprocessed matrix.

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

from fmb_engine.detect.preprocess import check_matrix
from fmb_engine.detect.tables import anomaly_table


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
    neighbour at distance 0). Exact search by chunked torch matmul:
    ``d^2 = |q|^2 + |x|^2 - 2 q.x`` (float32, clamped at 0) and ``topk``; memory
    is ``chunk_size x n_train`` floats at a time.
    """

    def __init__(self, k: int = 10, chunk_size: int = 2048, threads: int | None = None):
        self.k = _positive_int("k", k)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.threads = None if threads is None else _positive_int("threads", threads)
        self._train: torch.Tensor | None = None

    def fit(self, X: np.ndarray) -> KNNDistanceDetector:
        X = check_matrix(X, "KNNDistanceDetector.fit")
        if X.shape[0] < self.k + 1:
            raise ValueError(f"KNNDistanceDetector needs more than k={self.k} training rows, got {X.shape[0]}")
        self._train = torch.from_numpy(np.array(X, dtype=np.float32, copy=True))
        self._train_sq = (self._train * self._train).sum(dim=1)
        self.n_features_in_ = X.shape[1]
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
        out = np.empty(Q.shape[0], dtype=np.float64)
        old = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for s in range(0, Q.shape[0], self.chunk_size):
                    q = Q[s : s + self.chunk_size]
                    d2 = (q * q).sum(dim=1, keepdim=True) + self._train_sq[None, :] - 2.0 * (q @ self._train.T)
                    d2.clamp_(min=0.0)
                    if exclude_self:
                        rows = torch.arange(q.shape[0])
                        d2[rows, rows + s] = float("inf")
                    nearest = torch.topk(d2, self.k, dim=1, largest=False).values
                    out[s : s + q.shape[0]] = nearest.sqrt().double().mean(dim=1).numpy()
        finally:
            if self.threads is not None:
                torch.set_num_threads(old)
        return out


def detector_table(object_ids: Sequence | np.ndarray, score: np.ndarray, embedding_key: str) -> pd.DataFrame:
    """A baseline's scores in the flow table format (``log_prob = -score``; see module docstring)."""
    return anomaly_table(object_ids, -np.asarray(score, dtype=np.float64), embedding_key)
