"""Rank fusion of image density, spectrum density and cross-modal mismatch (per model).

Why ranks: the three systems produce scores on unrelated scales (-log p of two
different flows, a cosine or a ridge residual). Converting each to a rank
percentile makes them comparable without calibration; an object that is
unusual in *both* modalities *and* whose modalities disagree is the most
interesting candidate.

Percentiles
-----------
The caller passes ranks (1 = most anomalous) from three systems, already
aligned on one list of objects that all three systems scored (the *join*), and
the number of objects each system ranked (``n_img, n_spec, n_mis``). The
modality of each system comes from the embedder's declaration, never from key
names (reference bug L1), so the caller hands over arrays already assigned.

With ``rerank=True`` (default) each system's ranks are re-ranked *within the
join* (order preserved, tied ranks stay tied) and ``N`` is the join size::

    p_x = (N - r_x + 1) / N    in (0, 1],  p = 1 for the most anomalous

so the three percentiles are uniform on the same population (the fused score
has a well-defined null distribution) and ``p`` stays in ``(0, 1]`` however many
objects the join dropped. This fixes reference bug L2, where ranks from the
full tables were divided by the join size and ``p`` could be <= 0. With
``rerank=False`` the original ranks are kept and ``N = n_x`` (the size of that
system's own ranking): ``p`` is then the percentile among all objects that
system scored. Both coincide when no object was dropped.

Fused scores (higher = more anomalous)::

    score_mm_geo = p_mis * sqrt(p_img * p_spec)
    score_mm_min = p_mis * min(p_img, p_spec)
    score_mm_avg = (p_mis + p_img + p_spec) / 3      (advertised by the reference, rejected there)
    score_mm_fisher = -2 * sum_x ln(r_x / N)          (Fisher's method on the empirical p-values)

``geo`` and ``min`` reward objects unusual in *every* system; an artefact seen
in one modality only scores low there. Fisher's combination treats each rank
percentile ``r_x / N`` as a p-value (uniform for a typical object) and sums the
evidence, so one very small p-value or several small ones both rank high; under
independence it is chi^2 with 6 degrees of freedom. On the default mock survey
it finds the injected anomalies best (docs/science.md), hence our default.

Uplift
------
The reference's ``geo - max(p_img, p_spec)`` is never positive. Ours asks:
does fusion rank the object higher than *every* single system does? With the
fused rank ``r_f`` of the chosen method within the join and the best single
rank ``r_b = min(r_img, r_spec, r_mis)`` (same ranking convention as ``p``)::

    uplift_mm = logit(q(r_f)) - logit(q(r_b)),   q(r) = (N - r + 0.5) / N,
    logit(q) = log(q / (1 - q))

(mid-rank percentiles keep the logit finite). ``uplift_mm > 0`` exactly when
the joint evidence ranks the object above its best single-system rank; it is
a log-odds gain, e.g. moving from the top 2 % to the top 0.5 % is about +1.4.
Under ``rerank=False`` the single-system percentiles use each system's own
``N``, the fused percentile the join size.

Ties
----
Tied scores share the smallest rank of their group (competition ranking, see
:mod:`fmb_engine.detect.tables`), in the input ranks, in the re-ranking and in
``rank_fused``. A system whose score is constant therefore gives every object
``p = 1``, the neutral element of the products and of ``min`` above: it drops
out of ``geo`` and ``min`` and adds the same constant to ``avg`` and
``fisher``, so the fused order is decided by the other systems, never by the
row order of the input. Without ties every rank is unique and the results are
those of the ordinal ranking (the reference's).

Thresholds
----------
``thresholds={"img": t_img, "spec": t_spec, "mis": t_mis}`` (missing keys = 0):
``passes_thresholds = p_img >= t_img & p_spec >= t_spec & p_mis >= t_mis``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fmb_engine.detect.params import FUSION_METHODS
from fmb_engine.detect.tables import as_object_ids, has_duplicates, min_rank, rank_descending

FUSION_COLUMNS: tuple[str, ...] = (
    "object_id", "rank_img", "rank_spec", "rank_mis", "p_img", "p_spec", "p_mis",
    "score_mm_geo", "score_mm_min", "score_mm_avg", "score_mm_fisher", "uplift_mm", "rank_fused", "passes_thresholds",
)
_SYSTEMS = ("img", "spec", "mis")


def percentile(rank: np.ndarray, n: int) -> np.ndarray:
    """``p = (n - rank + 1) / n``; rank 1 -> 1, rank n -> 1/n."""
    return (n - np.asarray(rank, dtype=np.float64) + 1.0) / n


def _logit_mid(rank: np.ndarray, n: int) -> np.ndarray:
    q = (n - np.asarray(rank, dtype=np.float64) + 0.5) / n
    return np.log(q) - np.log1p(-q)


def rerank_within(rank: np.ndarray) -> np.ndarray:
    """Re-rank 1..N preserving order; tied ranks share the smallest rank of their group."""
    return min_rank(np.asarray(rank, dtype=np.float64))


def _check_rank(name: str, rank: Any, n_total: Any, n_join: int) -> tuple[np.ndarray, int]:
    if isinstance(n_total, bool) or not isinstance(n_total, (int, np.integer)):
        raise ValueError(f"n_{name} must be an int (objects ranked by that system), got {n_total!r}")
    r = np.asarray(rank)
    if r.ndim != 1 or r.shape[0] != n_join:
        raise ValueError(f"rank_{name}: expected {n_join} ranks (one per object), got shape {r.shape}")
    if r.dtype.kind == "f":
        if not np.isfinite(r).all() or not np.all(r == np.round(r)):
            raise ValueError(f"rank_{name}: ranks must be whole numbers")
    elif r.dtype.kind not in "iu":
        raise ValueError(f"rank_{name}: ranks must be integers, got dtype {r.dtype}")
    r = r.astype(np.int64)
    if n_total < n_join:
        raise ValueError(f"n_{name}={n_total} is smaller than the {n_join} joined objects")
    if n_join and (r.min() < 1 or r.max() > n_total):
        raise ValueError(f"rank_{name}: ranks must lie in [1, n_{name}={n_total}], got [{r.min()}, {r.max()}]")
    return r, int(n_total)


def _check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    out = {s: 0.0 for s in _SYSTEMS}
    if thresholds is None:
        return out
    unknown = set(thresholds) - set(_SYSTEMS)
    if unknown:
        raise ValueError(f"unknown threshold key(s) {sorted(unknown)}; use 'img', 'spec', 'mis'")
    for k, v in thresholds.items():
        v = float(v)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"threshold {k!r} must lie in [0, 1], got {v}")
        out[k] = v
    return out


def fuse(
    object_ids: Sequence | np.ndarray,
    rank_img: np.ndarray,
    rank_spec: np.ndarray,
    rank_mis: np.ndarray,
    n_img: int,
    n_spec: int,
    n_mis: int,
    method: str = "geo",
    thresholds: Mapping[str, float] | None = None,
    rerank: bool = True,
) -> pd.DataFrame:
    """Fuse three rankings of the same objects (see the module docstring for every formula).

    Returns one row per object (input order) with columns ``object_id,
    rank_img, rank_spec, rank_mis`` (the ranks behind ``p``: within the join
    when ``rerank``), ``p_img, p_spec, p_mis, score_mm_geo, score_mm_min,
    score_mm_avg, score_mm_fisher, uplift_mm, rank_fused`` (by ``method``, 1 = most anomalous,
    tied fused scores share a rank) and ``passes_thresholds``. Tied input ranks are allowed
    (tied scores); see "Ties" in the module docstring.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"method must be one of {FUSION_METHODS}, got {method!r}")
    ids_arr = np.asarray(object_ids).ravel()
    ids = as_object_ids(ids_arr, ids_arr.shape[0], "fuse")
    n = ids.shape[0]
    if has_duplicates(ids):
        raise ValueError("fuse: object_ids contain duplicates; join the systems on unique ids first")
    ranks: dict[str, np.ndarray] = {}
    totals: dict[str, int] = {}
    for name, r, tot in (("img", rank_img, n_img), ("spec", rank_spec, n_spec), ("mis", rank_mis, n_mis)):
        ranks[name], totals[name] = _check_rank(name, r, tot, n)
    t = _check_thresholds(thresholds)

    if rerank:
        ranks = {k: rerank_within(v) for k, v in ranks.items()}
        totals = {k: n for k in ranks}
    p = {k: percentile(ranks[k], totals[k]) if n else np.zeros(0) for k in ranks}

    geo = p["mis"] * np.sqrt(p["img"] * p["spec"])
    mn = p["mis"] * np.minimum(p["img"], p["spec"])
    avg = (p["mis"] + p["img"] + p["spec"]) / 3.0
    # r / N = 1 - p + 1/N: the empirical p-value of being at least this anomalous
    fisher = -2.0 * sum(np.log(1.0 - p[k] + 1.0 / totals[k]) for k in _SYSTEMS) if n else np.zeros(0)
    fused = {"geo": geo, "min": mn, "avg": avg, "fisher": fisher}[method]
    rank_fused = rank_descending(fused)

    if n:
        best = np.maximum.reduce([_logit_mid(ranks[k], totals[k]) for k in _SYSTEMS])
        uplift = _logit_mid(rank_fused, n) - best
    else:
        uplift = np.zeros(0)
    passes = (p["img"] >= t["img"]) & (p["spec"] >= t["spec"]) & (p["mis"] >= t["mis"])
    return pd.DataFrame(
        {
            "object_id": ids,
            "rank_img": ranks["img"],
            "rank_spec": ranks["spec"],
            "rank_mis": ranks["mis"],
            "p_img": p["img"],
            "p_spec": p["spec"],
            "p_mis": p["mis"],
            "score_mm_geo": geo,
            "score_mm_min": mn,
            "score_mm_avg": avg,
            "score_mm_fisher": fisher,
            "uplift_mm": uplift,
            "rank_fused": rank_fused,
            "passes_thresholds": passes,
        },
        columns=list(FUSION_COLUMNS),
    )


def align_ranks(
    ids_img: Sequence | np.ndarray,
    rank_img: np.ndarray,
    ids_spec: Sequence | np.ndarray,
    rank_spec: np.ndarray,
    ids_mis: Sequence | np.ndarray,
    rank_mis: np.ndarray,
) -> dict[str, Any]:
    """Inner-join three (ids, rank) rankings on object id, for :func:`fuse`.

    Returns ``dict(object_ids, rank_img, rank_spec, rank_mis, n_img, n_spec,
    n_mis)`` with the common objects in the order of ``ids_img`` and each
    ``n_x`` = the number of objects system ``x`` ranked. Duplicate ids inside
    one system raise ValueError (the reference silently kept the smallest rank).
    """
    systems = {}
    for name, ids, rank in (("img", ids_img, rank_img), ("spec", ids_spec, rank_spec), ("mis", ids_mis, rank_mis)):
        r = np.asarray(rank)
        arr = as_object_ids(ids, r.shape[0], f"align_ranks({name})")
        if has_duplicates(arr):
            raise ValueError(f"align_ranks: duplicate object ids in the {name} ranking")
        systems[name] = (arr, r)
    pos_spec = {k: i for i, k in enumerate(systems["spec"][0].tolist())}
    pos_mis = {k: i for i, k in enumerate(systems["mis"][0].tolist())}
    ids_i, rank_i = systems["img"]
    keep = [i for i, k in enumerate(ids_i.tolist()) if k in pos_spec and k in pos_mis]
    common = ids_i[keep]
    return {
        "object_ids": common,
        "rank_img": rank_i[keep],
        "rank_spec": systems["spec"][1][[pos_spec[k] for k in common.tolist()]],
        "rank_mis": systems["mis"][1][[pos_mis[k] for k in common.tolist()]],
        "n_img": int(ids_i.shape[0]),
        "n_spec": int(systems["spec"][0].shape[0]),
        "n_mis": int(systems["mis"][0].shape[0]),
    }
