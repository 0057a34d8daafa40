"""Benchmark of the approximate k-NN (not a test): issue 15's target.

10,000 queries, top 10, over N x D clustered float32 vectors (default 10⁶ x 768, about 3 GB):
index build time (target <= 5 min), search time of the 10,000 queries (target <= 30 s) and
recall@10 against exact search on 1,000 of them (target >= 0.95), through the engine's own
``approx_knn`` (nprobe tuned on a separate sample of 256 queries, as in `analyze similarity`).
The in-run reference is exact search of the same queries (chunked float32 matrix products,
the engine's exact path): timed on the recall sample and scaled to all queries ("est.").

    python bench/knn.py                  # 10⁶ x 768 (about 4.5 GB peak)
    python bench/knn.py -n 100000        # 10⁵ x 768
    python bench/knn.py -n 100000 --compare   # also float32/float16 cells and HNSW32, same data

Data: ``N / 1000`` cluster centres ~ N(0, I) with Zipf-like sizes (1/sqrt(rank)); each point is
its centre plus a spread in a 32-dimensional subspace shared by all clusters (standard deviation
``--spread`` = 1 per dimension, as the centres) plus isotropic noise (0.1 per dimension): a low
intrinsic dimension, as embeddings have. Fewer objects per cluster (``--clusters``) make the
neighbours of a point nearly equidistant and any inverted file needs many more cells per query.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def clustered(n: int, d: int, clusters: int, spread: float, seed: int, chunk: int = 65536) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    sizes = 1.0 / np.arange(1, clusters + 1) ** 0.5
    basis = rng.standard_normal((32, d), dtype=np.float32) * np.float32(spread / np.sqrt(32))
    x = np.empty((n, d), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        part = x[start:start + m]
        part[:] = centres[rng.choice(clusters, size=m, p=sizes / sizes.sum())]
        part += rng.standard_normal((m, 32), dtype=np.float32) @ basis
        part += np.float32(0.1) * rng.standard_normal((m, d), dtype=np.float32)
    return x


def compare(x: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, nlist: int, nprobe: int) -> None:
    """The alternatives at the same N, codes not re-ranked: float32 and float16 cells and an HNSW
    graph (faiss defaults otherwise);
    ``truth`` is the exact top ``k`` of the first queries, the query itself included."""
    import faiss

    from fmb_engine.analyze.ann import recall_at_k
    from fmb_engine.analyze.similarity import normalise

    xn = normalise(x)
    for spec, knob, value in ((f"IVF{nlist},Flat", "nprobe", nprobe), (f"IVF{nlist},SQfp16", "nprobe", nprobe),
                              ("HNSW32", "efSearch", 64)):
        index = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        index.train(xn[np.sort(np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False))])
        index.add(xn)
        build = time.perf_counter() - t0
        if knob == "nprobe":
            index.nprobe = value
        else:
            index.hnsw.efSearch = value
        t0 = time.perf_counter()
        _, found = index.search(normalise(queries), k)
        search = time.perf_counter() - t0
        rec = recall_at_k(found[:len(truth)], truth)
        print(f"  {spec} ({knob} {value}): build {build:.1f} s, search {search:.1f} s, recall@{k} {rec:.4f} (self counted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=0, help="Cluster centres (default N / 1000: about a thousand objects each).")
    ap.add_argument("--spread", type=float, default=1.0, help="Standard deviation per dimension of the within-cluster spread (centres are ~N(0, I)).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="Also IVF-Flat and HNSW32 on the same data (slow at 10⁶).")
    args = ap.parse_args()

    from fmb_engine.analyze.ann import ApproxSettings, approx_knn

    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    t0 = time.perf_counter()
    args.clusters = args.clusters or max(1, args.n // 1000)
    x = clustered(args.n, args.dim, args.clusters, args.spread, args.seed)
    print(f"data {args.n:,} x {args.dim} float32 ({x.nbytes / 2**30:.2f} GiB), {args.clusters} clusters: {time.perf_counter() - t0:.1f} s")
    rows = np.sort(np.random.default_rng(args.seed + 1).choice(args.n, args.queries, replace=False))
    settings = ApproxSettings(recall_queries=args.recall_queries, seed=args.seed)
    t0 = time.perf_counter()
    idx, _, r = approx_knn(x, x[rows], args.k, self_rows=rows, settings=settings)
    total = time.perf_counter() - t0
    exact_all = r["exact_sample_s"] * args.queries / r["recall_queries"]
    steps = ", ".join(f"{s['nprobe']}: {s['recall']:.3f}" for s in r["tuning"]["steps"])
    print(f"index {r['index']}, nlist {r['nlist']}, trained on {r['train_rows']:,} rows")
    print(f"build {r['build_s']:.1f} s wall, {r['build_cpu_s']:.1f} CPU s (train {r['train_s']:.1f} s)   [target <= 300 s]")
    print(f"nprobe tuning on {r['tuning']['queries']} queries: {r['tune_s']:.1f} s; recall@{args.k} by nprobe: {steps}")
    print(f"search {args.queries:,} queries, top {args.k}, nprobe {r['nprobe']}: {r['search_s']:.1f} s wall, "
          f"{r['search_cpu_s']:.1f} CPU s   [target <= 30 s]")
    print(f"recall@{args.k} vs exact on {r['recall_queries']:,} separate queries: {r[f'recall_at_{args.k}']:.4f}   [target >= 0.95]")
    print(f"exact reference: {r['exact_sample_s']:.1f} s wall ({r['exact_sample_cpu_s']:.1f} CPU s) for {r['recall_queries']:,} queries -> {exact_all:.0f} s (est.) for "
          f"{args.queries:,}; ratio exact / approximate search = {exact_all / r['search_s']:.1f}x "
          f"(with build and tuning: {exact_all / (r['build_s'] + r['tune_s'] + r['search_s']):.1f}x)")
    print(f"approx_knn total {total:.1f} s; load after: {os.getloadavg()[0]:.2f}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.compare:
        from fmb_engine.analyze.similarity import knn

        check = rows[: args.recall_queries]
        truth, _ = knn(x, x[check], args.k + 1, backend="torch", symmetric=False)
        compare(x, x[rows], truth, args.k + 1, r["nlist"], r["nprobe"])


if __name__ == "__main__":
    main()
