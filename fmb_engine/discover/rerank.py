"""One re-rank: embedding + base score + labels -> a new score for every object, with what it reflects.

This is the entry the ``discover rerank`` stage and the explorer call: it checks the inputs, reduces the
embedding to :class:`~fmb_engine.discover.features.Features`, fits the chosen strategy on the labelled rows
and scores every row, timing each step. Same inputs + seed -> same scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fmb_engine.discover.features import Features
from fmb_engine.discover.strategies import DEFAULT, STRATEGIES, make
from fmb_engine.errors import ConfigError, DataError


@dataclass
class Reranked:
    score: np.ndarray  # (N,) float64, higher = inspect first
    strategy: str  # the resolved name (``default`` -> its strategy)
    params: dict  # the strategy's parameters as used
    seed: int
    labels: int  # labelled rows the order reflects
    relevant: int  # of which relevance >= 0.5
    fallback: str | None  # why the base order was kept, or None
    notes: list[str] = field(default_factory=list)
    features: dict = field(default_factory=dict)  # dims, fitted rows, explained variance
    seconds: dict = field(default_factory=dict)  # features, fit, score


def rerank(X: np.ndarray, base: np.ndarray, rows: np.ndarray, relevance: np.ndarray, strategy: str = "default",
           seed: int = 0, params: dict | None = None, features: Features | None = None,
           threads: int | None = 1) -> Reranked:
    """Re-rank the N objects of ``X`` (N, D) finite embeddings with base score ``base`` (N,).

    ``rows`` (L,) are the labelled row indices and ``relevance`` (L,) their relevance in [0, 1]
    (:func:`~fmb_engine.discover.relevance.targets` gives both). ``features`` defaults to
    ``Features(seed=seed)``. ``threads`` caps the BLAS pool while it runs (None: the library default):
    one thread was 3-4x faster than two on the shared 2-core machine (docs/benchmarks.md), and leaves a
    core to the explorer's event loop.
    """
    from threadpoolctl import threadpool_limits

    check_strategy(strategy)
    if len(X.shape) != 2:
        raise DataError(f"the embedding must be a matrix (objects x dims), got shape {tuple(X.shape)}")
    features = features or Features(seed=seed)
    with threadpool_limits(threads):
        t0 = time.perf_counter()
        Z = features.fit_transform(X)
        return _rerank(Z, base, rows, relevance, strategy, seed, params, features, time.perf_counter() - t0)


def rerank_features(Z: np.ndarray, base: np.ndarray, rows: np.ndarray, relevance: np.ndarray, features: Features,
                    strategy: str = "default", seed: int = 0, params: dict | None = None,
                    threads: int | None = 1, seconds: float = 0.0) -> Reranked:
    """:func:`rerank` on features computed already: ``Z`` (N, dims) from the fitted ``features``, which took
    ``seconds`` (recorded). The stage reduces an embedding file block by block itself, then calls this."""
    from threadpoolctl import threadpool_limits

    check_strategy(strategy)
    with threadpool_limits(threads):
        return _rerank(Z, base, rows, relevance, strategy, seed, params, features, seconds)


def check_strategy(strategy: str) -> str:
    """The strategy's resolved name; an unknown one is a ConfigError listing the choices."""
    name = DEFAULT if strategy == "default" else strategy
    if name not in STRATEGIES:
        raise ConfigError(f"unknown discovery strategy {strategy!r}; choose from default, {', '.join(STRATEGIES)}")
    return name


def _rerank(Z, base, rows, relevance, strategy, seed, params, features, feature_seconds) -> Reranked:
    name = check_strategy(strategy)
    n = Z.shape[0]
    base = np.asarray(base, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    relevance = np.asarray(relevance, dtype=np.float64)
    if base.shape != (n,):
        raise DataError(f"the base score has {base.size} values for {n} embedded objects")
    if rows.shape != relevance.shape or rows.ndim != 1:
        raise DataError(f"{rows.size} labelled rows but {relevance.size} relevance values")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise DataError(f"labelled row {int(rows[(rows < 0) | (rows >= n)][0])} is outside the {n} embedded objects")
    if np.unique(rows).size != rows.size:
        raise DataError("a labelled row appears twice: give one relevance per object")
    if rows.size and not (np.isfinite(relevance).all() and relevance.min() >= 0 and relevance.max() <= 1):
        raise DataError("relevance values must lie in [0, 1]")
    t1 = time.perf_counter()
    model = make(name, seed=seed, **(params or {})).fit(Z, base, rows, relevance)
    t2 = time.perf_counter()
    score = model.score(Z, base)
    t3 = time.perf_counter()
    seconds = {"features": feature_seconds, "fit": t2 - t1, "score": t3 - t2}
    used = {k: getattr(model, k) for k in model.__dataclass_fields__ if k not in ("name", "fallback", "notes")}
    return Reranked(score=score, strategy=name, params=used, seed=seed, labels=int(rows.size),
                    relevant=int((relevance >= 0.5).sum()), fallback=getattr(model, "fallback", None),
                    notes=list(getattr(model, "notes", [])),
                    features={"dims": int(Z.shape[1]), "fitted_rows": features.fitted_rows_,
                              "explained_variance": features.explained_variance_ratio_},
                    seconds=seconds)
