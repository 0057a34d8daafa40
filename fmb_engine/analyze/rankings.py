"""Comparisons of anomaly rankings: Spearman, top-q % Jaccard, disagreement, retention.

Every pairwise quantity is computed on the objects **both** systems rank, and the
ranks are re-numbered 1..n within that shared set before percentiles are taken
(reference bug L6 divided per-file ranks by the join size).

Ties: tied ranks (objects with equal scores, see :mod:`fmb_engine.detect.tables`)
stay tied when re-numbered (each gets the smallest rank of its group), so a
top-q % set holds the whole tied group rather than the first rows of the file.
Spearman's rho is the Pearson correlation of mid-ranks (tied objects get the
average of the ranks they span), the textbook tie correction; without ties it
is the usual ``1 - 6 sum d^2 / (n (n^2 - 1))``. A ranking whose objects all tie
(a constant score) has no order to correlate: rho is NaN and :func:`compare`
says why in its ``notes`` table instead of leaving a bare NaN. Pure functions of a
``{system: rank Series}`` mapping; the door lives in :mod:`fmb_engine.analyze.run`.

Scale: each system is sorted once; a pair's shared set is re-ranked by restricting that order
(O(n), no sort per pair), and mid-ranks of competition ranks come from their group sizes (a
count, no sort), so S systems x N objects cost S sorts plus O(S^2 N) array passes, in memory
linear in N (no per-row Python).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from fmb_engine.detect.tables import min_rank, min_rank_ordered


def top_count(n: int, percent: float) -> int:
    """Size of the top ``percent`` % of ``n`` objects: ``max(1, floor(n * percent / 100))`` (0 when n = 0)."""
    if n <= 0:
        return 0
    return max(1, int(math.floor(n * percent / 100.0 + 1e-9)))


def rerank(rank: np.ndarray) -> np.ndarray:
    """Ranks (any increasing numbering, 1 = most anomalous) -> 1..n in the same order; ties stay tied."""
    return min_rank(np.asarray(rank, dtype=np.float64))


class RankMatrix:
    """Rank columns of several systems over one object index, with per-pair shared re-ranking."""

    def __init__(self, ranks: Mapping[str, pd.Series] | pd.DataFrame):
        frame = pd.DataFrame(ranks) if not isinstance(ranks, pd.DataFrame) else ranks
        self.systems: list[str] = [str(c) for c in frame.columns]
        self.index = frame.index
        self.values = {s: frame[s].to_numpy(dtype=np.float64, na_value=np.nan) for s in self.systems}
        self.present = {s: np.isfinite(v) for s, v in self.values.items()}
        self._order: dict[str, np.ndarray] = {}

    def order(self, system: str) -> np.ndarray:
        """Row positions of ``system``'s ranked objects, best first (sorted once, then reused)."""
        if system not in self._order:
            ranked = np.flatnonzero(self.present[system])
            self._order[system] = ranked[np.argsort(self.values[system][ranked], kind="stable")]
        return self._order[system]

    def shared(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mask, re-rank of a, re-rank of b) on the objects both rank."""
        mask = self.present[a] & self.present[b]
        position = np.cumsum(mask) - 1  # row -> its place among the shared objects
        return mask, self._rerank_within(a, mask, position), self._rerank_within(b, mask, position)

    def _rerank_within(self, system: str, mask: np.ndarray, position: np.ndarray) -> np.ndarray:
        """``rerank`` of ``system``'s ranks on the ``mask`` rows, from its sorted order instead of a new sort."""
        order = self.order(system)
        return min_rank_ordered(self.values[system][mask], position[order[mask[order]]])


def _tie_sizes(r: np.ndarray) -> np.ndarray | None:
    """For competition ranks (1..n, a tied group at its first rank, as :func:`rerank` gives) the
    size of each object's tied group, counted without sorting; None for any other numbering."""
    n = len(r)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if r.min() < 1 or r.max() > n or not np.all(r == np.floor(r)):
        return None
    ri = r.astype(np.int64)
    counts = np.bincount(ri, minlength=n + 1)
    better = np.cumsum(counts) - counts  # objects ranked strictly better than each rank value
    return counts[ri] if np.array_equal(better[ri], ri - 1) else None


def _mid_ranks(r: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """Average rank of each object's tied group (the rank Spearman's tie correction uses)."""
    if sizes is None:
        return rankdata(r, method="average")
    return r.astype(np.float64) + (sizes - 1) / 2.0  # half-integers: exactly scipy's rankdata values


def spearman(ra: np.ndarray, rb: np.ndarray) -> float:
    """Spearman's rho of two rankings of the same objects; NaN when fewer than 2 objects or one is all ties."""
    n = len(ra)
    if n < 2:
        return float("nan")
    sa, sb = _tie_sizes(ra), _tie_sizes(rb)
    if sa is not None and sb is not None and sa.max() == 1 and sb.max() == 1:  # both permutations of 1..n
        d = ra.astype(np.float64) - rb.astype(np.float64)
        return float(1.0 - 6.0 * np.dot(d, d) / (n * (n * n - 1.0)))
    ma, mb = _mid_ranks(ra, sa), _mid_ranks(rb, sb)
    ma, mb = ma - ma.mean(), mb - mb.mean()
    norm = float(np.sqrt(np.dot(ma, ma) * np.dot(mb, mb)))
    return float(np.dot(ma, mb) / norm) if norm > 0 else float("nan")


def _undefined(a: str, b: str, ra: np.ndarray, rb: np.ndarray) -> str:
    """Why the Spearman of a pair is NaN, in words."""
    n = len(ra)
    if n < 2:
        return f"Spearman of {a} and {b} is undefined: they share {n} object(s), it needs 2"
    flat = [s for s, r in ((a, ra), (b, rb)) if r.min() == r.max()]
    return (f"Spearman of {a} and {b} is undefined: {' and '.join(flat)} ties every object of the {n} they share "
            "(a constant score has no order to correlate)")


def jaccard(ra: np.ndarray, rb: np.ndarray, percent: float) -> float:
    k = top_count(len(ra), percent)
    ta, tb = ra <= k, rb <= k
    union = int((ta | tb).sum())
    return float((ta & tb).sum() / union) if union else 0.0


def compare(ranks: RankMatrix, top_percent: float = 1.0, disagree_percent: float = 50.0,
            retention_percents: tuple[float, ...] | list[float] = (1.0, 10.0)) -> dict[str, pd.DataFrame]:
    """All pairwise comparisons: ``spearman``, ``jaccard`` (square), ``retention``, ``disagreement``,
    ``displacement`` (target percentile of each source top-q % object), ``shared`` (pair sizes) and
    ``notes`` (system_a, system_b, note: why a pair's Spearman is NaN)."""
    systems = ranks.systems
    m = len(systems)
    rho = np.eye(m)
    jac = np.eye(m)
    shared_n = np.zeros((m, m), dtype=np.int64)
    retention_rows, notes = [], []
    disagreement, displacement = _Pieces(), _Pieces()  # per-pair column pieces, joined once at the end
    ids = np.asarray(ranks.index.astype(str))
    for i, a in enumerate(systems):
        shared_n[i, i] = int(ranks.present[a].sum())
        for j in range(i + 1, m):
            b = systems[j]
            mask, ra, rb = ranks.shared(a, b)
            n = len(ra)
            shared_n[i, j] = shared_n[j, i] = n
            rho[i, j] = rho[j, i] = spearman(ra, rb)
            if np.isnan(rho[i, j]):
                notes.append({"system_a": a, "system_b": b, "note": _undefined(a, b, ra, rb)})
            jac[i, j] = jac[j, i] = jaccard(ra, rb, top_percent) if n else float("nan")
            if not n:
                continue
            pa, pb = 100.0 * ra / n, 100.0 * rb / n
            k = top_count(n, top_percent)
            rows = np.flatnonzero(mask)  # shared position -> row of the index (ids looked up for the few kept)
            for src, tgt, rs, rt, ps, pt in ((a, b, ra, rb, pa, pb), (b, a, rb, ra, pb, pa)):
                top = rs <= k
                row = {"source": src, "target": tgt, "n_shared": n, "n_source_top": int(top.sum())}
                for q in retention_percents:
                    row[f"retention_{_fmt(q)}"] = 100.0 * float((rt[top] <= top_count(n, q)).mean())
                row["median_target_percentile"] = float(np.median(pt[top]))
                retention_rows.append(row)
                displacement.add(int(top.sum()), {"source": src, "target": tgt}, object_id=ids[rows[top]],
                                 source_percentile=ps[top], target_percentile=pt[top])
                far = top & (pt > disagree_percent)
                disagreement.add(int(far.sum()), {"system_a": a, "system_b": b}, object_id=ids[rows[far]],
                                 percentile_a=pa[far], percentile_b=pb[far], anomalous_in=np.full(int(far.sum()), src, dtype=object))
    square = lambda x: pd.DataFrame(x, index=pd.Index(systems, name="system"), columns=systems)  # noqa: E731
    ret_cols = ["source", "target", "n_shared", "n_source_top", *[f"retention_{_fmt(q)}" for q in retention_percents],
                "median_target_percentile"]
    dis_cols = ["system_a", "system_b", "object_id", "percentile_a", "percentile_b", "anomalous_in"]
    disp_cols = ["source", "target", "object_id", "source_percentile", "target_percentile"]
    return {
        "spearman": square(rho),
        "jaccard": square(jac),
        "shared": square(shared_n),
        "retention": pd.DataFrame(retention_rows, columns=ret_cols),
        "disagreement": disagreement.frame(dis_cols),
        "displacement": displacement.frame(disp_cols),
        "notes": pd.DataFrame(notes, columns=["system_a", "system_b", "note"]),
    }


class _Pieces:
    """Rows of one long table gathered pair by pair as arrays (keys repeated per piece), made a frame once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.keys: dict[str, list[str]] = {}
        self.columns: dict[str, list[np.ndarray]] = {}

    def add(self, size: int, keys: dict[str, str], **columns: np.ndarray) -> None:
        self.sizes.append(size)
        for name, value in keys.items():
            self.keys.setdefault(name, []).append(value)
        for name, values in columns.items():
            self.columns.setdefault(name, []).append(values)

    def frame(self, order: list[str]) -> pd.DataFrame:
        if not self.sizes:
            return pd.DataFrame(columns=order)
        data = {name: np.repeat(np.asarray(values, dtype=object), self.sizes) for name, values in self.keys.items()}
        data |= {name: np.concatenate(parts) for name, parts in self.columns.items()}
        return pd.DataFrame({name: data[name] for name in order})


def _fmt(q: float) -> str:
    return f"{q:g}".replace(".", "p")


def retention_matrix(retention: pd.DataFrame, column: str = "retention_1") -> pd.DataFrame:
    """Square source x target matrix of one retention column (diagonal 100)."""
    systems = sorted(set(retention["source"]) | set(retention["target"]))
    out = retention.pivot(index="source", columns="target", values=column).reindex(index=systems, columns=systems)
    for s in systems:
        out.loc[s, s] = 100.0
    return out


__all__ = ["RankMatrix", "compare", "jaccard", "rerank", "retention_matrix", "spearman", "top_count"]
