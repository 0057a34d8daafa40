"""Profile: where one core's time goes when detect scores a chunk with a flow, and the roofline (not a test).

For each flow saved in a workspace that ran ``fmb-engine detect`` (``embeddings/<model>.h5``),
the steps of scoring 5 % sampled-out chunks (as ``streamed_scores`` + ``_flow_scorer`` do them)
are timed one by one in CPU seconds of this thread (``time.thread_time``: robust to other
processes' load), with every library held to one thread (OpenBLAS via threadpoolctl, torch):

``read`` (HDF5 ``read_direct`` of the chunk, page cache), ``compact`` (copy of the masked rows),
``finite`` (``Preprocessor.apply``'s NaN/Inf check: of the D input columns before, of the k
mapped ones now), ``gemm`` (the PCA affine map's product),
``bias_clip``, ``flow`` (``FlowDensity.score_samples``: its input check, 4,096-row batches of
``log_prob``) -- as the loop did before (``fresh``: new arrays, boolean indexing) and as it does
now (``kept``: under :func:`fmb_engine.heap.retained_heap`, reused read buffers, ``compact_rows``).

The roofline: flops per object of the PCA map (``2 D k``) and of the flow's linear layers
(``2 sum(in x out)``), against this machine's measured single-core sgemm rate on the PCA shape
and on a large square product. Prints one JSON object per modality and one for the machine.

    python bench/score_profile.py /tmp/ws            # model "synthetic"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np


def _sgemm_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best single-thread CPU-time rate of a float32 (m, k) @ (k, n) product, GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        np.matmul(a, b, out=out)
        best = min(best, time.thread_time() - t0)
    return 2 * m * k * n / best / 1e9


def _flow_flops(flow) -> int:
    """Flops per object of the flow's linear layers (multiply-adds x 2); the element-wise ops are not counted."""
    from torch import nn

    return sum(2 * m.in_features * m.out_features for m in flow.flow_.modules() if isinstance(m, nn.Linear))


def profile(ws: Path, model: str, chunk_rows: int, chunks: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    from fmb_engine.detect.preprocess import finite_rows
    from fmb_engine.detect.run import restore_flow
    from fmb_engine.detect.stream import compact_rows
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.heap import retained_heap

    torch.set_num_threads(1)
    with threadpool_limits(1, "blas"), EmbeddingReader(ws / "embeddings" / f"{model}.h5") as reader:
        n_chunks = min(chunks, -(-reader.n_objects // chunk_rows))
        mask = np.random.default_rng(0).random(n_chunks * chunk_rows) >= 0.05
        for path in sorted((ws / "scores" / "models" / model).glob("flow_*.npz")):
            modality = path.stem.removeprefix("flow_")
            with np.load(path) as npz:
                state = dict(npz)
            pre, flow = restore_flow(state, device="cpu", threads=1)
            A, b, centre = pre._affine()
            lo, hi = (v.astype(np.float32) for v in pre.clip_bounds())
            d = reader.dims[modality]
            raw = np.empty((chunk_rows, d), np.float32)
            packed = np.empty((chunk_rows, d), np.float32)
            result = {}
            for mode in ("fresh", "kept", "fresh", "kept"):  # twice each, interleaved; the second pass is kept
                seconds = dict.fromkeys(("read", "compact", "finite", "gemm", "bias_clip", "flow"), 0.0)
                objects = 0
                with retained_heap() if mode == "kept" else contextlib.nullcontext():
                    for c in range(n_chunks):
                        start, stop = c * chunk_rows, min((c + 1) * chunk_rows, reader.n_objects)
                        todo = mask[start : stop]
                        clock = [time.thread_time()]

                        def lap(part: str) -> None:
                            now = time.thread_time()
                            seconds[part] += now - clock[0]
                            clock[0] = now

                        if mode == "kept":
                            x = reader.read_into(modality, start, raw[: stop - start])
                            lap("read")
                            x = compact_rows(x, todo, packed[: int(todo.sum())])
                            lap("compact")
                        else:
                            x = reader.read(modality, start, stop)
                            lap("read")
                            x = x[todo]
                            lap("compact")
                            finite_rows(x)  # before: the D input columns
                            lap("finite")
                        z = np.empty((x.shape[0], A.shape[1]), np.float32)
                        np.matmul(x - centre if centre is not None else x, A, out=z)
                        lap("gemm")
                        z += b
                        lap("bias_clip")
                        if mode == "kept":
                            np.isfinite(z).all(axis=1)  # now: the k mapped columns
                            lap("finite")
                        np.clip(z, lo, hi, out=z)
                        lap("bias_clip")
                        flow.score_samples(z)
                        lap("flow")
                        objects += x.shape[0]
                result[mode] = {"us_per_object": {k: round(v / objects * 1e6, 2) for k, v in seconds.items()}
                                | {"total": round(sum(seconds.values()) / objects * 1e6, 2)},
                                "objects_per_cpu_s": round(objects / sum(seconds.values()))}
            k = A.shape[1]
            print(json.dumps({
                "modality": modality, "dim": d, "pca_components": k, "chunk_rows": chunk_rows, "objects": objects,
                "pca_flops_per_object": 2 * d * k, "flow_linear_flops_per_object": _flow_flops(flow),
                **result, "load_1min": round(os.getloadavg()[0], 2),
            }), flush=True)
        print(json.dumps({
            "machine": {"cpus": os.cpu_count(),
                        "sgemm_gflops_1_thread": {
                            "square_2048": round(_sgemm_gflops(2048, 2048, 2048)),
                            "pca_16384x768x100": round(_sgemm_gflops(chunk_rows, 768, 100)),
                            "pca_16384x1536x100": round(_sgemm_gflops(chunk_rows, 1536, 100))},
                        "load_1min": round(os.getloadavg()[0], 2)}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--chunk-rows", type=int, default=16_384)
    parser.add_argument("--chunks", type=int, default=6, help="Chunks timed per modality and mode")
    args = parser.parse_args()
    profile(args.workspace, args.model, args.chunk_rows, args.chunks)


if __name__ == "__main__":
    main()
