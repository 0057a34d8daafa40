"""Embedding preprocessing before density estimation: PCA -> standardise -> clip.

Why: foundation-model embeddings have hundreds of strongly correlated
dimensions. A normalizing flow trained on 768 raw dimensions with ~40k rows
over-fits and is slow, so (like the reference pipeline) we reduce with PCA,
put every component on unit scale and clip extreme values so that a handful
of broken rows cannot dominate the flow's training loss.

Order (identical to the reference, parity item 8), all statistics fitted once
in :meth:`Preprocessor.fit` and reused by :meth:`Preprocessor.transform`:

0. rows with NaN/Inf are removed by the caller with :func:`finite_rows` (and
   counted there); :meth:`fit`/:meth:`transform` refuse non-finite input.
1. PCA, only when ``pca_components > 0`` and ``dim > pca_components``.
   The number of components is capped at ``min(n_rows - 1, dim)`` so fitting on
   fewer rows than requested components works (a centred matrix of ``n`` rows
   has rank at most ``n - 1``). Exact PCA: eigen-decomposition of the
   scatter matrix ``S = (X - mu)^T (X - mu)``, accumulated in float64 from
   float32 chunks (deterministic, no randomised solver, bounded memory);
   directions with variance below 1e-6 of the leading one are numerical noise
   and are dropped (``n_components_`` says how many were kept). Each
   component's sign is fixed so its largest-magnitude loading is positive.
   ``Z = (X - mu) W^T`` with ``W`` the top eigenvectors (rows).
2. Standardise per column: ``Z' = (Z - m) / s`` with ``m`` the column mean and
   ``s`` the unbiased column std (as the reference's ``torch.std``); a
   constant column (all values equal) gets ``s = 1`` instead of producing
   NaN/Inf.
3. Clip per column to ``m' +- k * s'`` with ``k = clip_sigma``. After step 2
   this is simply ``[-k, k]``; without standardisation the bounds are
   ``m +- k * s`` in the PCA space. ``clip_sigma = 0`` disables clipping.

:meth:`Preprocessor.apply` (scoring the rows outside the fit sample) is one float32 affine map per chunk,
``clip(X A + b)``, with ``A = W^T / s`` and ``b = -(mu W^T + m) / s`` computed once in float64:
steps 1 and 2 become a single matrix product and a bias, with no full-size temporary (the
scoring of 10^6 objects is dominated by this product and the flow). Folding the centring into
``b`` is exact in real arithmetic but in float32 loses about ``eps * |mu|`` to cancellation, so
it is only done when the PCA mean is no farther from the origin than the kept spread
(``|mu|^2 <= sum s^2``); otherwise each chunk is centred first (``clip((X - mu) A + b')``). Both
agree with the three separate steps (:meth:`Preprocessor.transform`, what the flows are trained
on) to float32 rounding: within the float32 dot-product error bound ``gamma_D |x|.|a|``, ~1e-5 to
1e-4 in standardised units depending on the CPU's BLAS kernel (tested against that bound).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

#: Rows per chunk of the chunked passes (bounds the size of float64 temporaries).
CHUNK_ROWS = 8192
_GRAM_ROWS = 2048


def finite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask, True for rows whose values are all finite.

    The caller drops the False rows (and reports ``(~mask).sum()``) before
    :meth:`Preprocessor.fit`; neither PCA nor a flow can use a NaN.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array (objects x features), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"expected a numeric array, got dtype {X.dtype}")
    if X.dtype.kind in "iu":
        return np.ones(X.shape[0], dtype=bool)
    mask = np.ones(X.shape[0], dtype=bool)
    # chunked so a (N, D) boolean temporary never exists for large inputs
    for start in range(0, X.shape[0], CHUNK_ROWS):
        mask[start : start + CHUNK_ROWS] = np.isfinite(X[start : start + CHUNK_ROWS]).all(axis=1)
    return mask


def check_matrix(X: Any, what: str, n_features: int | None = None, finite: bool = True) -> np.ndarray:
    """``X`` as a 2-D numeric array (with ``n_features`` columns, and finite values unless
    ``finite=False``: a caller that checks its own result instead), else ValueError."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (objects x features), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"{what}: expected a numeric array, got dtype {X.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{what}: expected {n_features} features (as fitted), got {X.shape[1]}")
    if finite:
        _refuse_nonfinite(what, int(np.count_nonzero(~finite_rows(X))))
    return X


#: What a non-finite mapped row may also mean (:meth:`Preprocessor.apply`, :meth:`Preprocessor.device_map`).
_MAP_NOTE = " (or overflow float32 in the PCA map)"


def _refuse_nonfinite(what: str, bad: int, note: str = "") -> None:
    if bad:
        raise ValueError(f"{what}: {bad} row(s) contain NaN/Inf{note}; drop them first with finite_rows(X)")


class Preprocessor:
    """PCA -> standardise -> clip, fitted once and re-applied (see module docstring).

    Parameters
    ----------
    pca_components:
        Target number of PCA components; ``0`` disables PCA. PCA only runs when
        the input has more features than this.
    clip_sigma:
        Clip at ``+- clip_sigma`` standard deviations; ``0`` disables clipping.
    standardize:
        Scale every column to zero mean and unit (unbiased) std.
    seed:
        Recorded for provenance. The PCA here is exact (eigh), so nothing random
        happens and the seed does not change the result.
    """

    def __init__(
        self,
        pca_components: int = 100,
        clip_sigma: float = 8.0,
        standardize: bool = True,
        seed: int = 42,
    ):
        if isinstance(pca_components, bool) or not isinstance(pca_components, (int, np.integer)):
            raise ValueError(f"pca_components must be an int >= 0 (0 = no PCA), got {pca_components!r}")
        if pca_components < 0:
            raise ValueError(f"pca_components must be >= 0 (0 = no PCA), got {pca_components}")
        if isinstance(clip_sigma, bool) or not isinstance(clip_sigma, (int, float, np.integer, np.floating)):
            raise ValueError(f"clip_sigma must be a number >= 0 (0 = no clipping), got {clip_sigma!r}")
        if not math.isfinite(float(clip_sigma)) or clip_sigma < 0:
            raise ValueError(f"clip_sigma must be finite and >= 0 (0 = no clipping), got {clip_sigma}")
        if not isinstance(standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be True or False, got {standardize!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.pca_components = int(pca_components)
        self.clip_sigma = float(clip_sigma)
        self.standardize = bool(standardize)
        self.seed = int(seed)
        self._fitted = False
        self._affine_cache: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, X: np.ndarray) -> Preprocessor:
        """Fit PCA, column statistics and clip bounds on ``X`` (finite rows only)."""
        self._fit(X)
        return self

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """``fit(X).transform(X)``, projecting ``X`` only once."""
        return self._scale_and_clip(self._fit(X))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted PCA, standardisation and clipping step by step; returns float32 (N, n_features_out_).

        The arithmetic the flows are trained on (and the reference's order); :meth:`apply` is the
        faster map for scoring many other rows."""
        self._require_fitted()
        X = check_matrix(X, "Preprocessor.transform", self.n_features_in_)
        return self._scale_and_clip(self._project(X))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """:meth:`transform` as one float32 affine map per chunk (module docstring): equal to it to
        float32 rounding, about 1.3x faster; what detect scores the rows outside the fit sample with."""
        self._require_fitted()
        pca = self.components_.shape[0] > 0
        X = check_matrix(X, "Preprocessor.apply", self.n_features_in_, finite=not pca)
        if not pca:
            return self._scale_and_clip(self._project(X))
        A, b, centre = self._affine()
        lo, hi = (v.astype(np.float32) for v in self.clip_bounds())
        out = np.empty((X.shape[0], A.shape[1]), dtype=np.float32)
        bad = 0
        for start in range(0, X.shape[0], CHUNK_ROWS):
            chunk = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float32)
            if centre is not None:
                chunk = chunk - centre
            z = out[start : start + chunk.shape[0]]
            with np.errstate(invalid="ignore", over="ignore"):  # a bad row is refused below, not warned about
                np.matmul(chunk, A, out=z)
                z += b
            # A NaN/Inf anywhere in a row makes its mapped row non-finite (Inf * a = +-Inf, Inf * 0 and
            # Inf - Inf = NaN), so the check runs on the k mapped columns, before the clip, instead of
            # the D input ones (768 -> 100: 8x fewer values; ~10 % of the scoring thread's time).
            bad += int(np.count_nonzero(~np.isfinite(z).all(axis=1)))
            if self.clip_sigma > 0:
                np.clip(z, lo, hi, out=z)
        _refuse_nonfinite("Preprocessor.apply", bad, _MAP_NOTE)
        return out

    def device_map(self, device: Any) -> Any:
        """:meth:`apply` as torch operations on ``device``: a function of a float32 tensor of raw rows
        there, returning the mapped rows there.

        Why: a flow on a GPU scores ~2-3 million rows/s, but the map's product on one CPU thread
        (153,600 flop per 768-d row) then bounds detect's scoring at ~330,000 rows/s (measured on an
        H200 node, docs/benchmarks.md "Scoring throughput"); on the GPU it costs nothing and only raw
        rows cross the bus. Same arithmetic as :meth:`apply` (same ``A``, ``b``, centre, clip), summed
        in the device's order: equal to it to float32 rounding, not bit for bit (nor is the flow on a
        GPU to the flow on a CPU). Rows whose mapped values are not finite are refused as in
        :meth:`apply`."""
        import torch

        self._require_fitted()
        if self.components_.shape[0] == 0:
            raise ValueError("Preprocessor.device_map needs a fitted PCA (pca_components > 0); use apply()")
        A, b, centre = (None if v is None else torch.from_numpy(v).to(device) for v in self._affine())
        lo, hi = (torch.from_numpy(v.astype(np.float32)).to(device) for v in self.clip_bounds())
        n_in, clip = self.n_features_in_, self.clip_sigma > 0

        def mapped(x: torch.Tensor) -> torch.Tensor:
            if x.ndim != 2 or x.shape[1] != n_in:
                raise ValueError(f"Preprocessor.device_map: expected {n_in} features (as fitted), got shape {tuple(x.shape)}")
            z = torch.addmm(b, x if centre is None else x - centre, A)
            _refuse_nonfinite("Preprocessor.device_map", int((~torch.isfinite(z).all(dim=1)).sum()), _MAP_NOTE)
            return torch.clamp(z, lo, hi) if clip else z

        return mapped

    def _affine(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(A, b, centre)`` of the fitted PCA + standardisation as ``(X - centre) A + b`` (module docstring);
        ``centre`` is None when the mean is folded into ``b``. Computed once, in float64, stored as float32."""
        if self._affine_cache is None:
            W, mu = self.components_.astype(np.float64), self.pca_mean_
            mean, scale = (self.col_mean_, self.col_scale_) if self.standardize else (0.0, 1.0)
            fold = float(mu @ mu) <= float(np.sum(self.col_scale_**2))
            bias = -(mu @ W.T + mean) / scale if fold else -mean / scale + np.zeros(W.shape[0])
            self._affine_cache = (np.ascontiguousarray((W.T / scale).astype(np.float32)), bias.astype(np.float32),
                                  None if fold else mu.astype(np.float32))
        return self._affine_cache

    def _fit(self, X: np.ndarray) -> np.ndarray:
        """Fit every statistic; returns the PCA-projected ``X`` (before scaling)."""
        X = check_matrix(X, "Preprocessor.fit")
        n, d = X.shape
        if n < 2:
            raise ValueError(f"Preprocessor.fit needs at least 2 rows, got {n}")
        self.n_features_in_ = d
        self.n_rows_fit_ = n
        self._affine_cache = None
        if self.pca_components > 0 and d > self.pca_components:
            k = min(self.pca_components, n - 1, d)
            self.pca_mean_, self.components_, self.explained_variance_ratio_ = _fit_pca(X, k)
        else:
            self.pca_mean_ = np.zeros(0, dtype=np.float64)
            self.components_ = np.zeros((0, d), dtype=np.float32)
            self.explained_variance_ratio_ = np.zeros(0, dtype=np.float64)
        Z = self._project(X)
        mean, std, constant = column_stats(Z)
        self.col_mean_ = mean
        self.col_scale_ = np.where(constant, 1.0, np.maximum(std, np.finfo(np.float64).tiny))
        self.n_constant_columns_ = int(constant.sum())
        self._fitted = True
        return Z

    def _scale_and_clip(self, Z: np.ndarray) -> np.ndarray:
        """Steps 2 and 3 in place on the projected float32 matrix ``Z``."""
        if self.standardize:
            Z -= self.col_mean_.astype(np.float32)
            Z /= self.col_scale_.astype(np.float32)
        if self.clip_sigma > 0:
            lo, hi = self.clip_bounds()
            np.clip(Z, lo.astype(np.float32), hi.astype(np.float32), out=Z)
        return Z

    def clip_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-column (low, high) applied in the output space (``+-inf`` when clipping is off)."""
        self._require_fitted()
        d = self.n_features_out_
        if self.clip_sigma <= 0:
            return np.full(d, -np.inf), np.full(d, np.inf)
        if self.standardize:
            return np.full(d, -self.clip_sigma), np.full(d, self.clip_sigma)
        return self.col_mean_ - self.clip_sigma * self.col_scale_, self.col_mean_ + self.clip_sigma * self.col_scale_

    @property
    def n_components_(self) -> int:
        """PCA components kept (0 when PCA did not run)."""
        self._require_fitted()
        return int(self.components_.shape[0])

    @property
    def n_features_out_(self) -> int:
        self._require_fitted()
        return self.n_components_ or self.n_features_in_

    def _project(self, X: np.ndarray) -> np.ndarray:
        """PCA projection ``(X - mu) W^T`` (or a float32 copy when PCA is off), chunked to bound memory."""
        if self.components_.shape[0] == 0:
            return np.array(X, dtype=np.float32, copy=True)
        Wt = np.ascontiguousarray(self.components_.T, dtype=np.float32)
        mu = self.pca_mean_.astype(np.float32)
        out = np.empty((X.shape[0], Wt.shape[1]), dtype=np.float32)
        for start in range(0, X.shape[0], CHUNK_ROWS):
            chunk = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float32) - mu
            np.matmul(chunk, Wt, out=out[start : start + chunk.shape[0]])
        return out

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("Preprocessor is not fitted; call fit(X) first or use from_state_dict")

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and fitted state as plain numpy arrays (safe to store in .npz/HDF5)."""
        self._require_fitted()
        return {
            "pca_components": np.asarray(self.pca_components, dtype=np.int64),
            "clip_sigma": np.asarray(self.clip_sigma, dtype=np.float64),
            "standardize": np.asarray(self.standardize, dtype=bool),
            "seed": np.asarray(self.seed, dtype=np.int64),
            "n_features_in": np.asarray(self.n_features_in_, dtype=np.int64),
            "n_rows_fit": np.asarray(self.n_rows_fit_, dtype=np.int64),
            "pca_mean": self.pca_mean_.copy(),
            "components": self.components_.copy(),
            "explained_variance_ratio": self.explained_variance_ratio_.copy(),
            "col_mean": self.col_mean_.copy(),
            "col_scale": self.col_scale_.copy(),
            "n_constant_columns": np.asarray(self.n_constant_columns_, dtype=np.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`state_dict` output."""
        missing = {
            "pca_components", "clip_sigma", "standardize", "seed", "n_features_in", "pca_mean",
            "components", "col_mean", "col_scale",
        } - set(state)
        if missing:
            raise ValueError(f"Preprocessor state is missing key(s): {', '.join(sorted(missing))}")
        obj = cls(
            pca_components=int(state["pca_components"]),
            clip_sigma=float(state["clip_sigma"]),
            standardize=bool(state["standardize"]),
            seed=int(state["seed"]),
        )
        obj.n_features_in_ = int(state["n_features_in"])
        obj.n_rows_fit_ = int(state.get("n_rows_fit", -1))
        obj.pca_mean_ = np.asarray(state["pca_mean"], dtype=np.float64)
        obj.components_ = np.asarray(state["components"], dtype=np.float32).reshape(-1, obj.n_features_in_)
        obj.explained_variance_ratio_ = np.asarray(
            state.get("explained_variance_ratio", np.zeros(obj.components_.shape[0])), dtype=np.float64
        )
        obj.col_mean_ = np.asarray(state["col_mean"], dtype=np.float64)
        obj.col_scale_ = np.asarray(state["col_scale"], dtype=np.float64)
        obj.n_constant_columns_ = int(state.get("n_constant_columns", 0))
        if obj.col_mean_.shape != obj.col_scale_.shape or obj.col_mean_.shape[0] != (
            obj.components_.shape[0] or obj.n_features_in_
        ):
            raise ValueError("Preprocessor state is inconsistent: column statistics do not match the output width")
        obj._fitted = True
        return obj


def _fit_pca(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-``k`` PCA of ``X`` -> (mean float64 (D,), components float32 (k', D), explained ratio (k',)).

    Two passes over the rows: the mean in float64, then the scatter matrix
    ``S = sum_chunks (X_c - mu)^T (X_c - mu)``; each chunk product runs in
    float32 BLAS (fast) over at most ``_GRAM_ROWS`` rows and is accumulated in
    float64 (keeps the rounding error ~1e-6 relative). The top-``k`` eigenpairs
    come from LAPACK ``syevr`` (subset by index). Components whose variance is
    below ``1e-6`` of the leading one are numerical noise (e.g. duplicated rows,
    rank-deficient inputs) and are dropped, so ``k' <= k``.
    """
    n, d = X.shape
    mean = np.zeros(d, dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        mean += X[start : start + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean /= n
    mu = mean.astype(np.float32)
    scatter = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, _GRAM_ROWS):
        c = np.asarray(X[start : start + _GRAM_ROWS], dtype=np.float32) - mu
        scatter += c.T @ c
    total = float(np.trace(scatter))
    evals, evecs = scipy.linalg.eigh(scatter, subset_by_index=[d - k, d - 1], driver="evr")
    evals = np.clip(evals[::-1], 0.0, None)  # descending
    evecs = evecs[:, ::-1].T.copy()  # (k, D), rows = components
    keep = evals > (evals[0] * 1e-6 if evals[0] > 0 else np.inf)
    evals, evecs = evals[keep], evecs[keep]
    if evecs.shape[0] == 0:
        raise ValueError("PCA found no direction with non-zero variance: every row is identical")
    # deterministic signs: the largest |loading| of each component is positive
    idx = np.abs(evecs).argmax(axis=1)
    signs = np.sign(evecs[np.arange(evecs.shape[0]), idx])
    signs[signs == 0] = 1.0
    evecs *= signs[:, None]
    ratio = evals / total if total > 0 else np.zeros_like(evals)
    return mean, evecs.astype(np.float32), ratio


def column_stats(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column mean, unbiased std (float64) and a mask of exactly constant columns."""
    n = Z.shape[0]
    mean = Z.mean(axis=0, dtype=np.float64)
    var = np.zeros(Z.shape[1], dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        c = Z[start : start + CHUNK_ROWS].astype(np.float64) - mean
        var += np.einsum("ij,ij->j", c, c)
    std = np.sqrt(var / max(n - 1, 1))
    constant = (Z.max(axis=0) == Z.min(axis=0)) | (std == 0)
    return mean, std, constant
