"""Exact cosine k-nearest neighbours and the anomaly ranks of neighbours.

Rows are L2-normalised, similarities are blocks of matrix products ``Q Xᵀ`` (torch,
float32; faiss ``IndexFlatIP`` when installed and asked for), the top ``k + 1`` of
each block row is kept and the query itself (by row index, not by similarity, so
duplicated vectors stay neighbours) is dropped.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0).astype(np.float32)


def has_faiss() -> bool:
    return importlib.util.find_spec("faiss") is not None


def knn(database: np.ndarray, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None,
        chunk: int = 4096, backend: str = "auto", symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of each query row in ``database``.

    ``self_rows[i]`` is the database row of query i (-1 if none) and is never returned. A
    self-query of the whole database (``symmetric``) computes only half of ``X Xᵀ``.
    Returns (indices (Q, k) int64, similarities (Q, k) float32), best first; rows
    with fewer than k candidates are padded with -1 / NaN.
    """
    db = normalise(database)
    q = normalise(queries)
    n, nq = db.shape[0], q.shape[0]
    self_rows = np.full(nq, -1, np.int64) if self_rows is None else np.asarray(self_rows, np.int64)
    kk = min(k + 1, n)
    if backend == "faiss" or (backend == "auto" and has_faiss()):
        import faiss  # type: ignore[import-not-found]

        index = faiss.IndexFlatIP(db.shape[1])
        index.add(db)
        sims, idx = index.search(q, kk)
        idx = idx.astype(np.int64)
    elif symmetric and nq == n and np.array_equal(self_rows, np.arange(n)) and (queries is database or np.array_equal(q, db)):
        idx, sims = _self_knn(db, kk, chunk)
    else:
        import torch

        dbt = torch.from_numpy(db)
        idx = np.empty((nq, kk), np.int64)
        sims = np.empty((nq, kk), np.float32)
        with torch.inference_mode():
            for start in range(0, nq, chunk):
                block = torch.from_numpy(q[start:start + chunk]) @ dbt.T
                s, i = torch.topk(block, kk, dim=1, largest=True, sorted=True)
                idx[start:start + chunk] = i.numpy()
                sims[start:start + chunk] = s.numpy()
    return _drop_self(idx, sims, self_rows, k)


def _merge(vals, idx, new_vals, new_idx, kk):
    import torch

    v, pos = torch.topk(torch.cat([vals, new_vals], dim=1), kk, dim=1, largest=True, sorted=True)
    return v, torch.gather(torch.cat([idx, new_idx], dim=1), 1, pos)


def _self_knn(x: np.ndarray, kk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Self-query using the symmetry of X Xᵀ: strip i is X_i X_{i:}ᵀ (about half the products).

    Rows of block i take their top kk from the strip; the strip's columns beyond block i
    give later rows their candidates from block i (column top kk), merged into a running top kk.
    """
    import torch

    n = x.shape[0]
    xt = torch.from_numpy(x)
    vals = torch.full((n, kk), -float("inf"))
    idx = torch.full((n, kk), -1, dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            strip = xt[start:stop] @ xt[start:].T  # (b, n - start)
            k_row = min(kk, strip.shape[1])
            v, i = torch.topk(strip, k_row, dim=1, largest=True, sorted=True)
            vals[start:stop], idx[start:stop] = _merge(vals[start:stop], idx[start:stop], v, i + start, kk)
            if stop < n:
                later = strip[:, stop - start:]  # (b, n - stop): candidates for rows stop..n from block i
                k_col = min(kk, later.shape[0])
                v, i = torch.topk(later, k_col, dim=0, largest=True, sorted=True)
                vals[stop:], idx[stop:] = _merge(vals[stop:], idx[stop:], v.T.contiguous(), i.T.contiguous() + start, kk)
    return idx.numpy(), vals.numpy()


def _drop_self(idx: np.ndarray, sims: np.ndarray, self_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = idx != self_rows[:, None]
    keep &= idx >= 0
    # keep the first k allowed entries of each row (stable: order stays best first)
    pos = np.cumsum(keep, axis=1)
    keep &= pos <= k
    out_i = np.full((len(idx), k), -1, np.int64)
    out_s = np.full((len(idx), k), np.nan, np.float32)
    rows, cols = np.nonzero(keep)
    slot = pos[rows, cols] - 1
    out_i[rows, slot] = idx[rows, cols]
    out_s[rows, slot] = sims[rows, cols]
    return out_i, out_s


def neighbour_table(query_ids: np.ndarray, ids: np.ndarray, idx: np.ndarray, sims: np.ndarray,
                    model: str, modality: str) -> pd.DataFrame:
    """Long table ``object_id, model, modality, neighbour (1..k), neighbour_id, similarity``."""
    nq, k = idx.shape
    ok = idx >= 0
    rows, cols = np.nonzero(ok)
    return pd.DataFrame({
        "object_id": np.asarray(query_ids, dtype=object)[rows].astype(str),
        "model": model,
        "modality": modality,
        "neighbour": (cols + 1).astype(np.int32),
        "neighbour_id": np.asarray(ids, dtype=object)[idx[rows, cols]].astype(str),
        "similarity": sims[rows, cols].astype(np.float32),
    })


def neighbour_ranks(neighbours: pd.DataFrame, ranks: pd.Series) -> pd.DataFrame:
    """Add each neighbour's rank and percentile ``100 · r / n`` (r re-numbered within the ranked set)."""
    from fmb_engine.analyze.rankings import rerank

    ranked = ranks.dropna()
    r = pd.Series(rerank(ranked.to_numpy(dtype=np.float64)), index=ranked.index.astype(str))
    out = neighbours.copy()
    out["rank"] = out["neighbour_id"].map(r).astype("Int64")
    out["percentile"] = 100.0 * out["rank"].astype("Float64") / len(r)
    return out


def summarise_neighbour_ranks(table: pd.DataFrame, top_percent: float = 1.0) -> pd.DataFrame:
    """Per model and modality: queries, neighbours with a rank, median percentile, top-q % share."""
    rows = []
    for (model, modality), part in table.groupby(["model", "modality"], sort=True):
        pct = part["percentile"].dropna().astype(float)
        rows.append({"model": model, "modality": modality, "queries": part["object_id"].nunique(),
                     "neighbours": len(pct), "median_percentile": float(pct.median()) if len(pct) else float("nan"),
                     f"top{top_percent:g}_share": 100.0 * float((pct <= top_percent).mean()) if len(pct) else float("nan"),
                     "expected_share": float(top_percent)})
    return pd.DataFrame(rows)


__all__ = ["has_faiss", "knn", "neighbour_ranks", "neighbour_table", "normalise", "summarise_neighbour_ranks"]
