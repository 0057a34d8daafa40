"""Benchmark of the analyses at scale (not a test): `analyze rankings` and `analyze umap` at 10^5-10^6 objects.

* rankings: a synthetic ``scores/systems.parquet`` of N objects x S systems (default 10^6 x 20),
  each system missing a seeded 2 % of objects (so every pair is re-ranked on its shared set) and
  scores rounded so that ties occur; the ``analyze rankings`` door is timed end to end (read,
  compare, write) in a fresh process, with its peak RSS.
* umap: N objects x D dimensions of seeded clustered vectors; ``fit_transform`` of UMAP fitted on a
  ``--fit`` sample and the rest transformed in chunks (:func:`fmb_engine.analyze.umap_embed.umap_projector`),
  timed in a fresh process with its peak RSS (UMAP's numba compilation, ~35 s, is timed apart).

    python bench/analyze_scale.py rankings -n 1000000 --systems 20
    python bench/analyze_scale.py umap -n 100000 --dim 64 --fit 20000

Each measurement runs in a child process so that ``ru_maxrss`` is the measured step's peak only
(the synthetic input is made in another child first).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_systems(root: Path, n: int, systems: int, missing: float, seed: int) -> None:
    """A workspace whose scores/systems.parquet has ``n`` objects x ``systems`` systems."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fmb_engine.detect.tables import min_rank
    from fmb_engine.rankings import systems_path
    from fmb_engine.workspace import Workspace, atomic_path

    ws = Workspace.init(root)
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    columns: dict[str, object] = {"object_id": pa.array([f"obj{i:08d}" for i in range(n)], type=pa.string())}
    for s in range(systems):
        score = np.round(0.6 * base + 0.8 * rng.normal(size=n), 4)  # 4 decimals: ties at 10^5+
        gone = rng.random(n) < missing
        rank = min_rank(np.where(gone, np.nan, -score))
        name = f"m{s // 4}/mod{s % 4}/flow"
        columns[f"rank:{name}"] = pa.array(rank, mask=gone)
        columns[f"score:{name}"] = pa.array(np.where(gone, np.nan, score))
    with atomic_path(systems_path(ws)) as tmp:
        pq.write_table(pa.table(columns), tmp, row_group_size=256 * 1024)


def run_rankings(root: Path) -> dict:
    from fmb_engine.analyze.run import analyze_rankings
    from fmb_engine.config import load
    from fmb_engine.workspace import Workspace

    ws = Workspace(root)
    t0, c0 = time.perf_counter(), time.process_time()
    result = analyze_rankings(ws, load("analyze", ws))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    phases = json.loads(Path(result.manifest).read_text()).get("timings_s", {})
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases": phases, "pairs": len(result.summary["retention"]) // 2,
            "disagreements": len(result.summary["disagreement"]), "peak_rss_mb": round(_peak_mb())}


def run_umap(n: int, dim: int, fit: int, chunk: int, seed: int) -> dict:
    import numpy as np

    from fmb_engine.analyze.umap_embed import umap_projector

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(20, dim))
    x = (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    params = {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean", "seed": seed,
              "fit_points": fit, "chunk": chunk}
    t0 = time.perf_counter()
    # numba compilation, timed apart: a fit above UMAP's small-data size compiles the NN-descent and its search
    umap_projector(x[:5000], params | {"fit_points": 4500, "chunk": 500})
    jit = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords = umap_projector(x, params)
    wall = time.perf_counter() - t0
    assert coords.shape == (n, 2) and np.isfinite(coords).all()
    return {"jit_s": round(jit, 1), "wall_s": round(wall, 1), "peak_rss_mb": round(_peak_mb())}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["rankings", "umap", "_make", "_rankings", "_umap"])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--systems", type=int, default=20)
    ap.add_argument("--missing", type=float, default=0.02)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--fit", type=int, default=20_000, help="UMAP: points the model is fitted on.")
    ap.add_argument("--chunk", type=int, default=100_000, help="UMAP: points transformed per chunk.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, help="Workspace (internal).")
    args = ap.parse_args()
    if args.what == "_make":
        make_systems(args.root, args.n, args.systems, args.missing, args.seed)
        print(json.dumps({"made": str(args.root)}))
    elif args.what == "_rankings":
        print(json.dumps(run_rankings(args.root)))
    elif args.what == "_umap":
        print(json.dumps(run_umap(args.n, args.dim, args.fit, args.chunk, args.seed)))
    elif args.what == "rankings":
        with tempfile.TemporaryDirectory(prefix="fmb-bench-") as tmp:
            root = Path(tmp) / "ws"
            t0 = time.perf_counter()
            _child(["_make", "--root", str(root), "-n", str(args.n), "--systems", str(args.systems),
                    "--missing", str(args.missing), "--seed", str(args.seed)])
            made = time.perf_counter() - t0
            res = _child(["_rankings", "--root", str(root)])
        print(f"analyze rankings, {args.n:,} objects x {args.systems} systems ({res['pairs']} pairs, "
              f"{args.missing:.0%} missing each), load {os.getloadavg()[0]:.1f}: {res['wall_s']} s wall ({res['cpu_s']} CPU s), "
              f"peak RSS {res['peak_rss_mb']} MB; phases {res['phases']}; {res['disagreements']:,} disagreements "
              f"(input made in {made:.0f} s)")
    else:
        res = _child(["_umap", "-n", str(args.n), "--dim", str(args.dim), "--fit", str(args.fit),
                      "--chunk", str(args.chunk), "--seed", str(args.seed)])
        print(f"analyze umap, {args.n:,} x {args.dim}, fitted on {min(args.fit, args.n):,}, transform chunks of "
              f"{args.chunk:,}, load {os.getloadavg()[0]:.1f}: {res['wall_s']} s wall (+ {res['jit_s']} s numba "
              f"compilation), peak RSS {res['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
