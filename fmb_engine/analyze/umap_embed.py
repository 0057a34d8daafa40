"""Seeded 2-D UMAP projections, cached by a digest of the input matrix and the parameters.

At scale UMAP is fitted on a seeded sample of at most ``fit_points`` objects and every other
object is placed by the fitted model's ``transform``, in chunks of ``chunk`` objects, so each
object gets a coordinate while the fit's memory and time stay those of the sample. The
``projector`` is injectable (a callable ``(x, params) -> (n, 2)``) so the caching logic can be
tested without UMAP's ~35 s numba compilation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.workspace import atomic_path, make_dirs

Projector = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


#: Below this many rows UMAP computes every pairwise distance itself, calling its numba metric
#: once per pair from Python through scikit-learn (about 8 s for 2,000 points). For the metrics
#: scikit-learn vectorises we hand UMAP that matrix instead (``metric="precomputed"``): the same
#: neighbour graph (tested), weights equal to ~1e-5, 4-7x faster. UMAP's own threshold.
SMALL_DATA = 4096
VECTORISED_METRICS = frozenset({"euclidean", "l2", "cosine", "manhattan", "l1", "cityblock"})


#: Most objects one UMAP fit may take on one node (``analyze.umap_max_points``). The fit holds
#: the sample, its k-NN graph and a search index, and its time grows faster than the sample
#: (measured in docs/benchmarks.md, "Analyses at scale"); beyond this, transform the rest instead.
FIT_LIMIT = 500_000
#: Objects placed per ``transform`` call: bounds the memory of placing 10^6+ objects. Part of the
#: cache digest, since UMAP's seeded transform draws its random numbers per call.
TRANSFORM_CHUNK = 50_000


def fit_rows(n_rows: int, fit_points: int, seed: int) -> np.ndarray:
    """Sorted rows UMAP is fitted on: all of them, or a seeded sample of ``fit_points``."""
    if n_rows <= fit_points:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, fit_points, replace=False))


def distance_path(n_rows: int, metric: str, transformed: bool = False) -> str:
    """How UMAP gets its distances: ``precomputed`` (small data, vectorised metric, nothing to
    transform: a precomputed fit cannot place new objects) or ``umap``."""
    small = n_rows < SMALL_DATA and metric in VECTORISED_METRICS
    return "precomputed" if small and not transformed else "umap"


def umap_projector(x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Coordinates of every row of ``x``: fitted on ``fit_rows``, the others transformed in chunks."""
    import warnings

    import umap  # heavy: numba JIT on first call

    x = np.asarray(x, np.float32)
    fit = fit_rows(len(x), int(params.get("fit_points", len(x))), int(params["seed"]))
    rest = np.setdiff1d(np.arange(len(x)), fit, assume_unique=True)
    metric = str(params["metric"])
    data = x[fit]
    if distance_path(len(fit), metric, transformed=len(rest) > 0) == "precomputed":
        from sklearn.metrics import pairwise_distances

        data, metric = pairwise_distances(data, metric=metric), "precomputed"
    reducer = umap.UMAP(n_components=2, n_neighbors=min(int(params["n_neighbors"]), max(2, len(fit) - 1)),
                        min_dist=float(params["min_dist"]), metric=metric,
                        random_state=int(params["seed"]), transform_seed=int(params["seed"]), n_jobs=1)
    coords = np.empty((len(x), 2), dtype=np.float32)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state", "precomputed: no inverse_transform"
        warnings.simplefilter("ignore", UserWarning)
        coords[fit] = reducer.fit_transform(data)
        chunk = int(params.get("chunk", TRANSFORM_CHUNK))
        for start in range(0, len(rest), chunk):
            rows = rest[start:start + chunk]
            coords[rows] = reducer.transform(x[rows])
    return coords


def digest(x: np.ndarray, params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float32)
    h.update(json.dumps({"shape": list(x.shape), **params}, sort_keys=True).encode())
    h.update(x.tobytes())
    return h.hexdigest()


def project(x: np.ndarray, params: dict[str, Any], cache_dir: Path | None = None,
            projector: Projector | None = None) -> tuple[np.ndarray, str, bool]:
    """(coords (n, 2), digest, cached?) — reuses ``cache_dir/<digest>.npy`` when present."""
    fitted = min(len(x), int(params.get("fit_points", len(x))))
    key = digest(x, {**params, "distances": distance_path(fitted, str(params.get("metric", "")), fitted < len(x))})
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.npy"
    if path is not None and path.is_file():
        return np.load(path), key, True
    coords = (projector or umap_projector)(x, params)
    if path is not None:
        make_dirs(path.parent)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, coords)
    return coords, key, False


__all__ = ["FIT_LIMIT", "TRANSFORM_CHUNK", "Projector", "digest", "distance_path", "fit_rows", "project", "umap_projector"]
