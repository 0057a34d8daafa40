"""Exact cosine k-nearest neighbours, the choice of k-NN backend, and the anomaly ranks of neighbours.

Rows are L2-normalised, similarities are blocks of matrix products ``Q Xᵀ`` (torch,
float32; faiss ``IndexFlatIP`` when installed and asked for), the top ``k + 1`` of
each block row is kept and the query itself (by row index, not by similarity, so
duplicated vectors stay neighbours) is dropped. A block holds at most
:data:`BLOCK_ELEMENTS` similarities, whatever N. The approximate search of large tables
is :mod:`fmb_engine.analyze.ann`.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import numpy as np
import pandas as pd

from fmb_engine.errors import ConfigError

#: Similarities per matrix-product block at most (512 MiB of float32): bounds memory at any N.
BLOCK_ELEMENTS = 1 << 27


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0).astype(np.float32)


def has_faiss() -> bool:
    return importlib.util.find_spec("faiss") is not None


#: How to install the optional faiss package (the ``ann`` extra).
FAISS_INSTALL = "pip install 'fmb[ann]'  (or: pip install 'faiss-cpu>=1.8')"


def require_faiss(why: str, setting: str = "analyze.backend") -> ModuleType:
    """``import faiss`` or a :class:`ConfigError` naming the package, how to install it and the ``setting`` to change."""
    if not has_faiss():
        raise ConfigError(f"{why} needs the optional package faiss-cpu, which is not installed; install it with "
                          f"`{FAISS_INSTALL}`, or set {setting} to exact or auto")
    import faiss  # type: ignore[import-not-found]

    return faiss


def choose_backend(backend: str, n: int, n_queries: int, threshold: int,
                   section: str = "analyze") -> tuple[str, str | None]:
    """The engine of one search (``approx``, ``faiss`` or ``torch``) and, when auto had to
    fall back, why.

    ``exact`` is faiss ``IndexFlatIP`` when installed, else torch; ``auto`` is approximate
    when the exact work ``Q · N`` reaches that of a self-query at the threshold
    (``threshold²``, i.e. ``N ≥ threshold`` for a self-query) and faiss is installed, exact
    otherwise. Explicit ``approx`` or ``faiss`` without faiss installed is a ConfigError.
    ``section`` names the settings in the messages: ``analyze`` (``backend``, ``approx_threshold``)
    or ``detect`` (``knn_backend``, ``knn_approx_threshold``, the k-NN baseline's).
    """
    prefix = "" if section == "analyze" else "knn_"
    if backend in ("approx", "faiss"):
        require_faiss(f"{section}.{prefix}backend {backend}", f"{section}.{prefix}backend")
    if backend in ("approx", "faiss", "torch"):
        return backend, None
    exact = "faiss" if has_faiss() else "torch"
    if backend == "auto" and n_queries * n >= threshold * threshold:
        if has_faiss():
            return "approx", None
        return exact, (f"{n:,} objects and {n_queries:,} queries reach {section}.{prefix}approx_threshold ({threshold:,}) but "
                       f"faiss-cpu is not installed: exact search instead (slow at this size; install it with `{FAISS_INSTALL}`)")
    return exact, None


def knn(database: np.ndarray, queries: np.ndarray, k: int, self_rows: np.ndarray | None = None,
        chunk: int = 4096, backend: str = "auto", symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of each query row in ``database``.

    ``self_rows[i]`` is the database row of query i (-1 if none) and is never returned. A
    self-query of the whole database (``symmetric``) computes only half of ``X Xᵀ``.
    Returns (indices (Q, k) int64, similarities (Q, k) float32), best first; rows
    with fewer than k candidates are padded with -1 / NaN.
    """
    q = normalise(queries)
    n, nq = database.shape[0], q.shape[0]
    self_rows = np.full(nq, -1, np.int64) if self_rows is None else np.asarray(self_rows, np.int64)
    kk = min(k + 1, n)
    if backend == "faiss" or (backend == "auto" and has_faiss()):
        faiss = require_faiss("analyze.backend faiss")
        index = faiss.IndexFlatIP(database.shape[1])
        index.add(normalise(database))
        sims, idx = index.search(q, kk)
        idx = idx.astype(np.int64)
    elif symmetric and nq == n and np.array_equal(self_rows, np.arange(n)) and (queries is database or np.array_equal(q, normalise(database))):
        idx, sims = _self_knn(q, kk, chunk)
    else:
        idx, sims = _streamed_knn(database, q, kk, chunk)
    return drop_self(idx, sims, self_rows, k)


def _merge(vals, idx, new_vals, new_idx, kk):
    import torch

    v, pos = torch.topk(torch.cat([vals, new_vals], dim=1), kk, dim=1, largest=True, sorted=True)
    return v, torch.gather(torch.cat([idx, new_idx], dim=1), 1, pos)


def _streamed_knn(database: np.ndarray, q: np.ndarray, kk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` of normalised queries over the database, read in normalised row blocks
    (each normalised once) against query blocks: memory is the blocks plus the running top ``kk``."""
    import torch

    n, nq = database.shape[0], q.shape[0]
    q_rows = max(1, min(chunk, nq))
    db_rows = max(1, min(n, BLOCK_ELEMENTS // q_rows, BLOCK_ELEMENTS // database.shape[1]))  # products and rows bounded
    vals = torch.full((nq, kk), -float("inf"))
    idx = torch.full((nq, kk), -1, dtype=torch.int64)
    qt = torch.from_numpy(q)
    with torch.inference_mode():
        for d0 in range(0, n, db_rows):
            block = torch.from_numpy(normalise(database[d0:d0 + db_rows]))
            width = min(kk, block.shape[0])
            for q0 in range(0, nq, q_rows):
                v, i = torch.topk(qt[q0:q0 + q_rows] @ block.T, width, dim=1, largest=True, sorted=True)
                vals[q0:q0 + q_rows], idx[q0:q0 + q_rows] = _merge(vals[q0:q0 + q_rows], idx[q0:q0 + q_rows], v, i + d0, kk)
    return idx.numpy(), vals.numpy()


def _self_knn(x: np.ndarray, kk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Self-query using the symmetry of X Xᵀ: strip i is X_i X_{i:}ᵀ (about half the products).

    Rows of block i take their top kk from the strip; the strip's columns beyond block i
    give later rows their candidates from block i (column top kk), merged into a running top kk.
    """
    import torch

    n = x.shape[0]
    chunk = max(1, min(chunk, BLOCK_ELEMENTS // n))  # a strip is chunk x (n - start) similarities
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


def drop_self(idx: np.ndarray, sims: np.ndarray, self_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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


__all__ = ["BLOCK_ELEMENTS", "choose_backend", "drop_self", "has_faiss", "knn", "neighbour_ranks", "neighbour_table", "normalise", "require_faiss",
           "summarise_neighbour_ranks"]
