"""Benchmark: `detect all` in one process against `detect all --executor slurm --shards K` (not a test).

One synthetic input (``fmb-engine embed synthetic``, or an existing file hard-linked in with
``--embeddings``), scored twice in the same workspace:

1. one process: ``fmb-engine detect all`` as a child; wall, CPU (user + sys) and peak RSS from
   ``os.wait4``;
2. sharded: ``fmb-engine detect all --executor slurm --shards K``, polled until the run ends;
   wall from submission to the merge's end, and per phase (fit / shard / merge) the jobs'
   elapsed time and CPU time (``TotalCPU``) from sacct, and peak RSS: the one each job reports
   (``getrusage`` in the job) and sacct's ``MaxRSS`` (sampled every 30 s: short jobs show none).

Then checks that both runs wrote the same ranks and scores (``systems.parquet``, exactly).
Prints one JSON object (paste into docs/benchmarks.md, "Sharded detect — bench/detect_sharded.py").

    python bench/detect_sharded.py --objects 100000 --shards 4
    python bench/detect_sharded.py --embeddings /work/scale/e6/embeddings/synthetic.h5 --shards 4 --root /work/scale/me
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

ENGINE = [sys.executable, "-c", "from fmb_engine.cli.main import main; main()"]


def _child(cmd: list[str], cwd: Path) -> dict[str, float]:
    """Run ``cmd``: wall s, CPU s (user + sys) and peak RSS GB of the child (``os.wait4``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2)}


def _seconds(text: str) -> float:
    """sacct's ``[D-]HH:MM:SS[.mmm]`` or ``MM:SS.mmm`` as seconds."""
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (float(days) if days else 0.0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def _rss_gb(text: str) -> float:
    units = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0}
    if not text:
        return 0.0
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text) / 1024**3


def _sacct(job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per job id: elapsed s, CPU s and MaxRSS GB (the largest over the job's steps)."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["sacct", "-P", "-n", "-j", ",".join(bases), "--format=JobID,Elapsed,TotalCPU,MaxRSS"],
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        job, elapsed, cpu, rss = line.split("|")
        base = job.split(".")[0]
        row = found.setdefault(base, {"elapsed_s": 0.0, "cpu_s": 0.0, "max_rss_gb": 0.0})
        if "." not in job:
            row["elapsed_s"], row["cpu_s"] = _seconds(elapsed), _seconds(cpu)
        row["max_rss_gb"] = max(row["max_rss_gb"], _rss_gb(rss))
    return found


def _sharded(ws: Path, shards: int) -> dict:
    from fmb_engine.jobs import monitor
    from fmb_engine.jobs.registry import open_registry
    from fmb_engine.workspace import Workspace

    t0 = time.perf_counter()
    said = subprocess.run([*ENGINE, "detect", "all", "--executor", "slurm", "--shards", str(shards)], cwd=ws,
                          capture_output=True, text=True, check=True).stdout
    run_id = said.split("run ", 1)[1].split(":", 1)[0].strip()
    workspace = Workspace(ws)
    while True:
        monitor.refresh(workspace)
        with open_registry(workspace) as reg:
            jobs, run = reg.jobs(run_id), reg.run(run_id)
        if all(not j.active for j in jobs):
            break
        time.sleep(2)
    wall = time.perf_counter() - t0
    bad = [(j.job_id, j.state.value, j.error) for j in jobs if j.state.value != "COMPLETED"]
    if bad:
        raise SystemExit(f"sharded run {run_id} did not complete: {bad}")
    time.sleep(3)  # accounting catches up
    acct = _sacct([j.job_id for j in jobs])
    phases: dict[str, dict] = {}
    for job in jobs:
        name = (run.phase_of(job.task_index) or "?").split(" ")[0]
        row = acct.get(job.job_id, {})
        phase = phases.setdefault(name, {"jobs": 0, "elapsed_s_max": 0.0, "cpu_s": 0.0, "max_rss_gb": 0.0,
                                         "peak_rss_gb_in_job": 0.0})
        phase["peak_rss_gb_in_job"] = max(phase["peak_rss_gb_in_job"], float((job.outputs or {}).get("peak_rss_gb", 0)))
        phase["jobs"] += 1
        phase["elapsed_s_max"] = round(max(phase["elapsed_s_max"], row.get("elapsed_s", 0.0)), 1)
        phase["cpu_s"] = round(phase["cpu_s"] + row.get("cpu_s", 0.0), 1)
        phase["max_rss_gb"] = round(max(phase["max_rss_gb"], row.get("max_rss_gb", 0.0)), 2)
    return {"run": run_id, "wall_s": round(wall, 1), "cpu_s": round(sum(p["cpu_s"] for p in phases.values()), 1),
            "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--embeddings", type=Path, help="an existing synthetic .h5 to hard-link (no copy)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--root", type=Path, help="workspace folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    parser.add_argument("--baselines", action="store_true", help="also the IsolationForest and exact k-NN baselines")
    parser.add_argument("--mem-gb", type=float, default=4.0, help="jobs.mem_gb of every SLURM job")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="fmb-sharded-")) / "ws"
    subprocess.run([*ENGINE, "init", str(root)], check=True, capture_output=True)
    target = root / "embeddings" / "synthetic.h5"
    if args.embeddings:
        os.link(args.embeddings, target)
    else:
        subprocess.run([*ENGINE, "embed", "synthetic", "--objects", str(args.objects)], cwd=root, check=True,
                       capture_output=True)
    (root / "fmb.yaml").write_text(
        (root / "fmb.yaml").read_text()
        + f"\ndetect:\n  n_jobs: 1\n  baselines: {str(args.baselines).lower()}\n"
        + f"jobs:\n  executor: slurm\n  timeout_min: 120\n  mem_gb: {args.mem_gb}\n  array_parallelism: {args.shards}\n")
    load = [round(x, 2) for x in os.getloadavg()]
    one = _child([*ENGINE, "detect", "all"], root)
    import pandas as pd

    first = pd.read_parquet(root / "scores" / "systems.parquet")
    sharded = _sharded(root, args.shards)
    second = pd.read_parquet(root / "scores" / "systems.parquet")
    identical = first.shape == second.shape and all(first[c].equals(second[c]) for c in first.columns)
    print(json.dumps({"objects": len(first), "file_gb": round(target.stat().st_size / 1024**3, 2),
                      "shards": args.shards, "baselines": args.baselines, "one_process": one, "sharded": sharded,
                      "identical_ranks_and_scores": identical,
                      "load_avg_1_5_15": {"start": load, "end": [round(x, 2) for x in os.getloadavg()]}}, indent=1))
    if not args.keep:
        if args.embeddings:
            target.unlink()
        shutil.rmtree(root if args.root else root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
