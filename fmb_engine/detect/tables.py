"""Ranking helpers and the per-object anomaly table shared by every detector.

Why one module: flows and baseline detectors must write *interchangeable*
tables (same columns, same rank convention), so the table is built in one place.

Conventions
-----------
* ``rank`` 1 is the most anomalous object.
* Tied scores share the smallest rank of their group (competition ranking,
  "1 2 2 4"): rank ``r`` means ``r - 1`` objects score strictly higher. Objects
  with equal scores are never ordered by their position in the file, so a
  constant score ranks every object 1 instead of 1..N in row order
  (docs/science.md, "Ties and degenerate inputs"). Without ties this is 1..N.
* Rows keep the input object order; sort by ``rank`` for a top-k view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ANOMALY_COLUMNS: tuple[str, ...] = (
    "object_id",
    "embedding_key",
    "log_prob",
    "neg_log_prob",
    "anomaly_sigma",
    "rank",
)


def rank_descending(score: np.ndarray) -> np.ndarray:
    """Rank 1 for the highest score; tied scores share their smallest rank. Returns int64 (N,)."""
    return min_rank(-np.asarray(score, dtype=np.float64))


def rank_ascending(score: np.ndarray) -> np.ndarray:
    """Rank 1 for the lowest score; tied scores share their smallest rank. Returns int64 (N,)."""
    return min_rank(np.asarray(score, dtype=np.float64))


def min_rank(key: np.ndarray) -> np.ndarray:
    """Competition ranks of ``key`` ascending (1 = smallest); equal keys get the group's first rank.

    NaN never equals anything, so each NaN ranks alone after every number."""
    key = np.asarray(key, dtype=np.float64)
    return min_rank_ordered(key, np.argsort(key, kind="stable"))


def min_rank_ordered(key: np.ndarray, order: np.ndarray) -> np.ndarray:
    """:func:`min_rank` of ``key`` (float64) given ``order``, an ascending argsort of it: O(n), no sort.

    Equal keys may come in any order within ``order``: they get the same rank anyway. Lets a
    caller that sorted a larger array once rank any subset of it by restricting that order."""
    ordered = key[order]
    starts = np.ones(key.shape[0], dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    position = np.arange(1, key.shape[0] + 1, dtype=np.int64)
    rank = np.empty(key.shape[0], dtype=np.int64)
    rank[order] = np.maximum.accumulate(np.where(starts, position, 0)) if key.shape[0] else position
    return rank


def as_object_ids(object_ids: Sequence | np.ndarray, n: int, what: str) -> np.ndarray:
    """Object ids as an array of ``str`` (ids are strings everywhere), length-checked."""
    arr = np.asarray(object_ids).ravel()
    if arr.dtype.kind in "Uiu":
        ids = arr.astype(str).astype(object)
    elif arr.dtype.kind == "S":
        ids = np.char.decode(arr).astype(object)
    else:
        items = arr.tolist()
        if all(type(x) is str for x in items):
            ids = arr.astype(object, copy=True)
        else:
            ids = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in items], dtype=object)
    if ids.shape[0] != n:
        raise ValueError(f"{what}: {ids.shape[0]} object ids for {n} scores")
    return ids


def has_duplicates(ids: np.ndarray) -> bool:
    """True when an id occurs twice (set-based: fast for str objects)."""
    return len(set(ids.tolist())) != ids.shape[0]


def check_scores(score: np.ndarray, what: str) -> np.ndarray:
    """1-D finite float64 array or ValueError."""
    score = np.asarray(score, dtype=np.float64)
    if score.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of scores, got shape {score.shape}")
    if not np.isfinite(score).all():
        bad = int((~np.isfinite(score)).sum())
        raise ValueError(f"{what}: {bad} score(s) are NaN/Inf; drop or fix those objects first")
    return score


def anomaly_table(object_ids: Sequence | np.ndarray, log_prob: np.ndarray, embedding_key: str) -> pd.DataFrame:
    """Per-object density anomaly table, mirroring the reference CSV.

    Columns (exactly): ``object_id, embedding_key, log_prob, neg_log_prob,
    anomaly_sigma, rank`` with

    * ``neg_log_prob = -log_prob``
    * ``anomaly_sigma = (nlp - mean(nlp)) / std(nlp)`` (population std; 0 for
      every row when ``std < 1e-8``, as in the reference)
    * ``rank`` 1 = highest ``neg_log_prob`` (most anomalous); tied scores
      share their smallest rank (see the module docstring).

    Rows keep the input order. ``log_prob`` must be finite.
    """
    lp = check_scores(log_prob, "anomaly_table")
    ids = as_object_ids(object_ids, lp.shape[0], "anomaly_table")
    if not isinstance(embedding_key, str) or not embedding_key:
        raise ValueError(f"anomaly_table: embedding_key must be a non-empty string, got {embedding_key!r}")
    nlp = -lp
    if nlp.shape[0]:
        sd = float(nlp.std())
        sigma = (nlp - nlp.mean()) / sd if sd >= 1e-8 else np.zeros_like(nlp)
    else:
        sigma = np.zeros(0)
    return pd.DataFrame(
        {
            "object_id": ids,
            "embedding_key": np.full(lp.shape[0], embedding_key, dtype=object),
            "log_prob": lp,
            "neg_log_prob": nlp,
            "anomaly_sigma": sigma,
            "rank": rank_descending(nlp),
        },
        columns=list(ANOMALY_COLUMNS),
    )
