"""The feature space re-ranking works in: an embedding reduced to a few whitened PCA components.

Why reduce: regressors and kernels over 768-1536 raw dimensions need far more labels than a triage session
gives, and their distances are dominated by noise directions. A whitened PCA keeps the main structure, makes
distances comparable across runs, and makes one re-rank at 10^6 objects a few matrix products. The PCA is
fitted on at most ``fit_rows`` rows drawn with ``seed`` (the only thing the seed changes here, and only when
the run has more rows than that), then applied to every row in float32 blocks, so memory beyond the input is
one block plus the (N, dims) result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmb_engine.errors import DataError

BLOCK = 65_536


@dataclass
class Features:
    dims: int = 32
    fit_rows: int = 20_000
    seed: int = 0

    def fit(self, X: np.ndarray) -> Features:
        """Learn the centre and the whitened principal axes from a seeded subsample of ``X`` (N, D)."""
        from sklearn.decomposition import PCA

        n, d = X.shape
        if n < 2:
            raise DataError(f"re-ranking needs at least 2 embedded objects, got {n}")
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(n, self.fit_rows, replace=False)) if n > self.fit_rows else np.arange(n)
        sample = np.asarray(X[rows], dtype=np.float32)
        bad = ~np.isfinite(sample).all(1)
        if bad.any():
            raise DataError(f"embedding row {int(rows[bad.argmax()])} has non-finite values; "
                            "drop such rows before re-ranking")
        dims = max(1, min(self.dims, d, rows.size - 1))
        solver = "randomized" if dims < min(d, rows.size) // 2 else "full"
        pca = PCA(n_components=dims, svd_solver=solver, random_state=self.seed).fit(sample)
        var = pca.explained_variance_.astype(np.float64)
        scale = np.where(var > 1e-12 * max(var.max(), 1e-300), 1.0 / np.sqrt(np.maximum(var, 1e-300)), 1.0)
        self.mean_ = pca.mean_.astype(np.float32)
        self.projection_ = (pca.components_.T * scale).astype(np.float32)  # (D, dims): rotate and whiten
        self.explained_variance_ratio_ = float(pca.explained_variance_ratio_.sum())
        self.fitted_rows_ = int(rows.size)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Z (N, dims) float32, block by block; a non-finite input row is an error naming the row."""
        n = X.shape[0]
        Z = np.empty((n, self.projection_.shape[1]), dtype=np.float32)
        for start in range(0, n, BLOCK):
            block = np.asarray(X[start:start + BLOCK], dtype=np.float32) - self.mean_
            Z[start:start + BLOCK] = block @ self.projection_
        bad = ~np.isfinite(Z).all(1)
        if bad.any():
            raise DataError(f"embedding row {int(bad.argmax())} has non-finite values; "
                            "drop such rows before re-ranking")
        return Z

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)
