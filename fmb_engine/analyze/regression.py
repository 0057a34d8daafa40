"""Linear and non-linear probes of physical parameters from embeddings.

For one embedding matrix X (rows matched to the survey by ``object_id`` only) and one
target y: a standardised ridge and a HistGradientBoosting regressor are fitted on a
seeded train split shared by every embedding, scored by R² on the held-out split with
bootstrap intervals (resampling test rows, predictions fixed), and compared with a
random Gaussian embedding of the same dimension on the **same** objects (L17).

Dimensionality of each fit (reference §6.6): per-row L1-normalised attributions ŝ, φ_j = mean |ŝ_j|,
participation ratio PR = (Σφ)² / (D Σφ²), PR90, a bootstrap PR std, EPD = PR·D,
PES = R²/(PR + 1e-3), CWP = R²·PR. For the ridge the attributions are exact (linear SHAP,
every test row); for the GBM they are TreeSHAP values from ``shap.TreeExplainer`` on at most
``shap_max_rows`` seeded test rows.
"""

from __future__ import annotations

import time

from dataclasses import dataclass, field

import numpy as np

from fmb_engine.errors import ConfigError


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - np.asarray(pred, np.float64)) ** 2)) / ss_tot


def bootstrap_r2(y: np.ndarray, pred: np.ndarray, n: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of R² over ``n`` resamples (with replacement) of the test rows."""
    if n <= 0 or len(y) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64)
    idx = rng.integers(0, len(y), size=(n, len(y)))
    yy, pp = y[idx], pred[idx]
    ss_tot = ((yy - yy.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    ss_res = ((yy - pp) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = 1.0 - ss_res / ss_tot
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


PR_BOOTSTRAP_MIN_ROWS = 50
"""Fewest attribution rows for a bootstrap PR spread (as the reference): below it the resamples
hold too few distinct rows for their standard deviation to estimate the sampling spread."""


def normalised_attributions(s: np.ndarray) -> np.ndarray:
    """``|ŝ_ij|`` with ``ŝ_ij = s_ij / Σ_j |s_ij|`` (a row whose attributions are all zero stays zero)."""
    a = np.abs(np.asarray(s, np.float64))
    norm = a.sum(axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def linear_attributions(coef: np.ndarray, x_std: np.ndarray) -> np.ndarray:
    """Exact SHAP values of a linear model on standardised features: ``s_ij = w_j · z_ij``;
    each row normalised by its L1 norm, then φ_j = mean_i |ŝ_ij|."""
    s = np.asarray(x_std, np.float64) * np.asarray(coef, np.float64)[None, :]
    return normalised_attributions(s).mean(axis=0)


def participation_ratio(phi: np.ndarray) -> tuple[float, float]:
    """PR = (Σφ)² / (D Σφ²) in [1/D, 1]; PR90 = (smallest n whose largest φ reach 90 % of Σφ) / D."""
    phi = np.abs(np.asarray(phi, np.float64))
    d = len(phi)
    total, sq = phi.sum(), float(np.dot(phi, phi))
    if d == 0 or sq == 0:
        return float("nan"), float("nan")
    pr = float(total**2 / (d * sq))
    cum = np.cumsum(np.sort(phi)[::-1])
    pr90 = float((np.searchsorted(cum, 0.9 * total - 1e-12) + 1) / d)
    return pr, pr90


def bootstrap_pr_std(abs_norm: np.ndarray, n: int, seed: int, min_rows: int = PR_BOOTSTRAP_MIN_ROWS) -> float:
    """Standard deviation (ddof 1) of PR over ``n`` resamples with replacement of the rows of
    ``abs_norm`` (the ``|ŝ|`` matrix, one row per test object); NaN when ``n < 2`` or there are
    fewer than ``min_rows`` rows."""
    a = np.asarray(abs_norm, np.float64)
    rows, d = a.shape
    if n < 2 or rows < max(min_rows, 2) or d == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rows, size=(n, rows))
    counts = np.zeros((n, rows))
    np.add.at(counts, (np.repeat(np.arange(n), rows), idx.ravel()), 1.0)
    phis = counts @ a / rows  # φ of each resample, (n, D)
    total, sq = phis.sum(axis=1), (phis**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prs = total**2 / (d * sq)
    prs = prs[np.isfinite(prs)]
    return float(np.std(prs, ddof=1)) if len(prs) >= 2 else float("nan")


def dimensionality(abs_norm: np.ndarray, r2_value: float, suffix: str, bootstrap: int, seed: int) -> tuple[dict, np.ndarray]:
    """PR, PR90, bootstrap PR std, EPD = PR·D, PES = R²/(PR + 1e-3), CWP = R²·PR from ``|ŝ|``;
    returns the metrics (keys suffixed ``_<suffix>``) and φ."""
    phi = np.asarray(abs_norm, np.float64).mean(axis=0)
    pr, pr90 = participation_ratio(phi)
    out = {"pr": pr, "pr90": pr90, "pr_std": bootstrap_pr_std(abs_norm, bootstrap, seed),
           "epd": pr * len(phi), "pes": r2_value / (pr + 1e-3), "cwp": r2_value * pr}
    return {f"{k}_{suffix}": float(v) for k, v in out.items()}, phi


def tree_shap_values(model, x: np.ndarray) -> np.ndarray:
    """TreeSHAP values (``shap.TreeExplainer``, path-dependent: no background data, as the
    reference) of a fitted tree ensemble at the rows of ``x``, shape (rows, D)."""
    shap = require_shap()
    s = shap.TreeExplainer(model).shap_values(np.asarray(x), check_additivity=True)  # guards the sklearn -> shap tree conversion
    s = np.asarray(s[0] if isinstance(s, list) else s, np.float64)
    return s.reshape(len(x), -1)


def require_shap():
    """``import shap`` or a :class:`ConfigError` saying how to install it or switch the GBM PR off."""
    try:
        import shap
    except ImportError as exc:
        raise ConfigError(
            f"analyze.gbm_shap is on but the 'shap' package cannot be imported ({exc}). It is a core "
            "dependency of fmb (TreeSHAP attributions of the gradient-boosted probe): install it with "
            "`pip install 'shap>=0.46'` (or reinstall: `pip install -e .`), or set analyze.gbm_shap: false "
            "to skip pr_gbm and the other GBM dimensionality measures.") from exc
    return shap


@dataclass
class ProbeResult:
    metrics: dict
    y_test: np.ndarray
    pred_ridge: np.ndarray
    pred_gbm: np.ndarray
    phi: dict = field(default_factory=dict)  # "ridge" / "gbm" -> φ vector (length D)


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, alpha: float = 1.0,
          gbm_iter: int = 200, gbm_early_stopping: bool = True, bootstrap: int = 200, seed: int = 42,
          nonlinear: bool = True, gbm_shap: bool = True,
          shap_max_rows: int = 2000, pr_bootstrap: int = 50) -> ProbeResult:
    """Fit ridge (standardised) and HistGradientBoosting; R², RMSE, MAE, bootstrap CIs, and the
    dimensionality measures: ridge PR from exact linear SHAP on every test row, GBM PR from
    TreeSHAP on at most ``shap_max_rows`` (seeded subsample) test rows when ``gbm_shap``."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    if nonlinear and gbm_shap:
        require_shap()  # fail before any fitting
    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
    ridge = Ridge(alpha=alpha).fit(z_train, y_train)
    pred_r = ridge.predict(z_test)
    m = {"n_train": len(y_train), "n_test": len(y_test), "dim": x_train.shape[1], "r2_ridge": r2(y_test, pred_r)}
    m["r2_ridge_lo"], m["r2_ridge_hi"] = bootstrap_r2(y_test, pred_r, bootstrap, seed)
    phis = {}
    if nonlinear:
        gbm = HistGradientBoostingRegressor(max_iter=gbm_iter, early_stopping=gbm_early_stopping,
                                            random_state=seed).fit(x_train, y_train)
        pred_g = gbm.predict(x_test)
        m["r2_gbm"] = r2(y_test, pred_g)
        m["r2_gbm_lo"], m["r2_gbm_hi"] = bootstrap_r2(y_test, pred_g, bootstrap, seed + 1)
        m["rmse_gbm"] = float(np.sqrt(np.mean((y_test - pred_g) ** 2)))
        m["mae_gbm"] = float(np.mean(np.abs(y_test - pred_g)))
        m["linear_gap"] = m["r2_gbm"] - m["r2_ridge"]
    else:
        pred_g = np.full_like(pred_r, np.nan)
    m["rmse_ridge"] = float(np.sqrt(np.mean((y_test - pred_r) ** 2)))
    s_ridge = np.asarray(z_test, np.float64) * np.asarray(ridge.coef_, np.float64)[None, :]
    dims, phis["ridge"] = dimensionality(normalised_attributions(s_ridge), m["r2_ridge"], "ridge", pr_bootstrap, seed)
    m.update(dims)
    if nonlinear and gbm_shap:
        rows = np.arange(len(x_test))
        if len(rows) > shap_max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), shap_max_rows, replace=False))
        m["n_shap"] = len(rows)
        s_gbm = tree_shap_values(gbm, np.asarray(x_test)[rows])
        dims, phis["gbm"] = dimensionality(normalised_attributions(s_gbm), m["r2_gbm"], "gbm", pr_bootstrap, seed + 2)
        m.update(dims)
    return ProbeResult(m, np.asarray(y_test), pred_r, pred_g, phis)


def split_ids(ids: np.ndarray, test_fraction: float, seed: int) -> tuple[set, set]:
    """Seeded train/test split of object ids (sorted first, so order of input does not matter)."""
    ids = np.sort(np.asarray(ids, dtype=str))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ids))
    n_test = int(round(test_fraction * len(ids)))
    return set(ids[perm[n_test:]]), set(ids[perm[:n_test]])


def _timed_probe(args: tuple, kwargs: dict) -> tuple[ProbeResult, float]:
    t0 = time.perf_counter()
    return probe(*args, **kwargs), time.perf_counter() - t0


def run_probes(jobs: list[tuple], kwargs: dict, n_jobs: int) -> list[tuple[ProbeResult, float]]:
    """``probe(*job, **kwargs)`` for each job, in ``n_jobs`` worker processes (joblib/loky, which
    also caps each worker's BLAS/OpenMP threads); returns ``(result, seconds)`` in job order.
    Every probe is seeded by its arguments alone, so results do not depend on ``n_jobs``."""
    if n_jobs <= 1 or len(jobs) <= 1:
        return [_timed_probe(job, kwargs) for job in jobs]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(n_jobs, len(jobs)), backend="loky")(delayed(_timed_probe)(job, kwargs) for job in jobs)


__all__ = ["PR_BOOTSTRAP_MIN_ROWS", "ProbeResult", "run_probes", "bootstrap_pr_std", "bootstrap_r2", "dimensionality", "linear_attributions",
           "normalised_attributions", "participation_ratio", "probe", "r2", "require_shap", "split_ids", "tree_shap_values"]
