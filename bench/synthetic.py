"""Throughput and peak memory of `fmb-engine embed synthetic` (not a test).

Cases, each in a fresh process so its peak RSS (``os.wait4``, the child's own ``ru_maxrss``)
is its own; every case makes the same rows ({768, 768, 1536} float32 unless ``--dims``):

* ``stream``   the stage door (:func:`write_synthetic`): generated and written chunk by chunk
               into a workspace's ``embeddings/synthetic.h5`` (manifest, lock, atomic rename);
* ``generate`` the same chunks generated and dropped (the CPU share of ``stream``);
* ``one-go``   the reference: the same rows made in one call (whole arrays in memory), then
               written with h5py one dataset at a time, in one write each (no truth columns).

rows/s is objects per second; MB/s counts the vectors' bytes (N x sum(dims) x 4), the same
for every case. The load average (1 min) is printed before and after, the machine being shared.

    python bench/synthetic.py                         # 10^5: stream, generate, one-go; 10^6: stream
    python bench/synthetic.py --sizes 100000 --cases stream one-go
    python bench/synthetic.py --dir /big/disk         # where the files go (removed after each case)
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

ROOT = Path(__file__).resolve().parents[1]
CASES = ("stream", "generate", "one-go")


def case(name: str, objects: int, dims: dict[str, int], chunk: int, folder: Path) -> dict:
    """Run one case in this process; returns its seconds (total and parts)."""
    import h5py
    from threadpoolctl import threadpool_limits

    from fmb_engine.embed.synthetic import SyntheticModel, SyntheticSpec
    from fmb_engine.embed.synthetic_file import write_synthetic
    from fmb_engine.workspace import Workspace

    spec = SyntheticSpec(objects, dims, seed=0, outlier_fraction=0.01)
    t0 = time.perf_counter()
    out: dict = {}
    if name == "stream":
        ws = Workspace.init(folder / "ws")
        path = write_synthetic(ws, spec, chunk=chunk).outputs["embeddings"]
        out["file_bytes"] = path.stat().st_size
    elif name == "generate":
        model = SyntheticModel(spec)
        with threadpool_limits(1, "blas"):
            for start in range(0, objects, chunk):
                model.rows(start, min(start + chunk, objects))
    else:
        with threadpool_limits(1, "blas"):
            rows = SyntheticModel(spec).rows(0, objects)
        out["generate_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        with h5py.File(folder / "one_go.h5", "w") as f:
            f.create_dataset("object_id", data=rows.object_ids.astype("S64"))
            for m, x in rows.vectors.items():
                f.create_dataset(f"vectors/{m}", data=x)
            f.create_dataset("anomaly_class", data=rows.anomaly_class)
        out["write_s"] = time.perf_counter() - t1
        out["file_bytes"] = (folder / "one_go.h5").stat().st_size
    out["seconds"] = time.perf_counter() - t0
    return out


def run_child(name: str, objects: int, dims: str, chunk: int, base: Path) -> dict:
    """One case in a fresh interpreter: its result and its own peak RSS."""
    folder = Path(tempfile.mkdtemp(prefix=f"syn-{name}-", dir=base))
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, __file__, "--child", name, "--sizes", str(objects), "--dims", dims, "--chunk", str(chunk),
            "--dir", str(folder)]
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"case {name} at {objects} failed:\n{stderr}")
        return json.loads(stdout.strip().splitlines()[-1]) | {"peak_rss_mb": usage.ru_maxrss / 1024}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="Cases at the smallest size; larger sizes run `stream` only.")
    parser.add_argument("--dims", default="image=768,spectrum=768,joint=1536")
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from fmb_engine.embed.synthetic import parse_dims

    dims = parse_dims(args.dims)
    if args.child:
        print(json.dumps(case(args.child, args.sizes[0], dims, args.chunk, args.dir)))
        return
    vector_mb = 4 * sum(dims.values()) / 1e6
    print(f"dims {args.dims}, chunk {args.chunk}; {os.cpu_count()} CPUs; load before {os.getloadavg()[0]:.2f}")
    print(f"{'objects':>10} {'case':>9} {'seconds':>8} {'rows/s':>9} {'MB/s':>6} {'peak RSS MB':>11}  parts")
    for i, n in enumerate(sorted(args.sizes)):
        for name in (args.cases if i == 0 else ["stream"]):
            r = run_child(name, n, args.dims, args.chunk, args.dir)
            parts = ", ".join(f"{k} {r[k]:.1f}" for k in ("generate_s", "write_s") if k in r)
            if "file_bytes" in r:
                parts += f"{', ' if parts else ''}file {r['file_bytes'] / 1e9:.2f} GB"
            print(f"{n:>10,} {name:>9} {r['seconds']:>8.1f} {n / r['seconds']:>9,.0f} "
                  f"{n * vector_mb / r['seconds']:>6.0f} {r['peak_rss_mb']:>11,.0f}  {parts}", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
