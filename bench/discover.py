"""Benchmark of active discovery (not a test): the discovery table on a mock survey, and re-rank times.

(a) Discovery table. On a mock workspace with cca embeddings and detection (``--workspace``, or a fresh
    10,000-object mock built in a temp folder with ``--mock-seed``), the features are the concatenated
    image + spectrum + joint embeddings reduced by :class:`Features` (32 whitened dims), the base score is
    the best fused system (``cca/fused/fisher``), the oracle's truth the physical rarities. Every strategy
    runs for every seed (budget 200, batch 10); the table gives found at 50/100/200 (mean ± std) and the
    ratios default/static and default/astronomaly measured in the same run. Every fused system's static
    count is printed too, so "the best fused ranking" can be checked.

(b) Re-rank time with 200 labels (30 % relevant) on synthetic N(0, 1) float32 vectors, 40,000 x 768 and
    1,000,000 x 768: features + fit + score, as :func:`rerank` does it, with the BLAS pool at 1 thread
    and at its default. Wall time and the process's CPU time are printed: with one thread, CPU time is
    what the wall time would be on a quiet machine. Reference in the same run (40k only unless
    ``--ref-1e6``): the direct version, sklearn's PCA (randomized, float64) and the kernel computed in
    float64 one width at a time (``np.exp`` per width, 65,536-row blocks).

    python bench/discover.py --workspace /path/to/mock-ws   # table on an existing workspace + timings
    python bench/discover.py                                 # builds a 10k mock first (~3 min on 2 cores)
    python bench/discover.py --skip-timing --out out/        # table only; writes curves.csv + figure
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("random", "static", "astronomaly", "gp", "evidence")


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def build_mock(root: Path, objects: int, seed: int) -> None:
    """A mock workspace through the CLI: init, data mock, embed cca, detect all."""
    exe = str(Path(sys.executable).with_name("fmb-engine"))
    for args in (["init", str(root), "--exist-ok"],
                 ["data", "mock", "--objects", str(objects), "--seed", str(seed), "-w", str(root)],
                 ["embed", "cca", "-w", str(root)], ["detect", "all", "--model", "cca", "-w", str(root)]):
        subprocess.run([exe, *args], check=True, stdout=subprocess.DEVNULL)


def load_workspace(root: Path, model: str, base_system: str):
    import pandas as pd

    from fmb_engine.discover.config import DEFAULT_INTERESTING as INTERESTING
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.survey.store import SurveyReader

    with EmbeddingReader(root / "embeddings" / f"{model}.h5") as reader:
        ids = reader.object_ids.astype(str)
        X = np.concatenate([np.asarray(reader.load(m), dtype=np.float32) for m in ("image", "spectrum", "joint")], 1)
    with SurveyReader(root / "survey" / "mock.h5") as survey:
        truth = survey.table().set_index("object_id")["anomaly_class"].reindex(ids).fillna("")
    systems = pd.read_parquet(root / "scores" / "systems.parquet").set_index("object_id").reindex(ids)
    keep = np.isfinite(X).all(1)
    fused = {c.removeprefix("score:"): systems[c].to_numpy(float)[keep]
             for c in systems.columns if c.startswith(f"score:{model}/fused/")}
    return X[keep], fused[base_system], truth.isin(INTERESTING).to_numpy()[keep], fused


def discovery_table(args) -> None:
    from fmb_engine.discover.features import Features
    from fmb_engine.discover.simulate import simulate, summarize

    tmp = tempfile.TemporaryDirectory()
    root = args.workspace
    if root is None:
        root = Path(tmp.name) / "mock"
        t = time.perf_counter()
        build_mock(root, args.objects, args.mock_seed)
        print(f"mock workspace built in {time.perf_counter() - t:.0f} s "
              f"({args.objects} objects, seed {args.mock_seed})")
    X, base, interesting, fused = load_workspace(root, args.model, args.base)
    Z = Features().fit_transform(X)
    print(f"workspace {root}: {X.shape[0]} objects x {X.shape[1]} dims -> {Z.shape[1]} features; "
          f"{int(interesting.sum())} interesting; base {args.base}")
    for name, score in fused.items():
        order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
        print(f"  static {name:24s} found @50 {interesting[order[:50]].sum():3d}  @100 "
              f"{interesting[order[:100]].sum():3d}  @200 {interesting[order[:200]].sum():3d}")
    t0 = time.perf_counter()
    curves = simulate(Z, base, interesting, STRATEGIES, seeds=args.seeds, budget=args.budget, batch=args.batch)
    print(f"simulation: {len(STRATEGIES)} strategies x {args.seeds} seeds in {time.perf_counter() - t0:.0f} s "
          f"(load {load_average()})")
    summary = summarize(curves).set_index(["strategy", "inspected"])
    counts = sorted(summary.index.get_level_values("inspected").unique())
    print("\n| strategy | " + " | ".join(f"found @{c}" for c in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name in STRATEGIES:
        cells = [f"{summary.loc[(name, c), 'mean']:.1f} ± {summary.loc[(name, c), 'std']:.1f}" for c in counts]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for ref in ("static", "astronomaly"):
        ratios = [summary.loc[("evidence", c), "mean"] / max(summary.loc[(ref, c), "mean"], 1e-9) for c in counts]
        print(f"| default / {ref} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    if args.out is not None:
        from fmb_engine.figures.discovery import discovery_figure

        args.out.mkdir(parents=True, exist_ok=True)
        curves.to_csv(args.out / "curves.csv", index=False)
        written = discovery_figure(curves, args.out / "discovery_curves", total=int(interesting.sum()))
        print("wrote", args.out / "curves.csv", *written)


def reference_rerank(X: np.ndarray, base: np.ndarray, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The direct version of the default re-rank: float64 throughout, one kernel width at a time."""
    from scipy.special import logit
    from sklearn.decomposition import PCA

    from fmb_engine.discover.strategies import Evidence, percentile

    rng = np.random.default_rng(0)
    fit = np.sort(rng.choice(X.shape[0], min(10_000, X.shape[0]), replace=False))
    pca = PCA(32, whiten=True, svd_solver="randomized", random_state=0).fit(X[fit].astype(np.float64))
    Z = np.concatenate([pca.transform(X[s:s + 65_536].astype(np.float64)) for s in range(0, X.shape[0], 65_536)])
    ev = Evidence()
    C = Z[rows]
    d2 = np.concatenate([(Z[s:s + 65_536] ** 2).sum(1)[:, None] + (C ** 2).sum(1)[None, :]
                         - 2 * Z[s:s + 65_536] @ C.T for s in range(0, Z.shape[0], 65_536)])
    dk = np.partition(np.maximum(d2, 0), ev.k, axis=0)[ev.k]
    h0 = float(np.median(np.sqrt(dk)))
    pi = (y.sum() + 1) / (y.size + 2)
    score = logit(percentile(base))
    for s in range(0, Z.shape[0], 65_536):
        block = np.maximum(d2[s:s + 65_536], 0)
        shift = np.zeros(block.shape[0])
        for j in range(ev.scales):
            K = np.exp(-block / (2 * (h0 * 2 ** (-j / 2)) ** 2))
            P, Q = K @ y, K @ (1 - y)
            shift += logit((P + ev.prior_strength * pi) / (P + Q + ev.prior_strength))
        score[s:s + 65_536] += ev.beta * (shift / ev.scales - math.log(pi / (1 - pi)))
    return score


def timings(args) -> None:
    from threadpoolctl import threadpool_limits

    from fmb_engine.discover.rerank import rerank

    print(f"\nre-rank, 200 labels (load before: {load_average()})")
    print("| objects x dims | BLAS threads | features | fit | score | total | CPU | reference | ref / ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (40_000, 1_000_000):
        rng = np.random.default_rng(0)
        X = np.empty((n, 768), dtype=np.float32)
        for s in range(0, n, 100_000):
            X[s:s + 100_000] = rng.standard_normal((min(100_000, n - s), 768), dtype=np.float32)
        base = rng.standard_normal(n)
        rows = np.sort(rng.choice(n, 200, replace=False))
        y = (rng.random(200) < 0.3).astype(np.float64)
        for threads in (1, None):
            with threadpool_limits(threads):
                best = None
                for _ in range(args.repeats if n < 100_000 else 1):
                    t, cpu = time.perf_counter(), time.process_time()
                    result = rerank(X, base, rows, y, threads=threads)
                    total = time.perf_counter() - t
                    if best is None or total < best[0]:
                        best = (total, result.seconds, time.process_time() - cpu)
                ref = ""
                if n < 100_000 or args.ref_1e6:
                    t = time.perf_counter()
                    reference_rerank(X, base, rows, y)
                    ref_s = time.perf_counter() - t
                    ref = f"{ref_s:.2f} s | {ref_s / best[0]:.1f}x"
                else:
                    ref = "— | —"
            sec = best[1]
            print(f"| {n:,} x 768 | {threads or 'default'} | {sec['features']:.2f} s | {sec['fit']:.2f} s | "
                  f"{sec['score']:.2f} s | **{best[0]:.2f} s** | {best[2]:.2f} s | {ref} |", flush=True)
        del X
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(the 1e6 x 768 float32 input alone is 3,072 MB); load after: {load_average()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None, help="Mock workspace with cca embeddings + detection.")
    ap.add_argument("--objects", type=int, default=10_000, help="Size of the mock built without --workspace.")
    ap.add_argument("--mock-seed", type=int, default=42, help="Survey seed of the mock built without --workspace.")
    ap.add_argument("--model", default="cca")
    ap.add_argument("--base", default="cca/fused/fisher", help="Base (static) system.")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="Write curves.csv and the figure here.")
    ap.add_argument("--repeats", type=int, default=3, help="Re-ranks at 40k (best kept).")
    ap.add_argument("--ref-1e6", action="store_true", help="Also time the reference at 1e6 (slow).")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    if not args.skip_table:
        discovery_table(args)
    if not args.skip_timing:
        timings(args)


if __name__ == "__main__":
    main()
