"""The feature space re-ranking works in: an embedding reduced to a few whitened PCA components.

Why reduce: regressors and kernels over 768-1536 raw dimensions need far more labels than a triage session
gives, and their distances are dominated by noise directions. A whitened PCA keeps the main structure, makes
distances comparable across runs, and makes one re-rank at 10^6 objects a few matrix products. The PCA is
fitted on at most ``fit_rows`` rows drawn with ``seed`` (the only thing the seed changes here, and only when
the run has more rows than that), then applied to every row in float32 blocks, so memory beyond the input is
one block plus the (N, dims) result.

``fit`` and ``transform`` take an (N, D) array, or any matrix read on demand that has ``shape`` and answers
``X[rows]`` (increasing row positions) and ``X[start:stop]`` with float32 rows, such as
:class:`~fmb_engine.discover.rows.EmbeddingRows` over an embedding file: then only the fitted sample and one
block are in memory, and the arithmetic is the same as on the array, so Z is the same bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmb_engine.errors import DataError

BLOCK = 65_536


def orthonormal(Y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of the tall ``Y`` by Cholesky QR.

    The small Gram matrix is factored in float64; only matrix products touch the tall matrix. (LAPACK's
    threaded QR of a tall float32 matrix took 0.4-1.3 s on a busy 2-core machine, this takes 0.02 s.) When
    the float32 Gram matrix is not positive definite (columns whose scales differ by orders of magnitude),
    a Householder QR in float64 gives the basis instead.
    """
    gram = (Y.T @ Y).astype(np.float64)
    gram[np.diag_indices_from(gram)] += 1e-10 * max(np.trace(gram), 1e-300)
    try:
        factor = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:  # columns of very different scales: the float32 Gram lost definiteness
        return np.linalg.qr(Y.astype(np.float64))[0].astype(Y.dtype)
    return Y @ np.linalg.inv(factor.T).astype(Y.dtype)


def principal_axes(A: np.ndarray, k: int, rng: np.random.Generator, oversample: int = 10,
                   power_iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading singular values (float64) and right singular vectors (D, k) of the centred ``A``."""
    width = min(k + oversample, *A.shape)
    Q = orthonormal(A @ rng.standard_normal((A.shape[1], width)).astype(A.dtype))
    for _ in range(power_iterations):
        Q = orthonormal(A @ orthonormal(A.T @ Q))
    _, singular, vt = np.linalg.svd((Q.T @ A).astype(np.float64), full_matrices=False)
    return singular[:k], vt[:k].T


@dataclass
class Features:
    dims: int = 32
    fit_rows: int = 10_000
    seed: int = 0

    def fit(self, X: np.ndarray | Any) -> Features:
        """Learn the centre and the whitened principal axes from a seeded subsample of ``X`` (N, D); only
        those rows are read.

        A randomized SVD with a few power iterations (Halko et al. 2011): the leading components of a
        768-dim embedding come out as from a full PCA at a fraction of its cost.
        """
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
        self.mean_ = sample.mean(0)
        sample -= self.mean_
        dims = max(1, min(self.dims, d, rows.size - 1))
        singular, axes = principal_axes(sample, dims, rng)
        var = singular ** 2 / (rows.size - 1)
        total = float(np.einsum("ij,ij->", sample, sample, dtype=np.float64)) / (rows.size - 1)
        scale = np.where(var > 1e-12 * max(var.max(), 1e-300), 1.0 / np.sqrt(np.maximum(var, 1e-300)), 1.0)
        self.projection_ = (axes * scale).astype(np.float32)  # (D, dims): rotate and whiten
        self.explained_variance_ratio_ = float(var.sum() / total) if total > 0 else 1.0
        self.fitted_rows_ = int(rows.size)
        return self

    def transform(self, X: np.ndarray | Any) -> np.ndarray:
        """Z (N, dims) float32, block by block; a non-finite input row is an error naming the row."""
        n = X.shape[0]
        Z = np.empty((n, self.projection_.shape[1]), dtype=np.float32)
        offset = self.mean_ @ self.projection_  # centring after the product: no centred copy of X
        for start in range(0, n, BLOCK):
            # the block is a temporary: freed before the next one is read (one block in memory, not two)
            np.matmul(np.asarray(X[start:start + BLOCK], dtype=np.float32), self.projection_,
                      out=Z[start:start + BLOCK])
            Z[start:start + BLOCK] -= offset
        bad = ~np.isfinite(Z).all(1)
        if bad.any():
            raise DataError(f"embedding row {int(bad.argmax())} has non-finite values; "
                            "drop such rows before re-ranking")
        return Z

    def fit_transform(self, X: np.ndarray | Any) -> np.ndarray:
        return self.fit(X).transform(X)
