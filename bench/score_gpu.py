"""Benchmark: streamed flow scoring on CUDA vs CPU, self-contained (not a test).

One short run for a machine with a GPU (it also runs on a CPU-only machine: then it says so
and times the CPU alone). With the project's own code:

1. ``write_synthetic`` makes ``--objects`` x ``--dim`` synthetic embeddings (one modality,
   ``image``; seed 0) in a temporary workspace;
2. the seeded fit sample (``usable_sample``, ``--fit-objects`` rows) fits the ``default``
   preset's preprocessing and flow, on CUDA when there is one;
3. every other usable row is scored by ``streamed_scores`` (the read-ahead loop detect runs),
   with the flow on each device in turn: ``cuda`` (the flows' default score batch, 4,096 rows,
   and a whole chunk per batch, ``--chunk-rows``), then ``cpu`` (``--cpu-threads`` torch threads, detect's default 1).
   The preprocessing (PCA affine map, numpy) runs on the CPU in every case, on ``--cpu-threads``
   BLAS threads as in detect; reading + mapping is timed apart (``read_and_apply``), as is the
   flow on already-mapped chunks (``flow_only``).

Prints one JSON object: objects/s per device and variant, the GPU's name, the largest
difference between CUDA and CPU scores, and the time of each step. Runtime on an H200
machine at 10^6 x 768 is about a minute (synthesis ~20 s, fit ~10 s, scoring a few seconds
per variant); here, on 2 CPU cores, ``--objects 20000`` takes about 30 s.

    python bench/score_gpu.py                       # 10^6 x 768, fit on 20,000
    python bench/score_gpu.py --objects 200000      # smaller
    python bench/score_gpu.py --objects 20000 --fit-objects 5000   # a CPU smoke run

Needs numpy, h5py, torch, scipy, pandas, threadpoolctl, pyyaml, rich and nflows, dill, pydantic
(imported on the way). The device machines' image lacks the last three: carry them in an ignored
folder, e.g. ``.gpu_site`` (nflows and dill copied from this project's venv, pure Python;
pydantic 2.14.4, pydantic_core 2.50.5 for CPython 3.12, annotated_types, typing_inspection
unpacked from their wheels), and run
``PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:$PWD/.gpu_site python3 bench/score_gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _best(fn, repeats: int) -> tuple[float, object]:
    """(shortest wall seconds, last result) of ``repeats`` calls of ``fn``."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _note(progress: dict) -> None:
    """Progress on stderr, so a run stopped by a time limit still shows how far it got."""
    print(json.dumps(progress), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--fit-objects", type=int, default=20_000, help="Fit sample size (detect.fit_max_objects)")
    parser.add_argument("--chunk-rows", type=int, default=16_384, help="detect.chunk_rows")
    parser.add_argument("--cpu-threads", type=int, default=1, help="Torch threads of the CPU flow (detect.threads)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="Workspace folder (kept); default a temporary one, removed")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from fmb_engine.detect.flows import FlowDensity, split_preset
    from fmb_engine.detect.preprocess import Preprocessor
    from fmb_engine.detect.run import _scorers
    from fmb_engine.detect.stream import masked_chunks, sample_keys, streamed_scores, usable_sample
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.embed.synthetic import SyntheticSpec
    from fmb_engine.embed.synthetic_file import write_synthetic
    from fmb_engine.heap import retained_heap
    from fmb_engine.workspace import Workspace

    cuda = torch.cuda.is_available()
    report: dict = {"objects": args.objects, "dim": args.dim, "fit_objects": args.fit_objects,
                    "chunk_rows": args.chunk_rows, "cuda": cuda,
                    "gpu": torch.cuda.get_device_name(0) if cuda else "no CUDA device: CPU timed alone",
                    "torch": torch.__version__, "cpus": os.cpu_count(), "steps_s": {}}
    root = args.dir or Path(tempfile.mkdtemp(prefix="fmb-score-gpu-"))
    try:
        t0 = time.perf_counter()
        ws = Workspace.init(root / "ws")
        path = write_synthetic(ws, SyntheticSpec(args.objects, {"image": args.dim}, seed=0)).outputs["embeddings"]
        report["steps_s"]["synthesise"] = round(time.perf_counter() - t0, 1)
        _note(report)

        with EmbeddingReader(path) as reader:
            t0 = time.perf_counter()
            keep, sample, x = usable_sample(reader, "image", sample_keys(reader.n_objects, 0), args.fit_objects,
                                            args.chunk_rows)
            pre_kw, flow_kw = split_preset("default")
            pre = Preprocessor(**pre_kw).fit(x)
            fit_device = "cuda" if cuda else "cpu"
            state = FlowDensity(**flow_kw, device=fit_device, threads=args.cpu_threads).fit(pre.transform(x)).state_dict()
            report["steps_s"]["fit_" + fit_device] = round(time.perf_counter() - t0, 1)
            _note(report)
            mask = keep.copy()
            mask[sample] = False
            n = int(mask.sum())
            report["scored_objects"] = n

            t0 = time.perf_counter()
            with retained_heap(), threadpool_limits(args.cpu_threads, "blas"):  # as detect's flow scorer
                mapped = [pre.apply(xs[0]).copy() for _, _, xs in masked_chunks(reader, ("image",), mask,
                                                                                   args.chunk_rows)]
            report["read_and_apply_objects_per_s_cpu"] = round(n / (time.perf_counter() - t0))

            variants = ([("cuda", 4096), ("cuda", args.chunk_rows)] if cuda else []) + [("cpu", 4096)]
            scores, speed = {}, {}
            for device, batch in variants:
                name = f"{device}_batch{batch}"
                flow = FlowDensity.from_state_dict(state, device=device, threads=args.cpu_threads)
                flow.score_batch_size = batch
                flow.score_samples(mapped[0][:batch])  # warm-up (CUDA context, kernels)
                with retained_heap():
                    flow_s, _ = _best(lambda: [flow.score_samples(z) for z in mapped], args.repeats)
                if cuda:
                    torch.cuda.synchronize()
                loop_s, out = _best(lambda: streamed_scores(reader, ("image",), mask,
                                                            _scorers(pre, flow, {}), args.chunk_rows),
                                    args.repeats)
                scores[name] = out["flow"]
                speed[name] = {"streamed_objects_per_s": round(n / loop_s), "flow_only_objects_per_s": round(n / flow_s)}
                _note({name: speed[name]})
            report["speed"] = speed
            if cuda:
                diff = np.abs(scores["cuda_batch4096"] - scores["cpu_batch4096"])
                report["cuda_vs_cpu_max_abs_diff"] = float(diff.max())
                report["cuda_vs_cpu_max_rel_diff"] = float((diff / np.abs(scores["cpu_batch4096"]).clip(1e-12)).max())
                report["cuda_streamed_vs_cpu"] = round(speed["cuda_batch4096"]["streamed_objects_per_s"]
                                                       / speed["cpu_batch4096"]["streamed_objects_per_s"], 2)
        report["load_1min"] = round(os.getloadavg()[0], 2)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
