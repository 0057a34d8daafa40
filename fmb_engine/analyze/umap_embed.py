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

from fmb_engine.workspace import atomic_path

Projector = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


def umap_projector(x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    import umap  # heavy: numba JIT on first call

    reducer = umap.UMAP(n_components=2, n_neighbors=min(int(params["n_neighbors"]), max(2, len(x) - 1)),
                        min_dist=float(params["min_dist"]), metric=str(params["metric"]),
                        random_state=int(params["seed"]), n_jobs=1)
    return np.asarray(reducer.fit_transform(np.asarray(x, np.float32)), dtype=np.float32)


def digest(x: np.ndarray, params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float32)
    h.update(json.dumps({"shape": list(x.shape), **params}, sort_keys=True).encode())
    h.update(x.tobytes())
    return h.hexdigest()


def project(x: np.ndarray, params: dict[str, Any], cache_dir: Path | None = None,
            projector: Projector | None = None) -> tuple[np.ndarray, str, bool]:
    """(coords (n, 2), digest, cached?) — reuses ``cache_dir/<digest>.npy`` when present."""
    key = digest(x, params)
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.npy"
    if path is not None and path.is_file():
        return np.load(path), key, True
    coords = (projector or umap_projector)(x, params)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, coords)
    return coords, key, False


__all__ = ["Projector", "digest", "project", "umap_projector"]
