"""Re-ranking strategies: small fit/score objects on plain arrays.

Every strategy sees the same three things and nothing else:

* ``Z`` (N, k): the object features (:class:`~fmb_engine.discover.features.Features` of an embedding run),
* ``base`` (N,): the base anomaly score, higher = more anomalous (a fused or single system),
* the labelled rows ``idx`` (L,) and their relevance ``y`` (L,) in [0, 1] (:mod:`~fmb_engine.discover.relevance`).

``fit(Z, base, idx, y)`` learns from the labels; ``score(Z, base)`` returns (N,) float64, higher =
inspect first. Labelled rows are scored like the others; callers rank the unlabelled ones. Formulas are
in docs/science.md, "Active discovery". With no labels every strategy returns the base order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logit
from scipy.stats import rankdata

#: Rows per block when a strategy compares every object with every labelled one (bounds memory at 10^6 rows).
BLOCK = 65_536


def percentile(base: np.ndarray) -> np.ndarray:
    """Rank percentile of the base score in (0, 1): ties share their mean rank; NaN counts as least anomalous."""
    values = np.where(np.isfinite(base), base, -np.inf)
    return rankdata(values, method="average") / (values.shape[0] + 1.0)


def sq_distances(Z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, m) through one matrix product, clipped at 0 against round-off."""
    d2 = (Z * Z).sum(1)[:, None] + (centres * centres).sum(1)[None, :] - 2.0 * (Z @ centres.T)
    return np.maximum(d2, 0.0)


def nearest_labelled(Z: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Distance (N,) of every row to its nearest labelled row, in blocks."""
    out = np.empty(Z.shape[0])
    for start in range(0, Z.shape[0], BLOCK):
        out[start:start + BLOCK] = np.sqrt(sq_distances(Z[start:start + BLOCK], labelled).min(1))
    return out


def kth_distance(Z: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance (L,) from each query (a row of ``Z``) to its ``k``-th nearest other row, exact, in blocks."""
    k = min(k, Z.shape[0] - 1)
    best = np.full((k + 1, queries.shape[0]), np.inf)
    for start in range(0, Z.shape[0], BLOCK):
        both = np.concatenate([best, sq_distances(Z[start:start + BLOCK], queries)])
        best = np.partition(both, k, axis=0)[:k + 1]
    return np.sqrt(np.sort(best, axis=0)[k])  # row 0 is the query itself


@dataclass
class Static:
    """The base ranking unchanged: the reference every strategy is measured against."""

    name: str = "static"
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> Static:
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.asarray(base, dtype=np.float64).copy()


@dataclass
class Astronomaly:
    """Lochner & Bassett (2021)'s "neighbour score", in our code.

    A random forest regresses the user's relevance (scaled to 0..``u_max``) on the features; ``d`` is each
    object's distance to its nearest labelled object and ``a`` the base score min-max scaled to 0..5::

        f(u) = u_min + 0.85 * u / u_max
        score = a * tanh(exp(alpha * d / mean(d)) - 1 + arctanh(f(u)))

    Near labelled objects the predicted relevance dominates; far from them ``tanh`` tends to 1 and the base
    order returns. ``alpha`` says how fast trust in the regression decays with distance.
    """

    alpha: float = 1.0
    u_min: float = 0.1
    u_max: float = 5.0
    trees: int = 100
    seed: int = 0
    name: str = "astronomaly"
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> Astronomaly:
        from sklearn.ensemble import RandomForestRegressor

        self._idx = np.asarray(idx)
        self._model = None
        if self._idx.size:
            self._model = RandomForestRegressor(n_estimators=self.trees, random_state=self.seed, n_jobs=1)
            self._model.fit(Z[self._idx], np.asarray(y, dtype=np.float64) * self.u_max)
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        base = np.asarray(base, dtype=np.float64)
        if self._model is None:
            return base.copy()
        span = np.nanmax(base) - np.nanmin(base)
        a = 5.0 * (base - np.nanmin(base)) / (span if span > 0 else 1.0)
        u = self._model.predict(Z)
        d = nearest_labelled(Z, Z[self._idx])
        mean_d = d.mean() if d.mean() > 0 else 1.0
        f_u = self.u_min + 0.85 * np.clip(u, 0.0, self.u_max) / self.u_max
        return np.nan_to_num(a * np.tanh(np.exp(self.alpha * d / mean_d) - 1.0 + np.arctanh(f_u)), nan=-np.inf)


@dataclass
class GaussianProcess:
    """Protege-like (Lochner & Rudnick): a GP regression of relevance with an upper-confidence acquisition.

    A GP (Matern 5/2 + white noise, hyper-parameters fitted by marginal likelihood) gives a mean ``mu`` and a
    standard deviation ``sigma`` of relevance for every object; the acquisition is ``mu + kappa * sigma``.
    Like Protege it ignores the base score once it has labels: it explores what the labels do not explain.
    """

    kappa: float = 1.0
    seed: int = 0
    name: str = "gp"
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> GaussianProcess:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import Matern, WhiteKernel

        self._gp = None
        if np.asarray(idx).size:
            self._gp = GaussianProcessRegressor(kernel=Matern(nu=2.5) + WhiteKernel(), normalize_y=True,
                                                random_state=self.seed)
            self._gp.fit(Z[idx], np.asarray(y, dtype=np.float64))
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        if self._gp is None:
            return np.asarray(base, dtype=np.float64).copy()
        out = np.empty(Z.shape[0])
        for start in range(0, Z.shape[0], BLOCK):
            mu, sigma = self._gp.predict(Z[start:start + BLOCK], return_std=True)
            out[start:start + BLOCK] = mu + self.kappa * sigma
        return out


@dataclass
class Evidence:
    """Our default: the base anomaly odds, shifted by the labelled neighbourhood's evidence.

    Each labelled object ``i`` votes for its neighbourhood with a Gaussian kernel
    ``K_i(x) = exp(-|x - x_i|^2 / (2 h^2))``. With ``P(x) = sum_i K_i(x) y_i`` (relevant mass) and
    ``Q(x) = sum_i K_i(x) (1 - y_i)`` (irrelevant mass), the relevance of ``x`` has the Beta posterior mean

        m(x) = (P(x) + c * pi) / (P(x) + Q(x) + c),      pi = (sum y + 1) / (L + 2)

    (``pi`` the labels' own relevance rate, ``c`` a prior strength in labelled-neighbour units), and

        score(x) = logit(p(x)) + beta * (logit(m(x)) - logit(pi))

    where ``p(x)`` is the base score's rank percentile. Far from every label ``m = pi`` and the base order
    stands (exploration comes free: unexplored anomalies keep their rank); near relevant labels the odds
    rise, near artefacts they fall. The bandwidth ``h`` is ``bandwidth`` times the median distance from the
    labelled objects to their ``k``-th nearest object, so it follows the local density of the features.
    """

    beta: float = 1.0
    prior_strength: float = 0.5
    bandwidth: float = 1.0
    k: int = 10
    name: str = "evidence"
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> Evidence:
        self._idx = np.asarray(idx)
        self._y = np.asarray(y, dtype=np.float64)
        if self._idx.size:
            self._h = self.bandwidth * float(np.median(kth_distance(Z, Z[self._idx], self.k))) or 1.0
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        prior = logit(percentile(np.asarray(base, dtype=np.float64)))
        if not self._idx.size:
            return prior
        pi = (self._y.sum() + 1.0) / (self._y.size + 2.0)
        centres = Z[self._idx]
        shift = np.empty(Z.shape[0])
        for start in range(0, Z.shape[0], BLOCK):
            K = np.exp(-sq_distances(Z[start:start + BLOCK], centres) / (2.0 * self._h ** 2))
            P, Q = K @ self._y, K @ (1.0 - self._y)
            m = (P + self.prior_strength * pi) / (P + Q + self.prior_strength)
            shift[start:start + BLOCK] = logit(m) - math.log(pi / (1.0 - pi))
        return prior + self.beta * shift


#: Strategies by name; ``default`` is the one `discover rerank` uses unless told otherwise.
STRATEGIES = {"static": Static, "astronomaly": Astronomaly, "gp": GaussianProcess, "evidence": Evidence}
DEFAULT = "evidence"


def make(name: str, seed: int = 0, **params: float):
    """A fresh strategy object by name (``default`` = :data:`DEFAULT`), seeded where it draws at random."""
    cls = STRATEGIES[DEFAULT if name == "default" else name]
    if "seed" in cls.__dataclass_fields__:
        params = {"seed": seed, **params}
    return cls(**params)
