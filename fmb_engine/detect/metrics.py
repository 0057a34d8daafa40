"""Detection-quality metrics of one score array against known anomaly labels (mock surveys with injected anomalies).

Arrays in, a tidy table out; the ``fmb-engine evaluate`` stage that reads a workspace and
writes the report is :mod:`fmb_engine.detect.evaluation`.

Why: on a survey with injected, labelled anomalies we can measure how well a
ranking recovers them, overall and per anomaly class, to compare detectors and
presets with numbers instead of by eye.

Inputs: ``labels`` = one string per object, ``""`` for a normal object and the
anomaly class name otherwise; ``score`` = higher is more anomalous (e.g.
``neg_log_prob``, a baseline score, a fused score).

Subsets
-------
* ``all``: positives = every labelled anomaly, negatives = every normal object.
* one subset per class ``c``: positives = objects of class ``c``, negatives =
  normal objects only (other classes are left out, so one easy class cannot
  hide a hard one).

Metrics (per subset; sklearn.metrics)
-------------------------------------
* ``auroc``: ``roc_auc_score`` (NaN when the subset lacks positives or negatives)
* ``average_precision``: ``average_precision_score`` (NaN without positives)
* ``precision@k`` = (positives among the top ``k`` of the subset) / ``k'`` and
  ``recall@k`` = that count / (positives in the subset), where the top ``k``
  is taken by descending score and ``k' = min(k, subset size)``. When the
  ``k``-th place falls in a group of tied scores, the count is its expectation
  over the orders of the tie: the objects above the tie plus the tie's
  positives times (free places / tie size). Row order never decides, so a
  constant score gets the chance-level precision (the positives' share).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

EVAL_COLUMNS: tuple[str, ...] = ("subset", "metric", "k", "value", "n_positive", "n_negative")


def _labels(labels: Sequence | np.ndarray, n: int) -> np.ndarray:
    out = np.array(["" if (x is None or (isinstance(x, float) and np.isnan(x))) else str(x)
                    for x in np.asarray(labels, dtype=object).ravel()], dtype=object)
    if out.shape[0] != n:
        raise ValueError(f"{out.shape[0]} labels for {n} scores")
    return out


def _subset_metrics(y: np.ndarray, s: np.ndarray, ks: Sequence[int]) -> list[tuple[str, int | None, float]]:
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    rows: list[tuple[str, int | None, float]] = []
    rows.append(("auroc", None, float(roc_auc_score(y, s)) if n_pos and n_neg else np.nan))
    rows.append(("average_precision", None, float(average_precision_score(y, s)) if n_pos else np.nan))
    ordered = np.sort(s)[::-1]
    for k in ks:
        kk = min(k, y.shape[0])
        tp = _expected_hits(y, s, ordered[kk - 1], kk) if kk else 0
        rows.append(("precision@k", k, tp / kk if kk else np.nan))
        rows.append(("recall@k", k, tp / n_pos if n_pos else np.nan))
    return rows


def _expected_hits(y: np.ndarray, s: np.ndarray, cut: float, k: int) -> float:
    """Positives among the top ``k`` by score, averaged over the orders of the tie at the ``cut`` score."""
    above, tied = s > cut, s == cut
    return float(y[above].sum() + y[tied].sum() * (k - above.sum()) / tied.sum())


def evaluate_scores(
    labels: Sequence | np.ndarray,
    score: np.ndarray,
    ks: Iterable[int] = (10, 50, 100),
) -> pd.DataFrame:
    """Tidy metrics table: one row per (subset, metric, k).

    Columns: ``subset`` (``"all"`` or a class name, classes sorted),
    ``metric`` (``auroc``, ``average_precision``, ``precision@k``,
    ``recall@k``), ``k`` (``<NA>`` for the first two), ``value``,
    ``n_positive``, ``n_negative``. See the module docstring for definitions.
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"score must be 1-D, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"score has {int((~np.isfinite(s)).sum())} NaN/Inf value(s)")
    lab = _labels(labels, s.shape[0])
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    normal = lab == ""
    subsets: list[tuple[str, np.ndarray]] = [("all", np.ones_like(normal))]
    for cls in sorted(set(lab[~normal])):
        subsets.append((cls, normal | (lab == cls)))
    records = []
    for name, keep in subsets:
        y = (~normal[keep]).astype(np.int64)
        n_pos, n_neg = int(y.sum()), int(y.shape[0] - y.sum())
        for metric, k, value in _subset_metrics(y, s[keep], ks):
            records.append((name, metric, k, value, n_pos, n_neg))
    df = pd.DataFrame.from_records(records, columns=list(EVAL_COLUMNS))
    df["k"] = df["k"].astype("Int64")
    return df


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """GitHub-flavoured Markdown table of ``df`` (no ``tabulate`` dependency).

    Floats use ``floatfmt``; missing values print as empty cells; ``|`` inside
    cells is escaped; numeric columns are right-aligned.
    """
    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in df.columns]
    body = [[cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    widths = [max([len(c), 3] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(cols), sep, *[line(r) for r in body]]) + "\n"
