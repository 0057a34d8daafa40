"""Benchmark of the detect stage's baselines at scale (not a test): the k-NN search and the IsolationForest.

On an embedding file (e.g. the shared 10⁶ synthetic one), one modality: the fit sample exactly as
``detect`` draws it (``detect.seed``, ``fit_max_objects``), the preprocessing fitted on it (the
``default`` preset: PCA 100, standardise, clip 8σ), and ``--queries`` other rows as a scoring chunk.
Timed, wall and CPU seconds (all threads) with the 1-minute load average:

* the k-NN baseline's exact search of the chunk against the sample (k = 10): the previous code
  (full ``chunk x sample`` distance matrices, 2,048 queries at a time: the in-run reference,
  kept here only) on the raw vectors and on the preprocessed ones, then the engines of
  :class:`~fmb_engine.detect.baselines.KNNDistanceDetector` on the preprocessed ones: torch
  (blocked) and faiss (``IndexFlatL2``), with their largest difference from the reference;
* the approximate index on the preprocessed sample (build, ``nprobe`` tuning on the self-query,
  the recall it reaches);
* IsolationForest (200 trees, seeded) fit on the sample and scoring of the chunk, raw and preprocessed.

    python bench/knn_baseline.py /work/scale/e6/embeddings/synthetic.h5 --modality image
    python bench/knn_baseline.py FILE --modality joint --threads 2 --no-approx

Prints one JSON object (paste into docs/benchmarks.md, "Detect at scale").
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def _timed(what: str, fn, report: dict):
    cpu, t0 = time.process_time(), time.perf_counter()
    out = fn()
    report[what] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - cpu, 2),
                    "load_1min": round(os.getloadavg()[0], 2)}
    return out


def previous_exact(train: np.ndarray, queries: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """The exact search detect used before (reference only): whole ``chunk x train`` distance matrices."""
    t, q_all = torch.from_numpy(train), torch.from_numpy(queries)
    t_sq = (t * t).sum(dim=1)
    out = np.empty(q_all.shape[0])
    with torch.inference_mode():
        for s in range(0, q_all.shape[0], chunk):
            q = q_all[s : s + chunk]
            d2 = (q * q).sum(dim=1, keepdim=True) + t_sq[None, :] - 2.0 * (q @ t.T)
            out[s : s + q.shape[0]] = torch.topk(d2.clamp_(min=0.0), k, dim=1, largest=False).values.sqrt().double().mean(1).numpy()
    return out


def main() -> None:
    from fmb_engine.analyze.similarity import has_faiss
    from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector
    from fmb_engine.detect.config import DetectConfig
    from fmb_engine.detect.preprocess import Preprocessor
    from fmb_engine.detect.stream import sample_keys, usable_sample
    from fmb_engine.embed.store import EmbeddingReader

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings")
    parser.add_argument("--modality", default="image")
    parser.add_argument("--queries", type=int, default=16_384, help="rows scored (one detect chunk by default)")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (detect.threads)")
    parser.add_argument("--approx", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    cfg = DetectConfig()
    pre_kw, _ = cfg.flow_params()
    torch.set_num_threads(args.threads)
    report: dict = {"file": args.embeddings, "modality": args.modality, "threads": args.threads, "k": cfg.knn_k}
    with EmbeddingReader(args.embeddings) as reader:
        keep, sample, x = _timed("sample", lambda: usable_sample(
            reader, args.modality, sample_keys(reader.n_objects, cfg.seed), cfg.fit_max_objects, cfg.chunk_rows), report)
        rows = np.setdiff1d(np.flatnonzero(keep), sample)[: args.queries]
        raw = reader.read(args.modality, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
    pre = _timed("preprocess_fit", lambda: Preprocessor(**pre_kw).fit(x), report)
    z, q = pre.transform(x), _timed("preprocess_queries", lambda: pre.apply(raw), report)
    report |= {"reference_rows": int(x.shape[0]), "queries": int(q.shape[0]), "raw_dims": int(x.shape[1]),
               "preprocessed_dims": int(z.shape[1])}
    knn = report.setdefault("knn_exact", {})
    _timed("previous_raw", lambda: previous_exact(x, raw, cfg.knn_k), knn)
    ref = _timed("previous_preprocessed", lambda: previous_exact(z, q, cfg.knn_k), knn)
    for engine in ["torch"] + (["faiss"] if has_faiss() else []):
        detector = KNNDistanceDetector(k=cfg.knn_k, engine=engine, threads=args.threads).fit(z)
        got = _timed(engine, lambda d=detector: d.score_samples(q), knn)
        knn[engine]["max_rel_diff_vs_previous"] = float(np.max(np.abs(got - ref) / ref))
    if args.approx and has_faiss():
        from fmb_engine.analyze.ann import ApproxSettings

        index = KNNDistanceDetector(k=cfg.knn_k, backend="approx", threads=args.threads,
                                    approx=ApproxSettings(min_recall=cfg.knn_min_recall, seed=cfg.seed), exact_if_short=True)
        approx = report.setdefault("knn_approx", {})
        _timed("build", lambda: index.fit(z), approx)
        _timed("tune_and_self_query", lambda: index.score_samples(), approx)
        search = index.search_report
        approx |= {"index": search.get("index"), "nlist": search.get("nlist"), "nprobe": search.get("nprobe"),
                   "recall_by_nprobe": {s["nprobe"]: s["recall"] for s in search.get("tuning", {}).get("steps", [])},
                   "fallback": search.get("fallback")}
    forest = report.setdefault("iforest", {})
    for name, fit_rows, score_rows in (("raw", x, raw), ("preprocessed", z, q)):
        model = _timed(f"fit_{name}", lambda f=fit_rows: IsolationForestDetector(
            n_estimators=cfg.iforest_trees, seed=cfg.seed).fit(f), forest)
        _timed(f"score_{name}", lambda m=model, s=score_rows: m.score_samples(s), forest)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
