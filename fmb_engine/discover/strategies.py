"""Re-ranking strategies: small fit/score objects on plain arrays.

Every strategy sees the same three things and nothing else:

* ``Z`` (N, k): the object features (:class:`~fmb_engine.discover.features.Features` of an embedding run),
* ``base`` (N,): the base anomaly score, higher = more anomalous (a fused or single system),
* the labelled rows ``idx`` (L,) and their relevance ``y`` (L,) in [0, 1] (:mod:`~fmb_engine.discover.relevance`).

``fit(Z, base, idx, y)`` learns from the labels; ``score(Z, base)`` returns (N,) float64, higher =
inspect first. Labelled rows are scored like the others; callers rank the unlabelled ones. Formulas are
in docs/science.md, "Active discovery".

Fallback: with fewer than :data:`MIN_LABELS` labels a learned strategy keeps the base order and says why in
``fallback`` (and ``notes``), so a caller can report it. One kind of label only (all relevant or all not)
is used as it is: it moves neighbourhoods one way, which is what such labels say.

What a seed changes: the random forest (``astronomaly``); ``gp`` (no optimiser restarts), ``evidence`` and
``static`` draw nothing at random (the simulation's seed also sets the tie-break and the random order).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logit
from scipy.stats import rankdata

from fmb_engine.discover.config import DEFAULT_STRATEGY

#: Rows per block when a strategy compares every object with every labelled one: bounds memory at 10^6 rows,
#: and a block against 200 labels (6.5 MB in float32) stays in cache through the passes over it.
BLOCK = 8_192


#: Fewer labels than this: a learned strategy keeps the base order (1-5 labels say too little to move it).
MIN_LABELS = 6


def percentile(base: np.ndarray) -> np.ndarray:
    """Rank percentile of the base score in (0, 1): ties share their mean rank; NaN counts as least anomalous."""
    values = np.where(np.isfinite(base), base, -np.inf)
    return rankdata(values, method="average") / (values.shape[0] + 1.0)


def sq_distances(Z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, m) through one matrix product, clipped at 0 against round-off."""
    d2 = Z @ (-2 * centres.T)
    d2 += (Z * Z).sum(1)[:, None]
    d2 += (centres * centres).sum(1)[None, :]
    return np.maximum(d2, 0, out=d2)


def nearest_labelled(Z: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Distance (N,) of every row to its nearest labelled row, in blocks."""
    out = np.empty(Z.shape[0])
    for start in range(0, Z.shape[0], BLOCK):
        out[start:start + BLOCK] = np.sqrt(sq_distances(Z[start:start + BLOCK], labelled).min(1))
    return out


def kth_distance(Z: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance (L,) from each query (a row of ``Z``) to its ``k``-th nearest other row, exact, in blocks."""
    k = min(k, Z.shape[0] - 1)
    best = np.full((queries.shape[0], k + 1), np.inf, dtype=np.result_type(Z.dtype, queries.dtype))
    for start in range(0, Z.shape[0], BLOCK):
        d2 = sq_distances(queries, Z[start:start + BLOCK])
        closer = (d2 < best.max(1)[:, None]).any(1)  # after a few blocks most queries find nothing nearer
        if closer.any():
            both = np.concatenate([best[closer], d2[closer]], axis=1)
            best[closer] = np.partition(both, k, axis=1)[:, :k + 1]
    return np.sqrt(np.sort(best, axis=1)[:, k])  # column 0 is the query itself


@dataclass
class Static:
    """The base ranking unchanged: the reference every strategy is measured against."""

    name: str = "static"
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> Static:
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.asarray(base, dtype=np.float64).copy()


@dataclass
class Learned:
    """What every label-driven strategy shares: the few-labels fallback and its reason.

    Subclasses implement ``_fit(Z, base, idx, y)`` and ``_score(Z, base)``; they are only called with at
    least :data:`MIN_LABELS` labels.
    """

    name: str = "learned"
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)

    def fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        y = np.asarray(y, dtype=np.float64)
        self.notes = []
        self.fallback = None
        if idx.size < MIN_LABELS:
            self.fallback = f"{idx.size} label(s), fewer than {MIN_LABELS}: the base order is kept"
            self.notes.append(self.fallback)
            return self
        if np.ptp(y) == 0:
            kind = "relevant" if y[0] >= 0.5 else "not relevant"
            self.notes.append(f"all {idx.size} labels are {kind}: only that side of the order moves")
        self._fit(Z, base, idx, y)
        return self

    def score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        if self.fallback is not None:
            return np.asarray(base, dtype=np.float64).copy()
        return self._score(Z, np.asarray(base, dtype=np.float64))


@dataclass
class Astronomaly(Learned):
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

    def _fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self._idx = idx
        self._model = RandomForestRegressor(n_estimators=self.trees, random_state=self.seed, n_jobs=1)
        self._model.fit(Z[idx], y * self.u_max)

    def _score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        span = np.nanmax(base) - np.nanmin(base)
        a = 5.0 * (base - np.nanmin(base)) / (span if span > 0 else 1.0)
        u = self._model.predict(Z)
        d = nearest_labelled(Z, Z[self._idx])
        mean_d = d.mean() if d.mean() > 0 else 1.0
        f_u = self.u_min + 0.85 * np.clip(u, 0.0, self.u_max) / self.u_max
        return np.nan_to_num(a * np.tanh(np.exp(self.alpha * d / mean_d) - 1.0 + np.arctanh(f_u)), nan=-np.inf)


@dataclass
class GaussianProcess(Learned):
    """Protege-like (Lochner & Rudnick): a GP regression of relevance with an upper-confidence acquisition.

    A GP (Matern 5/2 + white noise, hyper-parameters fitted by marginal likelihood) gives a mean ``mu`` and a
    standard deviation ``sigma`` of relevance for every object; the acquisition is ``mu + kappa * sigma``.
    Like Protege it ignores the base score once it has labels: it explores what the labels do not explain.
    """

    kappa: float = 1.0
    seed: int = 0
    name: str = "gp"

    def _fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import Matern, WhiteKernel

        from sklearn.exceptions import ConvergenceWarning

        self._gp = GaussianProcessRegressor(kernel=Matern(nu=2.5) + WhiteKernel(), normalize_y=True,
                                            random_state=self.seed)
        with warnings.catch_warnings():  # few labels often put a length scale on its bound: expected, not news
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gp.fit(np.asarray(Z[idx], dtype=np.float64), y)

    def _score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        out = np.empty(Z.shape[0])
        for start in range(0, Z.shape[0], BLOCK):
            mu, sigma = self._gp.predict(np.asarray(Z[start:start + BLOCK], dtype=np.float64), return_std=True)
            out[start:start + BLOCK] = mu + self.kappa * sigma
        return out


@dataclass
class Evidence(Learned):
    """Our default: the base anomaly odds, shifted by the labelled neighbourhood's evidence at several scales.

    Each labelled object ``i`` votes for its neighbourhood with a Gaussian kernel
    ``K_i(x) = exp(-|x - x_i|^2 / (2 h^2))``. With ``P(x) = sum_i K_i(x) y_i`` (relevant mass) and
    ``Q(x) = sum_i K_i(x) (1 - y_i)`` (irrelevant mass), the relevance of ``x`` has the Beta posterior mean

        m_h(x) = (P(x) + c * pi) / (P(x) + Q(x) + c),      pi = (sum y + 1) / (L + 2)

    (``pi`` the labels' own relevance rate, ``c`` a prior strength in labelled-neighbour units), and

        score(x) = logit(p(x)) + beta * mean_h (logit(m_h(x)) - logit(pi))

    where ``p(x)`` is the base score's rank percentile. Far from every label ``m = pi`` and the base order
    stands (exploration comes free: unexplored anomalies keep their rank); near relevant labels the odds
    rise, near artefacts they fall. The widths are ``h_0 * 2^(-j/2)`` for ``j < scales`` with ``h_0`` =
    ``bandwidth`` times the median distance from the labelled objects to their ``k``-th nearest object:
    averaging over scales removes the need to guess one width (measured: a single width swings the result
    by a third between neighbouring values), and halving ``h^2`` is squaring the kernel, so the extra scales
    cost a multiplication each.
    """

    beta: float = 12.0
    prior_strength: float = 1.0
    bandwidth: float = 1.0
    scales: int = 4
    k: int = 10
    name: str = "evidence"

    def _fit(self, Z: np.ndarray, base: np.ndarray, idx: np.ndarray, y: np.ndarray) -> None:
        self._idx, self._y = idx, y
        self._h = self.bandwidth * float(np.median(kth_distance(Z, Z[idx], self.k))) or 1.0

    def _score(self, Z: np.ndarray, base: np.ndarray) -> np.ndarray:
        pi = (self._y.sum() + 1.0) / (self._y.size + 2.0)
        # -|x - c|^2 / (2 h^2) as one product of [x, |x|^2, 1] with [c / h^2, -1 / (2 h^2), -|c|^2 / (2 h^2)];
        # round-off can make it a hair above 0 for x = c, harmless in a kernel sum.
        centres = Z[self._idx]
        g = 1.0 / self._h ** 2
        right = np.concatenate([centres.T * g, np.full((1, centres.shape[0]), -0.5 * g),
                                -0.5 * g * (centres * centres).sum(1)[None, :]]).astype(Z.dtype)
        masses = np.stack([self._y, np.ones_like(self._y)], 1).astype(Z.dtype)  # -> (P, P + Q) in one product
        score = logit(percentile(base))
        for start in range(0, Z.shape[0], BLOCK):
            block = Z[start:start + BLOCK]
            left = np.concatenate([block, (block * block).sum(1)[:, None], np.ones((block.shape[0], 1), Z.dtype)], 1)
            K = np.exp(left @ right)
            shift = np.zeros(K.shape[0])
            for _ in range(self.scales):
                P, total = (K @ masses).astype(np.float64).T
                shift += logit((P + self.prior_strength * pi) / (total + self.prior_strength))
                K *= K  # the next, narrower scale
            score[start:start + BLOCK] += self.beta * (shift / self.scales - math.log(pi / (1.0 - pi)))
        return score


#: Strategies by name; ``default`` is the one `discover rerank` uses unless told otherwise.
STRATEGIES = {"static": Static, "astronomaly": Astronomaly, "gp": GaussianProcess, "evidence": Evidence}
DEFAULT = DEFAULT_STRATEGY


def make(name: str, seed: int = 0, **params: float):
    """A fresh strategy object by name (``default`` = :data:`DEFAULT`), seeded where it draws at random."""
    cls = STRATEGIES[DEFAULT if name == "default" else name]
    if "seed" in cls.__dataclass_fields__:
        params = {"seed": seed, **params}
    return cls(**params)
