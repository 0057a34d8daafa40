"""Benchmark: `fmb-engine detect all` at scale, on synthetic embeddings (not a test).

For each N: a fresh workspace, ``fmb-engine embed synthetic --objects N --dims ...``, then
``fmb-engine detect all`` in a child process whose peak resident memory comes from
``os.wait4`` (the kernel's ``ru_maxrss`` of that process and, with ``n_jobs > 1``, the largest of
its workers). Reported per N: the input size, wall time and peak RSS of the detect run, the
manifest's per-phase times, and the scoring speed of each fitted flow (objects/s: the saved
preprocessing + flow applied to every row of the file, chunk by chunk, timed in this process).

    python bench/detect_scale.py                          # N = 1e5 and 3e5, 768/768/1536, baselines on
    python bench/detect_scale.py --objects 1000000        # the issue's target size
    python bench/detect_scale.py --no-baselines --keep /tmp/ws   # flows, mismatch, fusion only; keep workspaces
    python bench/detect_scale.py --speed-only /tmp/ws/ws1000000  # re-time the flows' scoring of a kept workspace
    python bench/detect_scale.py --embeddings /work/scale/e6/embeddings/synthetic.h5 --keep /work/scale/me --no-speed
                                  # an existing file, hard-linked (no copy, no embedding step)

Prints one JSON object per N (paste into docs/benchmarks.md, "Detect at scale").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENGINE = [sys.executable, "-c", "from fmb_engine.cli.main import main; main()"]


def _run(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; (wall seconds, peak RSS in GB of the child and its waited-for descendants, CPU seconds
    user + system of the child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024**2, usage.ru_utime + usage.ru_stime  # ru_maxrss is in KiB on Linux


def _flow_speed(ws: Path, model: str, chunk_rows: int) -> dict[str, dict[str, int]]:
    """Objects/s of each saved flow over every row of the file, one thread: reading the rows,
    the preprocessing (the affine map detect scores with), the flow's -log p, and all three; with
    the CPU seconds of the whole loop (all threads) and the 1-minute load average after it; then
    ``streamed``: the loop detect runs (``streamed_scores`` with detect's flow scorer: read-ahead
    thread, kept heap, one BLAS thread; bench/score_speed.py compares it with the previous one)."""
    import torch

    from threadpoolctl import threadpool_limits

    from fmb_engine.detect.run import _scorers, restore_flow
    from fmb_engine.detect.stream import row_chunks, streamed_scores
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.heap import retained_heap

    torch.set_num_threads(1)
    speed = {}
    with EmbeddingReader(ws / "embeddings" / f"{model}.h5") as reader:
        n = reader.n_objects
        for path in sorted((ws / "scores" / "models" / model).glob("flow_*.npz")):
            modality = path.stem.removeprefix("flow_")
            with np.load(path) as npz:
                state = dict(npz)
            pre, flow = restore_flow(state, device="cpu", threads=1)
            seconds = {"read": 0.0, "preprocess": 0.0, "flow": 0.0}
            cpu = time.process_time()
            with threadpool_limits(1, "blas"), retained_heap():
                for start, stop in row_chunks(n, chunk_rows):
                    t0 = time.perf_counter()
                    x = reader.read(modality, start, stop)
                    t1 = time.perf_counter()
                    z = pre.apply(x)
                    t2 = time.perf_counter()
                    flow.score_samples(z)
                    t3 = time.perf_counter()
                    for part, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2)):
                        seconds[part] += dt
            cpu = time.process_time() - cpu
            t0 = time.perf_counter()
            streamed_scores(reader, (modality,), np.ones(n, bool), _scorers(pre, flow, {}), chunk_rows)
            streamed = time.perf_counter() - t0
            speed[modality] = {part: round(n / dt) for part, dt in seconds.items()} | {
                "all": round(n / sum(seconds.values())), "wall_s": round(sum(seconds.values()), 1),
                "cpu_s": round(cpu, 1), "per_cpu_s": round(n / cpu), "streamed": round(n / streamed),
                "load_1min": round(os.getloadavg()[0], 2)}
    return speed


def bench(n: int, dims: str, root: Path, args: argparse.Namespace) -> dict:
    ws = root / ("ws-linked" if args.embeddings else f"ws{n}")
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([*ENGINE, "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
    h5 = ws / "embeddings" / "synthetic.h5"
    if args.embeddings:
        os.link(args.embeddings, h5)
        t_embed = rss_embed = 0.0
    else:
        t_embed, rss_embed, _ = _run([*ENGINE, "embed", "synthetic", "--objects", str(n), "--dims", dims, "--seed", "0",
                                      "-w", str(ws)])
    task = ws / "bench_task.yaml"
    task.write_text(f"detect:\n  baselines: {str(args.baselines).lower()}\n  n_jobs: {args.n_jobs}\n"
                    f"  fit_max_objects: {args.fit_max_objects}\n  chunk_rows: {args.chunk_rows}\n")
    load = [round(x, 2) for x in os.getloadavg()]
    wall, rss, cpu = _run([*ENGINE, "detect", "all", "-w", str(ws), "-c", str(task)])
    manifest = json.loads(sorted(ws.glob("runs/*detect*.json"))[-1].read_text())
    return {
        "objects": manifest["counts"]["objects:synthetic"], "dims": dims, "input_gb": round(h5.stat().st_size / 1024**3, 2),
        "baselines": args.baselines, "fit_max_objects": args.fit_max_objects, "chunk_rows": args.chunk_rows,
        "n_jobs": args.n_jobs, "embed_synthetic_s": round(t_embed, 1), "embed_synthetic_peak_rss_gb": round(rss_embed, 2),
        "detect_wall_s": round(wall, 1), "detect_cpu_s": round(cpu, 1), "detect_peak_rss_gb": round(rss, 2),
        "phases_s": {k: round(v, 1) for k, v in manifest["timings_s"].items()},
        "knn_baseline": {m: {k: s.get(k) for k in ("backend", "engine", "objects", "queries", "fallback")}
                         for m, s in manifest.get("knn_baseline", {}).items()},
        "flow_scoring_objects_per_s": _flow_speed(ws, "synthetic", args.chunk_rows) if args.speed else None,
        "load_1min_start_end": [load[0], round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--dims", default="image=768,spectrum=768,joint=1536")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fit-max-objects", type=int, default=50_000)
    parser.add_argument("--chunk-rows", type=int, default=16_384)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="Folder for the workspaces (kept); default a temporary one")
    parser.add_argument("--embeddings", type=Path, help="An existing synthetic .h5 to hard-link instead of embedding "
                                                          "(one run; its own size)")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="Also time each saved flow's scoring over the file (one more pass per modality)")
    parser.add_argument("--speed-only", type=Path, metavar="WORKSPACE",
                        help="Only time the flows saved in WORKSPACE (a kept benchmark workspace) on its file")
    args = parser.parse_args()
    if args.speed_only:
        print(json.dumps(_flow_speed(args.speed_only, "synthetic", args.chunk_rows)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="fmb-detect-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in args.objects[:1] if args.embeddings else args.objects:
            print(json.dumps(bench(n, args.dims, root, args)), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
