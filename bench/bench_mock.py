"""Benchmark: mock survey generation (target: 10,000 objects at 64x64 px in <= 30 s on 2 cores).

Measures, in one run and on the same settings, the default pipelined writer
(rendering in a worker process ahead of the HDF5 writer) against the serial
reference (render and write in one process), checks both files are identical
(same digest), and prints absolute times, throughput, the ratio and peak memory.

    python bench/bench_mock.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from fmb_engine.config import load
from fmb_engine.survey.stages import make_mock
from fmb_engine.workspace import Workspace


def run(root: Path, objects: int, workers: int) -> tuple[float, str, float]:
    ws = Workspace.init(root)
    cfg = load("mock", cli={"objects": objects, "image_size": 64, "workers": workers})
    t0 = time.perf_counter()
    result = make_mock(ws, cfg)
    elapsed = time.perf_counter() - t0
    size_mb = result.outputs["survey"].stat().st_size / 1e6
    return elapsed, result.summary["digest"], size_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t_ref, d_ref, _ = run(Path(tmp) / "serial", args.objects, workers=-1)
        t_new, d_new, size = run(Path(tmp) / "pipelined", args.objects, workers=0)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"objects               {args.objects:,} at 64x64 px, 7781-bin spectra, file {size:,.0f} MB")
    print(f"serial reference      {t_ref:7.2f} s  ({args.objects / t_ref:,.0f} objects/s)")
    print(f"pipelined (default)   {t_new:7.2f} s  ({args.objects / t_new:,.0f} objects/s)")
    print(f"ratio                 {t_ref / t_new:5.2f}x faster than the serial reference")
    print(f"identical output      {d_ref == d_new} (digest {d_new})")
    print(f"peak RSS              parent {self_mb:,.0f} MB, largest worker {child_mb:,.0f} MB")
    print(f"target                <= 30 s for 10,000 objects: {'PASS' if t_new <= 30 * args.objects / 10_000 else 'FAIL'}")


if __name__ == "__main__":
    main()
