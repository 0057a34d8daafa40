"""Cross-modal mismatch: does an object's spectrum embedding fit its image embedding?

Why: an object whose two modalities disagree (a lensed source, a blend, an
AGN whose spectrum is not what its morphology predicts, a mis-matched pair) is
interesting even when each modality alone looks ordinary. The reference system
uses the cosine between the image and spectrum vectors for this, which is only
meaningful when the embedder puts both modalities in *one* space (contrastive
models such as AstroCLIP). For unaligned embedders the cosine between two
unrelated coordinate systems is noise (or undefined when the widths differ),
so we learn the relation instead:

* ``aligned=True``  -> :func:`cosine_mismatch` (method ``"cosine"``)
  ``cos_i = <a_i, b_i> / (|a_i| |b_i|)`` (0 when a norm is 0); rank 1 = lowest
  cosine; ``mismatch_score = 1 - cos``.
* ``aligned=False`` -> :class:`LearnedMismatch` (method ``"ridge_residual"``),
  a ridge map from the standardised image embedding to the standardised
  spectrum embedding, scored out-of-fold; rank 1 = largest residual.

:func:`mismatch_scores` dispatches on the embedder's declared ``aligned`` flag
and records the method; a cosine between unaligned spaces is never computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg

from fmb_engine.detect.preprocess import check_matrix
from fmb_engine.detect.tables import as_object_ids, check_scores, rank_ascending, rank_descending

METHODS: tuple[str, ...] = ("cosine", "ridge_residual")
MISMATCH_COLUMNS: tuple[str, ...] = ("object_id", "cosine_similarity", "mismatch_score", "method", "rank")

_CHUNK_ROWS = 8192
_GRAM_ROWS = 2048
#: floor of the per-dimension residual std (in standardised units) so a
#: dimension the map predicts almost perfectly cannot blow the score up.
_MIN_RESIDUAL_STD = 1e-3


@dataclass(frozen=True)
class MismatchResult:
    """Per-object mismatch for one model.

    ``native``: the method's own score (cosine similarity for ``"cosine"``,
    residual score for ``"ridge_residual"``); ``score``: higher = more
    mismatched for every method (``1 - cos`` or the residual score);
    ``rank``: 1 = most mismatched.
    """

    method: str
    native: np.ndarray
    score: np.ndarray
    rank: np.ndarray

    def table(self, object_ids: Sequence | np.ndarray) -> pd.DataFrame:
        return mismatch_table(object_ids, self.native, self.method)


def _check_pair(img: Any, spec: Any, same_width: bool) -> tuple[np.ndarray, np.ndarray]:
    img, spec = check_matrix(img, "img"), check_matrix(spec, "spec")
    if img.shape[0] != spec.shape[0]:
        raise ValueError(f"img has {img.shape[0]} rows but spec has {spec.shape[0]}; rows must be the same objects")
    if same_width and img.shape[1] != spec.shape[1]:
        raise ValueError(
            f"cosine needs one shared space but img has {img.shape[1]} features and spec {spec.shape[1]}; "
            "use the learned mismatch (aligned=False) for unaligned embedders"
        )
    return img, spec


def cosine_similarity_rows(img: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64; 0 where either vector has norm 0."""
    img, spec = _check_pair(img, spec, same_width=True)
    out = np.empty(img.shape[0], dtype=np.float64)
    for s in range(0, img.shape[0], _CHUNK_ROWS):
        a = img[s : s + _CHUNK_ROWS].astype(np.float64)
        b = spec[s : s + _CHUNK_ROWS].astype(np.float64)
        dot = np.einsum("ij,ij->i", a, b)
        norm = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", b, b))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + a.shape[0]] = np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), 0.0)
    return np.clip(out, -1.0, 1.0)


def cosine_mismatch(img: np.ndarray, spec: np.ndarray) -> MismatchResult:
    """Cosine mismatch for aligned embedders: rank 1 = lowest cosine (ties: object order)."""
    cos = cosine_similarity_rows(img, spec)
    return MismatchResult("cosine", cos, 1.0 - cos, rank_ascending(cos))


# ------------------------------------------------------------------ ridge
@dataclass
class _Moments:
    """Sufficient statistics of (X, Y) over a set of rows, after a global shift."""

    n: int
    sx: np.ndarray  # (p,)
    sy: np.ndarray  # (q,)
    gxx: np.ndarray  # (p, p)
    gxy: np.ndarray  # (p, q)
    syy: np.ndarray  # (q,) sum of squares per column

    def __sub__(self, other: _Moments) -> _Moments:
        return _Moments(self.n - other.n, self.sx - other.sx, self.sy - other.sy,
                        self.gxx - other.gxx, self.gxy - other.gxy, self.syy - other.syy)

    def __add__(self, other: _Moments) -> _Moments:
        return _Moments(self.n + other.n, self.sx + other.sx, self.sy + other.sy,
                        self.gxx + other.gxx, self.gxy + other.gxy, self.syy + other.syy)


def _moments(X: np.ndarray, Y: np.ndarray, rows: np.ndarray, x0: np.ndarray, y0: np.ndarray) -> _Moments:
    """Moments of ``X[rows] - x0`` and ``Y[rows] - y0``: float32 chunk products, float64 sums."""
    p, q = X.shape[1], Y.shape[1]
    m = _Moments(0, np.zeros(p), np.zeros(q), np.zeros((p, p)), np.zeros((p, q)), np.zeros(q))
    for s in range(0, rows.shape[0], _GRAM_ROWS):
        idx = rows[s : s + _GRAM_ROWS]
        x = X[idx].astype(np.float32) - x0
        y = Y[idx].astype(np.float32) - y0
        m.n += idx.shape[0]
        m.sx += x.sum(axis=0, dtype=np.float64)
        m.sy += y.sum(axis=0, dtype=np.float64)
        m.gxx += x.T @ x
        m.gxy += x.T @ y
        m.syy += np.einsum("ij,ij->j", y, y, dtype=np.float64)
    return m


def _solve(m: _Moments, alpha: float, x0: np.ndarray, y0: np.ndarray) -> dict[str, np.ndarray]:
    """Ridge map and residual scale from moments (see :class:`LearnedMismatch`)."""
    n = m.n
    mux, muy = m.sx / n, m.sy / n
    cxx = m.gxx - n * np.outer(mux, mux)  # centred scatter
    cxy = m.gxy - n * np.outer(mux, muy)
    cyy = np.maximum(m.syy - n * muy**2, 0.0)
    dx = np.maximum(np.diag(cxx), 0.0)
    sx = np.sqrt(dx / (n - 1))
    sy = np.sqrt(cyy / (n - 1))
    sx = np.where(sx > 0, sx, 1.0)
    sy = np.where(sy > 0, sy, 1.0)
    a = cxx / np.outer(sx, sx) / n  # Xs^T Xs / n
    b = cxy / np.outer(sx, sy) / n  # Xs^T Ys / n
    yy = cyy / sy**2 / n  # diag(Ys^T Ys) / n
    a[np.diag_indices_from(a)] += alpha
    W = scipy.linalg.solve(a, b, assume_a="pos")  # (p, q)
    # training residual variance per output dim: diag(Ys'Ys - 2 W'Xs'Ys + W'Xs'Xs W)/n
    a[np.diag_indices_from(a)] -= alpha
    rss = yy - 2.0 * np.einsum("ij,ij->j", W, b) + np.einsum("ij,ij->j", W, a @ W)
    tau = np.maximum(np.sqrt(np.maximum(rss, 0.0)), _MIN_RESIDUAL_STD)
    return {
        "x_mean": mux + x0, "x_scale": sx, "y_mean": muy + y0, "y_scale": sy,
        "W": W, "residual_scale": tau,
    }


def _residual_score(X: np.ndarray, Y: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """``sqrt(mean_j (r_j / tau_j)^2)`` with ``r = Ys - Xs W``, chunked.

    Folded into one float32 matmul per chunk:
    ``r / tau = (Y - mu_y) * u - (X - mu_x) @ A`` with
    ``A = W / (s_x tau^T)`` and ``u = 1 / (s_y tau)``.
    """
    tau = params["residual_scale"]
    A = (params["W"] / params["x_scale"][:, None] / tau[None, :]).astype(np.float32)
    u = (1.0 / (params["y_scale"] * tau)).astype(np.float32)
    mx = params["x_mean"].astype(np.float32)
    my = params["y_mean"].astype(np.float32)
    q = A.shape[1]
    out = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], _CHUNK_ROWS):
        x = np.asarray(X[s : s + _CHUNK_ROWS], dtype=np.float32) - mx
        r = np.asarray(Y[s : s + _CHUNK_ROWS], dtype=np.float32) - my
        r *= u
        r -= x @ A
        out[s : s + r.shape[0]] = np.einsum("ij,ij->i", r, r, dtype=np.float64) / q
    return np.sqrt(out)


class LearnedMismatch:
    """Image -> spectrum ridge map; mismatch = normalised residual norm (higher = more mismatched).

    With column-standardised embeddings ``Xs`` (image, ``p`` dims) and ``Ys``
    (spectrum, ``q`` dims), fitted on a set of rows ``T`` (``n`` rows):

    * ``W = (Xs^T Xs / n + alpha I)^-1 Xs^T Ys / n``  (ridge, penalty per sample,
      so ``alpha`` does not depend on ``n``; it shrinks low-variance input
      directions, acting like a soft PCA)
    * ``tau_j^2 = mean_T (Ys - Xs W)_j^2`` (training residual variance per
      spectrum dim, floored at ``1e-3``)
    * ``score(x, y) = sqrt( mean_j ((y_s - x_s W)_j / tau_j)^2 )``, ~1 for a
      typical object when mismatched objects are rare (they inflate ``tau``,
      which rescales every score alike and leaves the ranking nearly intact).

    :meth:`fit_score` scores every row with a map fitted on the other
    ``n_folds - 1`` folds (no object scores itself). Everything is computed from
    per-fold sufficient statistics (sums and Gram matrices, float32 chunk
    products summed in float64 after a global mean shift), so K folds cost one
    pass over the data plus K ``p x p`` solves.
    """

    method = "ridge_residual"

    def __init__(self, alpha: float = 1.0, n_folds: int = 5, seed: int = 42):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be finite and > 0, got {alpha}")
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
            raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.alpha = float(alpha)
        self.n_folds = int(n_folds)
        self.seed = int(seed)
        self.params_: dict[str, np.ndarray] | None = None

    def fit(self, img: np.ndarray, spec: np.ndarray) -> LearnedMismatch:
        """Fit the map on all rows (to score new objects with :meth:`score`)."""
        X, Y = _check_pair(img, spec, same_width=False)
        if X.shape[0] < 3:
            raise ValueError(f"LearnedMismatch.fit needs at least 3 rows, got {X.shape[0]}")
        x0, y0 = _global_shift(X), _global_shift(Y)
        m = _moments(X, Y, np.arange(X.shape[0]), x0, y0)
        self.params_ = _solve(m, self.alpha, x0, y0)
        return self

    def score(self, img: np.ndarray, spec: np.ndarray) -> np.ndarray:
        """Residual score of each row under the map fitted by :meth:`fit` (in-sample if same rows)."""
        if self.params_ is None:
            raise RuntimeError("LearnedMismatch is not fitted; call fit(img, spec) first")
        X, Y = _check_pair(img, spec, same_width=False)
        if X.shape[1] != self.params_["W"].shape[0] or Y.shape[1] != self.params_["W"].shape[1]:
            raise ValueError(
                f"expected img/spec widths {self.params_['W'].shape}, got ({X.shape[1]}, {Y.shape[1]})"
            )
        return _residual_score(X, Y, self.params_)

    def fit_score(self, img: np.ndarray, spec: np.ndarray) -> np.ndarray:
        """Out-of-fold residual score for every row (float64, higher = more mismatched).

        Also leaves the all-rows fit in ``params_`` so :meth:`score` works afterwards.
        """
        X, Y = _check_pair(img, spec, same_width=False)
        n = X.shape[0]
        if n < 2 * self.n_folds:
            raise ValueError(f"need at least 2 rows per fold: {n} rows for {self.n_folds} folds")
        x0, y0 = _global_shift(X), _global_shift(Y)
        folds = [np.sort(f) for f in np.array_split(np.random.default_rng(self.seed).permutation(n), self.n_folds)]
        fold_moments = [_moments(X, Y, f, x0, y0) for f in folds]
        total = fold_moments[0]
        for m in fold_moments[1:]:
            total = total + m
        out = np.empty(n, dtype=np.float64)
        for f, m in zip(folds, fold_moments):
            params = _solve(total - m, self.alpha, x0, y0)
            out[f] = _residual_score(X[f], Y[f], params)
        self.params_ = _solve(total, self.alpha, x0, y0)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.params_ is None:
            raise RuntimeError("LearnedMismatch is not fitted")
        state = {k: v.copy() for k, v in self.params_.items()}
        state.update(alpha=np.asarray(self.alpha), n_folds=np.asarray(self.n_folds), seed=np.asarray(self.seed))
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> LearnedMismatch:
        obj = cls(alpha=float(state["alpha"]), n_folds=int(state["n_folds"]), seed=int(state["seed"]))
        obj.params_ = {k: np.asarray(state[k], dtype=np.float64)
                       for k in ("x_mean", "x_scale", "y_mean", "y_scale", "W", "residual_scale")}
        return obj


def _global_shift(A: np.ndarray) -> np.ndarray:
    """Column means (float32) subtracted before accumulating moments, to avoid cancellation."""
    total = np.zeros(A.shape[1], dtype=np.float64)
    for s in range(0, A.shape[0], _CHUNK_ROWS):
        total += A[s : s + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    return (total / A.shape[0]).astype(np.float32)


def mismatch_scores(
    img: np.ndarray,
    spec: np.ndarray,
    aligned: bool,
    alpha: float = 1.0,
    n_folds: int = 5,
    seed: int = 42,
) -> MismatchResult:
    """Cross-modal mismatch with the method the embedder's ``aligned`` flag allows.

    ``aligned=True`` -> cosine; ``aligned=False`` -> out-of-fold ridge residual
    (``alpha``, ``n_folds``, ``seed`` apply only there). The chosen method is in
    the result's ``method`` field.
    """
    if not isinstance(aligned, (bool, np.bool_)):
        raise ValueError(f"aligned must be True or False (from the embedder declaration), got {aligned!r}")
    if aligned:
        return cosine_mismatch(img, spec)
    score = LearnedMismatch(alpha=alpha, n_folds=n_folds, seed=seed).fit_score(img, spec)
    return MismatchResult("ridge_residual", score, score, rank_descending(score))


def mismatch_table(object_ids: Sequence | np.ndarray, score: np.ndarray, method: str) -> pd.DataFrame:
    """Per-object mismatch table with the same columns for every method.

    Columns: ``object_id, cosine_similarity, mismatch_score, method, rank``.

    * ``method="cosine"``: ``score`` is the cosine similarity; it fills
      ``cosine_similarity``, ``mismatch_score = 1 - cos`` and rank 1 = lowest
      cosine (the reference's ``cosine_scores_*.csv`` ranking).
    * ``method="ridge_residual"``: ``score`` is the residual score; it fills
      ``mismatch_score``, ``cosine_similarity`` is NaN (no cosine exists
      between unaligned spaces) and rank 1 = highest score.

    ``mismatch_score`` is therefore always "higher = more mismatched". Ties are
    broken by object order; rows keep the input order.
    """
    s = check_scores(score, "mismatch_table")
    ids = as_object_ids(object_ids, s.shape[0], "mismatch_table")
    if method == "cosine":
        cos, mis, rank = s, 1.0 - s, rank_ascending(s)
    elif method == "ridge_residual":
        cos, mis, rank = np.full(s.shape[0], np.nan), s, rank_descending(s)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return pd.DataFrame(
        {
            "object_id": ids,
            "cosine_similarity": cos,
            "mismatch_score": mis,
            "method": np.full(s.shape[0], method, dtype=object),
            "rank": rank,
        },
        columns=list(MISMATCH_COLUMNS),
    )
