"""Seeded 2-D UMAP projections, cached by a digest of the input matrix and the parameters.

The ``projector`` is injectable (a callable ``(x, params) -> (n, 2)``) so the caching
logic can be tested without UMAP's ~35 s numba compilation.
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


def distance_path(n_rows: int, metric: str) -> str:
    """How UMAP gets its distances: ``precomputed`` (small data, vectorised metric) or ``umap``."""
    return "precomputed" if n_rows < SMALL_DATA and metric in VECTORISED_METRICS else "umap"


def umap_projector(x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    import warnings

    import umap  # heavy: numba JIT on first call

    x = np.asarray(x, np.float32)
    metric = str(params["metric"])
    data = x
    if distance_path(len(x), metric) == "precomputed":
        from sklearn.metrics import pairwise_distances

        data, metric = pairwise_distances(x, metric=metric), "precomputed"
    reducer = umap.UMAP(n_components=2, n_neighbors=min(int(params["n_neighbors"]), max(2, len(x) - 1)),
                        min_dist=float(params["min_dist"]), metric=metric,
                        random_state=int(params["seed"]), n_jobs=1)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state", "precomputed: no inverse_transform"
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(reducer.fit_transform(data), dtype=np.float32)


def digest(x: np.ndarray, params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float32)
    h.update(json.dumps({"shape": list(x.shape), **params}, sort_keys=True).encode())
    h.update(x.tobytes())
    return h.hexdigest()


def project(x: np.ndarray, params: dict[str, Any], cache_dir: Path | None = None,
            projector: Projector | None = None) -> tuple[np.ndarray, str, bool]:
    """(coords (n, 2), digest, cached?) — reuses ``cache_dir/<digest>.npy`` when present."""
    key = digest(x, {**params, "distances": distance_path(len(x), str(params.get("metric", "")))})
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.npy"
    if path is not None and path.is_file():
        return np.load(path), key, True
    coords = (projector or umap_projector)(x, params)
    if path is not None:
        make_dirs(path.parent)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, coords)
    return coords, key, False


__all__ = ["Projector", "digest", "distance_path", "project", "umap_projector"]
