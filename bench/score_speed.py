"""Benchmark: the detect stage's streamed flow scoring, new loop vs the previous one (not a test).

For each flow saved in a workspace that ran ``fmb-engine detect`` on ``embeddings/<model>.h5``
(e.g. ``bench/detect_scale.py --keep``), every usable row outside a seeded 5 % "fit sample"
(the share a 50,000-row sample has of 10^6 objects) is scored as detect scores it
(``-flow.score_samples(pre.apply(x))``, the flow's torch threads as configured: 1 by default)
by these loops, one after the other, ``--repeats`` times, interleaved so load changes hit all:

* ``reference``: the loop before this benchmark's changes -- ``reader.read`` a chunk, copy its
  masked rows (``x[todo]``), score; every chunk and temporary freshly allocated; the scorer checks
  the D input columns for NaN/Inf as ``Preprocessor.apply`` did (today's apply adds its check of
  the k mapped columns, ~0.08 us/object, so the reference is that much slower than it was).
* ``retained``: the same loop under :func:`fmb_engine.heap.retained_heap` (freed memory kept).
* ``read_ahead``: :func:`fmb_engine.detect.stream.streamed_scores` (read-ahead thread into reused
  buffers + retained heap) with the same scorer;
* ``streamed``: the same loop with ``detect.run._flow_scorer`` -- its affine map's BLAS product on
  the flow's thread count (1), apply's check on the mapped columns -- what detect runs.

Printed per modality: objects/s of each loop (best of the repeats), the ratios against the
reference measured in the same run, whether every score is bit-identical to the reference's,
with the 1-minute load average. One JSON object per line (docs/benchmarks.md, "Scoring throughput").

    python bench/score_speed.py /tmp/ws                      # model "synthetic", chunk 16,384
    python bench/score_speed.py /tmp/ws --modalities joint --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _reference(reader, modality: str, mask: np.ndarray, score, chunk_rows: int) -> np.ndarray:
    """The previous streamed_scores loop (one modality, one scorer)."""
    from fmb_engine.detect.stream import row_chunks

    rows = np.flatnonzero(mask)
    out = np.empty(rows.shape[0], dtype=np.float64)
    for start, stop in row_chunks(mask.shape[0], chunk_rows):
        todo = mask[start:stop]
        if not todo.any():
            continue
        x = reader.read(modality, start, stop)[todo]
        out[np.searchsorted(rows, start + np.flatnonzero(todo))] = score(x)
    return out


def bench(ws: Path, model: str, modalities: list[str] | None, chunk_rows: int, repeats: int, threads: int) -> None:
    from fmb_engine.detect.preprocess import check_matrix
    from fmb_engine.detect.run import _scorers, restore_flow
    from fmb_engine.detect.stream import Scorers, streamed_scores
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.heap import retained_heap

    with EmbeddingReader(ws / "embeddings" / f"{model}.h5") as reader:
        mask = np.random.default_rng(0).random(reader.n_objects) >= 0.05
        for path in sorted((ws / "scores" / "models" / model).glob("flow_*.npz")):
            modality = path.stem.removeprefix("flow_")
            if modalities and modality not in modalities:
                continue
            with np.load(path) as npz:
                state = dict(npz)
            pre, flow = restore_flow(state, device="cpu", threads=threads)
            def before(v: np.ndarray) -> np.ndarray:
                """The previous scorer: apply() checked the D input columns (now the k mapped ones), no BLAS limit."""
                check_matrix(v, "reference", pre.n_features_in_)
                return -flow.score_samples(pre.apply(v))

            score = _scorers(pre, flow, {})

            def retained() -> np.ndarray:
                with retained_heap():
                    return _reference(reader, modality, mask, before, chunk_rows)

            loops = {
                "reference": lambda: _reference(reader, modality, mask, before, chunk_rows),
                "retained": retained,
                "read_ahead": lambda: streamed_scores(reader, (modality,), mask, Scorers({"flow": before}), chunk_rows)["flow"],
                "streamed": lambda: streamed_scores(reader, (modality,), mask, score, chunk_rows)["flow"],
            }
            best = {name: float("inf") for name in loops}
            results: dict[str, np.ndarray] = {}
            cpu = {name: 0.0 for name in loops}
            for _ in range(repeats):
                for name, loop in loops.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    results[name] = loop()
                    best[name] = min(best[name], time.perf_counter() - t0)
                    cpu[name] += time.process_time() - c0
            n = int(mask.sum())
            print(json.dumps({
                "modality": modality, "dim": reader.dims[modality], "objects": n, "chunk_rows": chunk_rows,
                "flow_threads": threads,
                "objects_per_s": {name: round(n / dt) for name, dt in best.items()},
                "ratio_vs_reference": {name: round(best["reference"] / dt, 2) for name, dt in best.items()},
                "cpu_s_per_run": {name: round(c / repeats, 2) for name, c in cpu.items()},
                "bit_identical": {name: bool(np.array_equal(r, results["reference"])) for name, r in results.items()},
                "load_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--modalities", nargs="+", help="Default: every saved flow")
    parser.add_argument("--chunk-rows", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="The flows' torch threads (detect.threads, default 1)")
    args = parser.parse_args()
    bench(args.workspace, args.model, args.modalities, args.chunk_rows, args.repeats, args.threads)


if __name__ == "__main__":
    main()
