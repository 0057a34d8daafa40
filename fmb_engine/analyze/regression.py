"""Linear and non-linear probes of physical parameters from embeddings.

For one embedding matrix X (rows matched to the survey by ``object_id`` only) and one
target y: a standardised ridge and a HistGradientBoosting regressor are fitted on a
seeded train split shared by every embedding, scored by R² on the held-out split with
bootstrap intervals (resampling test rows, predictions fixed), and compared with a
random Gaussian embedding of the same dimension on the **same** objects (L17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def linear_attributions(coef: np.ndarray, x_std: np.ndarray) -> np.ndarray:
    """Exact SHAP values of a linear model on standardised features: ``s_ij = w_j · z_ij``;
    each row normalised by its L1 norm, then φ_j = mean_i |ŝ_ij|."""
    s = np.asarray(x_std, np.float64) * np.asarray(coef, np.float64)[None, :]
    norm = np.abs(s).sum(axis=1, keepdims=True)
    s = s / np.where(norm > 0, norm, 1.0)
    return np.abs(s).mean(axis=0)


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


@dataclass
class ProbeResult:
    metrics: dict
    y_test: np.ndarray
    pred_ridge: np.ndarray
    pred_gbm: np.ndarray


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, alpha: float = 1.0,
          gbm_iter: int = 200, bootstrap: int = 200, seed: int = 42, nonlinear: bool = True) -> ProbeResult:
    """Fit ridge (standardised) and HistGradientBoosting; R², RMSE, MAE, bootstrap CIs, PR of the ridge."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
    ridge = Ridge(alpha=alpha).fit(z_train, y_train)
    pred_r = ridge.predict(z_test)
    pr, pr90 = participation_ratio(linear_attributions(ridge.coef_, z_test))
    m = {"n_train": len(y_train), "n_test": len(y_test), "dim": x_train.shape[1], "r2_ridge": r2(y_test, pred_r)}
    m["r2_ridge_lo"], m["r2_ridge_hi"] = bootstrap_r2(y_test, pred_r, bootstrap, seed)
    if nonlinear:
        gbm = HistGradientBoostingRegressor(max_iter=gbm_iter, random_state=seed).fit(x_train, y_train)
        pred_g = gbm.predict(x_test)
        m["r2_gbm"] = r2(y_test, pred_g)
        m["r2_gbm_lo"], m["r2_gbm_hi"] = bootstrap_r2(y_test, pred_g, bootstrap, seed + 1)
        m["rmse_gbm"] = float(np.sqrt(np.mean((y_test - pred_g) ** 2)))
        m["mae_gbm"] = float(np.mean(np.abs(y_test - pred_g)))
        m["linear_gap"] = m["r2_gbm"] - m["r2_ridge"]
    else:
        pred_g = np.full_like(pred_r, np.nan)
    m["rmse_ridge"] = float(np.sqrt(np.mean((y_test - pred_r) ** 2)))
    m["pr_ridge"], m["pr90_ridge"] = pr, pr90
    return ProbeResult(m, np.asarray(y_test), pred_r, pred_g)


def split_ids(ids: np.ndarray, test_fraction: float, seed: int) -> tuple[set, set]:
    """Seeded train/test split of object ids (sorted first, so order of input does not matter)."""
    ids = np.sort(np.asarray(ids, dtype=str))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ids))
    n_test = int(round(test_fraction * len(ids)))
    return set(ids[perm[n_test:]]), set(ids[perm[:n_test]])


__all__ = ["ProbeResult", "bootstrap_r2", "linear_attributions", "participation_ratio", "probe", "r2", "split_ids"]
