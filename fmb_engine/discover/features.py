"""The feature space re-ranking works in: an embedding reduced to a few whitened PCA components.

Why reduce: regressors and kernels over 768-1536 raw dimensions need far more labels than a triage session
gives, and their distances are dominated by noise directions. A whitened PCA keeps the main structure, makes
distances comparable across runs, and makes one re-rank at 10^6 objects a few matrix products. The PCA is
fitted on at most ``fit_rows`` rows drawn with ``seed`` (documented in the run's manifest), then applied to
every row in blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 65_536


@dataclass
class Features:
    dims: int = 16
    fit_rows: int = 50_000
    seed: int = 0

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Z (N, min(dims, D, N-1)) float64 from the finite matrix X (N, D)."""
        from sklearn.decomposition import PCA

        n, d = X.shape
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(n, self.fit_rows, replace=False)) if n > self.fit_rows else np.arange(n)
        dims = max(1, min(self.dims, d, rows.size - 1))
        pca = PCA(n_components=dims, whiten=True, svd_solver="randomized" if dims < min(d, rows.size) // 2 else "full",
                  random_state=self.seed)
        pca.fit(np.asarray(X[rows], dtype=np.float64))
        self.explained_variance_ratio_ = float(pca.explained_variance_ratio_.sum())
        self.fitted_rows_ = int(rows.size)
        return np.concatenate([pca.transform(np.asarray(X[s:s + BLOCK], dtype=np.float64))
                               for s in range(0, n, BLOCK)])
