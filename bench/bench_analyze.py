"""Benchmark of the analysis core (not a test).

* k-NN: exact cosine self-query of N x D float32 (default 40,000 x 768), top 10,
  self excluded, chunked torch matrix products (target: <= 20 s on 2 cores); checked
  against a float64 numpy brute force on 200 random queries.
* rankings: Spearman / Jaccard / retention / disagreement over S systems x N objects
  with 2 % of ranks missing per system (shared-set re-ranking exercised).

    python bench/bench_analyze.py                     # 40,000 x 768, 12 systems
    python bench/bench_analyze.py -n 10000 --dim 256  # smaller
    python bench/bench_analyze.py --threads 2 --chunk 2048
    python bench/bench_analyze.py --generic           # without the X Xᵀ symmetry (for comparison)

Reference, in the same run: the reference system's similarity search -- one query at a time,
``sims = X @ q`` then ``topk(k + 10)`` and self dropped (torch, same threads) -- timed on
``--ref-queries`` queries and scaled to N (marked "est.").
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
import torch

from fmb_engine.analyze.rankings import RankMatrix, compare
from fmb_engine.analyze.similarity import knn, normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--systems", type=int, default=12)
    ap.add_argument("--backend", default="torch", choices=["torch", "faiss", "auto"])
    ap.add_argument("--generic", action="store_true", help="Full Q Xᵀ products instead of the symmetric self-query.")
    ap.add_argument("--ref-queries", type=int, default=2000, help="Queries timed for the per-query reference (0: skip).")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(args.n, 16)).astype(np.float32)
    x = latent @ rng.normal(size=(16, args.dim)).astype(np.float32) + 0.5 * rng.normal(size=(args.n, args.dim)).astype(np.float32)

    t0, c0 = time.perf_counter(), time.process_time()
    idx, sims = knn(x, x, args.k, self_rows=np.arange(args.n), chunk=args.chunk, backend=args.backend,
                     symmetric=not args.generic)
    t_knn, c_knn = time.perf_counter() - t0, time.process_time() - c0
    q = rng.choice(args.n, 200, replace=False)
    xn = normalise(x).astype(np.float64)
    full = xn[q] @ xn.T
    full[np.arange(200), q] = -np.inf
    best = np.sort(full, axis=1)[:, ::-1][:, : args.k]
    err = float(np.abs(best - sims[q]).max())
    print(f"knn {'generic' if args.generic else 'symmetric'} self-query {args.n:,} x {args.dim}, k={args.k}, {args.threads} threads, chunk {args.chunk}: "
          f"{t_knn:.2f} s wall, {c_knn:.1f} CPU s ({args.n / t_knn:,.0f} queries/s); max |sim - float64 brute force| = {err:.2e}; "
          f"self returned: {int((idx == np.arange(args.n)[:, None]).sum())}")

    if args.ref_queries:
        xt = torch.from_numpy(normalise(x))
        n_ref = min(args.ref_queries, args.n)
        t0 = time.perf_counter()
        for i in range(n_ref):  # the reference: q . X^T per query, topk(k + 10), drop self
            top = torch.topk(xt @ xt[i], args.k + 10)
            keep = top.indices[top.indices != i][: args.k]
            assert keep.numel() == args.k
        t_ref = (time.perf_counter() - t0) * args.n / n_ref
        est = " (est.)" if n_ref < args.n else ""
        print(f"reference per-query scan: {t_ref:.1f} s{est} for {args.n:,} queries (timed {n_ref:,}); "
              f"ratio reference / ours = {t_ref / t_knn:.1f}x")

    ids = [f"o{i}" for i in range(args.n)]
    cols = {}
    for s in range(args.systems):
        score = latent[:, s % 16] + rng.normal(0, 1.0 + s * 0.1, args.n)
        rank = pd.Series(score).rank(ascending=False, method="first")
        rank[rng.random(args.n) < 0.02] = np.nan
        cols[f"m{s // 3}/mod{s % 3}/flow"] = rank.to_numpy()
    frame = pd.DataFrame(cols, index=ids)
    t0 = time.perf_counter()
    res = compare(RankMatrix(frame))
    t_rank = time.perf_counter() - t0
    print(f"rankings {args.systems} systems x {args.n:,} objects ({args.systems * (args.systems - 1) // 2} pairs): "
          f"{t_rank:.2f} s; {len(res['disagreement']):,} disagreements")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
