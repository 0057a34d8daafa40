"""Benchmark of the embedding stage (not a test).

1. Baselines: ``pca`` and ``cca`` through the stage door (:func:`embed_survey`) on a
   mock survey of N objects (default 10,000) at 64x64 px with 7781-bin spectra.
   Prints the fit time (train split), the embed time (reading + features +
   projection + shard writes + merge) and objects/s; target: embed <= 20 s on 2 cores.
   Also prints, for cca, the AUROC of -cos(image, spectrum) for the mock's
   ``cross_match`` objects against normal objects (an image of one galaxy with the
   spectrum of another must get a low cosine).
2. Loading: M objects (default 40,000) with image and spectrum vectors of D = 768 and
   a joint of 2D = 1536, from our HDF5 store (``EmbeddingReader.load_all`` + ids)
   against the reference format (``torch.load(weights_only=True)`` of a list of per-object
   dicts, then stacking each key into an array, as the reference consumers do).
   Both files are written first, so both loads read from the page cache. Target: >= 20x.

    python bench/bench_embed.py                      # both parts (~2 min on 2 cores)
    python bench/bench_embed.py --survey ws/survey/mock.h5 --skip-load
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_baselines(objects: int, survey: Path | None, keep: Path | None) -> None:
    from fmb_engine.config import load
    from fmb_engine.embed.run import embed_survey
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.survey.stages import make_mock
    from fmb_engine.survey.store import SurveyReader
    from fmb_engine.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="fmb-bench-embed-")) if keep is None else keep
    ws = Workspace.init(root, exist_ok=True)
    ws.config_file.write_text("general:\n  survey: mock\n")
    if survey is None:
        t0 = time.perf_counter()
        make_mock(ws, load("mock", cli={"objects": objects, "image_size": 64}))
        survey = ws.survey_path("mock")
        print(f"mock survey: {objects} objects, 64x64 px, generated in {time.perf_counter() - t0:.1f} s")
    with SurveyReader(survey) as reader:
        n, size = reader.n_objects, reader.image_size
        table = reader.table()
    print(f"survey: {survey} ({n} objects, {size} px, {int((table['split'] == 'train').sum())} train)")
    print(f"{'model':6} {'fit s':>8} {'embed s':>8} {'merge s':>8} {'total s':>8} {'obj/s':>8} {'embed/target':>13}")
    for model in ("pca", "cca"):
        shutil.rmtree(ws.folder("embeddings") / f"{model}.shards", ignore_errors=True)
        (ws.folder("embeddings") / f"{model}.h5").unlink(missing_ok=True)
        t0 = time.perf_counter()
        res = embed_survey(ws, survey, model, load(f"embed.{model}", ws), force=True)
        total = time.perf_counter() - t0
        t = json.loads(res.manifest.read_text())["timings_s"]
        embed = t.get("embed", 0.0) + t.get("merge", 0.0)
        print(f"{model:6} {t.get('fit', 0.0):8.2f} {t.get('embed', 0.0):8.2f} {t.get('merge', 0.0):8.2f} {total:8.2f} "
              f"{n / max(embed, 1e-9):8.0f} {embed / 20.0:12.2f}x")
    with EmbeddingReader(ws.folder("embeddings") / "cca.h5") as r:
        img, spec = r.load("image"), r.load("spectrum")
    cos = (img * spec).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(spec, axis=1)
    cls = table["anomaly_class"].to_numpy(str)
    sel = (cls == "cross_match") | (cls == "")
    pos = cls[sel] == "cross_match"
    if pos.any():
        from sklearn.metrics import roc_auc_score

        auc = roc_auc_score(pos, -cos[sel])
        rank = np.argsort(np.argsort(cos)) + 1  # 1 = lowest cosine among all objects
        print(f"cca cross-match: AUROC(-cos) = {auc:.4f} over {int(pos.sum())} cross_match vs {int((~pos).sum())} normal; "
              f"ranks (1 = lowest cos of {n}): {sorted(rank[cls == 'cross_match'].tolist())}")
    print(f"peak memory: {peak_mb():.0f} MB")
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)


def bench_load(objects: int, dim: int, repeats: int) -> None:
    import torch

    from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings

    rng = np.random.default_rng(0)
    ids = np.array([f"obj{i:09d}" for i in range(objects)])
    vec = {"image": rng.normal(size=(objects, dim)).astype(np.float32),
           "spectrum": rng.normal(size=(objects, dim)).astype(np.float32)}
    vec["joint"] = np.concatenate([vec["image"], vec["spectrum"]], axis=1)
    tmp = Path(tempfile.mkdtemp(prefix="fmb-bench-load-"))
    try:
        ours = tmp / "astropt.h5"
        t0 = time.perf_counter()
        write_embeddings(ours, ids, vec, EmbeddingMeta("astropt", False, ("image", "spectrum", "joint")))
        t_write_ours = time.perf_counter() - t0
        keys = {"image": "embedding_images", "spectrum": "embedding_spectra", "joint": "embedding_joint"}
        t0 = time.perf_counter()
        records = [{"object_id": str(ids[i]), "redshift": 0.5,
                    **{keys[m]: torch.from_numpy(vec[m][i].copy()) for m in vec}} for i in range(objects)]
        ref = tmp / "astropt_embeddings.pt"
        torch.save(records, ref)
        del records
        t_write_ref = time.perf_counter() - t0
        size = {p.name: p.stat().st_size / 1e6 for p in (ours, ref)}

        def load_ours():
            with EmbeddingReader(ours) as r:
                return list(r.object_ids), r.load_all()

        def load_ref():
            recs = torch.load(ref, map_location="cpu", weights_only=True)
            out_ids = [str(r["object_id"]) for r in recs]
            return out_ids, {m: np.stack([r[k].numpy().reshape(-1) for r in recs]) for m, k in keys.items()}

        def best(fn):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                got_ids, got = fn()
                times.append(time.perf_counter() - t0)
            assert got_ids[:3] == list(ids[:3]) and all(np.array_equal(got[m], vec[m]) for m in vec)
            return min(times)

        t_ours, t_ref = best(load_ours), best(load_ref)
        gb = sum(v.nbytes for v in vec.values()) / 1e9
        print(f"\nloading {objects} x (image {dim}, spectrum {dim}, joint {2 * dim}) float32 = {gb:.2f} GB, best of {repeats}:")
        print(f"  ours (HDF5, contiguous per modality): {t_ours:7.3f} s  ({gb / t_ours:5.2f} GB/s)  file {size['astropt.h5']:.0f} MB, "
              f"written in {t_write_ours:.1f} s")
        print(f"  reference (.pt list of dicts)       : {t_ref:7.3f} s  ({gb / t_ref:5.2f} GB/s)  file "
              f"{size['astropt_embeddings.pt']:.0f} MB, written in {t_write_ref:.1f} s")
        print(f"  ratio reference / ours: {t_ref / t_ours:.1f}x (target >= 20x)")
        print(f"peak memory: {peak_mb():.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000, help="mock objects for the baseline part")
    ap.add_argument("--survey", type=Path, default=None, help="use this survey instead of generating a mock")
    ap.add_argument("--keep", type=Path, default=None, help="keep the benchmark workspace here")
    ap.add_argument("--load-objects", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    if not args.skip_baselines:
        bench_baselines(args.objects, args.survey, args.keep)
    if not args.skip_load:
        bench_load(args.load_objects, args.dim, args.repeats)


if __name__ == "__main__":
    main()
