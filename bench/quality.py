"""Quality of the subsampled fit over flow seeds (issue 15's quality target; not a test).

Target: on synthetic truth, the AUROC at 10^6 objects with the subsampled fit
(``detect.fit_max_objects``, default 50,000) within 0.01 of the full fit at 10^5. One run per
side cannot tell a loss from sampling from the spread of flow training, so every fit is repeated
over ``detect.seed`` (which seeds the fit sample, the flows' initialisation and batch order, and
the mismatch folds) and compared as mean +- std.

``seeds`` makes one 10^5 file (``embed synthetic``, seed 0, 768/768/1536, 1 % outliers) and runs,
per seed, ``detect all`` twice in it (``default`` preset, baselines off, ``n_jobs`` 1): the full
fit (``fit_max_objects`` = N) and the subsampled fit (``--sample``, 50,000). ``score`` reads the
AUROCs of an existing workspace's current detect run without writing into it (the shared 10^6
workspace). ``large`` runs ``detect all`` (subsampled fit) on an existing file hard-linked into a
scratch workspace, scores it and removes the scratch workspace. ``summary`` prints the table.
``seeds --fits full --epochs 5`` is a diagnostic: the full fit with the sampled fit's number of
optimiser steps (the preset counts epochs, so more rows means more steps).

AUROC per system (every ``score:*`` column of ``scores/systems.parquet``) against the file's
``anomaly_class``, the ``all`` subset of :func:`fmb_engine.detect.metrics.evaluate_scores` on the
finitely scored objects: what ``fmb-engine evaluate`` reports for a synthetic workspace. With a
sampled fit also each flow's AUROC in and out of its fit sample, and with ``--first-rows`` the
AUROCs over the file's first rows (see :func:`aurocs`).

    python bench/quality.py seeds --root /work/scale/quality           # 3 seeds x {full, sample} at 10^5
    python bench/quality.py score /work/scale/e6                        # the coordinator's 10^6 run
    python bench/quality.py large /work/scale/e6/embeddings/synthetic.h5 --seed 7 --root /work/scale/quality
    python bench/quality.py summary

Records append to ``bench/results/quality.json`` (``--results``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

if not __package__:  # run as a script: the repository root, for bench.capacity
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.capacity import DIMS, ENGINE, ROOT, _load, append, run_stage  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "quality.json"
TARGET = 0.01


def aurocs(ws: Path, h5: Path, seed: int, fit_max_objects: int, first_rows: int | None = None
           ) -> dict[str, dict[str, float]]:
    """AUROC of each system of ``ws``'s systems table against ``h5``'s injected truth (read-only).

    ``auroc``: over every scored object. When the fit was a sample, each flow's AUROC also over its
    fit-sample rows (``in_sample``, scored by the flow that trained on them) and over the rest
    (``out_of_sample``); the sample is rebuilt from the seed with detect's own functions
    (:func:`~fmb_engine.detect.stream.sample_keys`, :func:`~fmb_engine.detect.stream.fit_sample`).
    ``first_rows``: also each system's AUROC over the file's first rows only (``first_rows``); the
    first 10^5 objects of a seed-0 synthetic file of 10^6 are those of the seed-0 file of 10^5 (the
    generator's rows do not depend on N, outlier placement almost), so it compares the fits on the
    same objects."""
    import pandas as pd

    from fmb_engine.detect.metrics import evaluate_scores
    from fmb_engine.detect.stream import fit_sample, sample_keys
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(h5) as reader:
        n = reader.n_objects
        truth = pd.DataFrame({"object_id": reader.object_ids.astype(str),
                              "anomaly_class": reader.columns()["anomaly_class"], "row": np.arange(n)})
        sampled = fit_max_objects < n
        if sampled:
            keys = sample_keys(n, seed)
            for m in reader.modalities:
                truth[f"in:{m}"] = False
                truth.loc[fit_sample(np.asarray(reader.valid(m), dtype=bool), keys, fit_max_objects), f"in:{m}"] = True
    table = pd.read_parquet(ws / "scores" / "systems.parquet").merge(truth, on="object_id", how="inner")

    def auroc(values: np.ndarray, rows: np.ndarray) -> float:
        rows = rows & np.isfinite(values)
        metrics = evaluate_scores(table["anomaly_class"].to_numpy()[rows], values[rows], ks=())
        return round(float(metrics[(metrics["subset"] == "all") & (metrics["metric"] == "auroc")]["value"].iloc[0]), 4)

    out: dict[str, dict[str, float]] = {"auroc": {}, "in_sample": {}, "out_of_sample": {}, "first_rows": {}}
    everyone = np.ones(len(table), dtype=bool)
    first = table["row"].to_numpy() < (first_rows or 0)
    for col in (c for c in table.columns if c.startswith("score:")):
        system, values = col.split(":", 1)[1], table[col].to_numpy(dtype=float)
        out["auroc"][system] = auroc(values, everyone)
        if first_rows and first_rows < n:
            out["first_rows"][system] = auroc(values, first)
        modality = system.split("/")[1]
        if sampled and system.endswith("/flow") and f"in:{modality}" in table:
            inside = table[f"in:{modality}"].to_numpy()
            out["in_sample"][system], out["out_of_sample"][system] = auroc(values, inside), auroc(values, ~inside)
    return {k: v for k, v in out.items() if v}


def detect_record(ws: Path) -> dict:
    """Seed, fit cap, preset and baselines of the detect run that fitted ``ws``'s flows (the newest
    manifest of a run with the flows step; a later ``detect fuse`` reuses them); refuses an unfinished one."""
    path = max(ws.glob("runs/*detect*flows*.json"), key=lambda p: p.stat().st_mtime)
    manifest = json.loads(path.read_text())
    if manifest.get("status") != "completed":
        raise SystemExit(f"{path}: detect run status {manifest.get('status')!r}, not 'completed'")
    config = manifest["config"]["values"]
    return {"manifest": path.name} | {k: config[k] for k in ("seed", "fit_max_objects", "preset", "baselines")}


def run_detect(ws: Path, seed: int, fit_max_objects: int, n: int, epochs: int | None = None,
               first_rows: int | None = None) -> dict:
    """``detect all`` in ``ws`` with this seed and fit cap (and flow epochs, None: the preset's); its
    AUROCs (:func:`aurocs`), time and load."""
    task = ws / "quality_task.yaml"
    task.write_text(f"detect:\n  preset: default\n  baselines: false\n  n_jobs: 1\n  seed: {seed}\n"
                    f"  fit_max_objects: {fit_max_objects}\n" + (f"  epochs: {epochs}\n" if epochs else ""))
    stage = run_stage("detect", [ENGINE, "detect", "all", "-w", str(ws), "-c", str(task)], n, ws, "*detect*.json")
    fit = "full" if fit_max_objects >= n else "sample"
    record = {"objects": n, "seed": seed, "fit_max_objects": fit_max_objects,
              "fit": fit + (f", {epochs} epochs" if epochs else ""),
              **aurocs(ws, ws / "embeddings" / "synthetic.h5", seed, fit_max_objects, first_rows)}
    return record | {k: stage[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "load_before", "load_after", "when")}


def seeds(args: argparse.Namespace) -> list[dict]:
    ws = args.root / f"quality{args.objects}"
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([ENGINE, "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
    out = []
    try:
        subprocess.run([ENGINE, "embed", "synthetic", "--objects", str(args.objects), "--dims", DIMS, "--seed", "0",
                        "-w", str(ws)], check=True, stdout=subprocess.DEVNULL)
        caps = {"full": max(args.objects, args.sample), "sample": args.sample}
        for seed in args.seeds:
            for fit in args.fits:
                out.append(run_detect(ws, seed, caps[fit], args.objects, args.epochs))
                print(json.dumps(out[-1]), flush=True)
                append(args.results, [out[-1]])
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    return out


def score(args: argparse.Namespace) -> None:
    h5 = args.workspace / "embeddings" / "synthetic.h5"
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(h5) as reader:
        n = reader.n_objects
    made = detect_record(args.workspace)
    record = {"objects": n, "seed": made["seed"], "fit_max_objects": made["fit_max_objects"],
              "fit": "full" if made["fit_max_objects"] >= n else "sample",
              **aurocs(args.workspace, h5, made["seed"], made["fit_max_objects"], args.first_rows),
              "first_rows_n": args.first_rows,
              "workspace": str(args.workspace), "manifest": made["manifest"], "load_after": _load(),
              "note": args.note}
    print(json.dumps(record), flush=True)
    append(args.results, [record])


def large(args: argparse.Namespace) -> None:
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(args.embeddings) as reader:
        n = reader.n_objects
    ws = args.root / f"quality-large{n}"
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([ENGINE, "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
    try:
        os.link(args.embeddings, ws / "embeddings" / "synthetic.h5")  # a hard link: the shared file is never written
        record = run_detect(ws, args.seed, args.sample, n, first_rows=args.first_rows) | {
            "embeddings": str(args.embeddings), "first_rows_n": args.first_rows}
        print(json.dumps(record), flush=True)
        append(args.results, [record])
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def summary(args: argparse.Namespace) -> None:
    """Markdown table: per system, mean +- std (ddof 1) over seeds of each (objects, fit) group, and
    differences of means that split the target's gap: sample size (the sampled minus the full fit,
    both at the small N), N (the sampled fit at the large N minus at the small N) and the target (the
    sampled fit at the large N minus each full fit at the small N, e.g. the preset's epochs and a
    diagnostic with fewer), +- the standard error sqrt(s1^2/n1 + s2^2/n2). Verdict: ✓ |Δ| <= 0.01;
    ~ |Δ| > 0.01 but within 2 standard errors of it (the seeds cannot tell); ✗ farther."""
    records = json.loads(args.results.read_text())
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["objects"], r["fit"]), []).append(r)
    keys = sorted(groups)
    systems = sorted({s for r in records for s in r["auroc"]})
    small, large = min(k[0] for k in keys), max(k[0] for k in keys)
    fulls = [k for k in keys if k[0] == small and k[1].startswith("full")]
    sample, big = (small, "sample"), (large, "sample")

    def stat(key: tuple[int, str], system: str) -> tuple[float, float, int]:
        vals = [r["auroc"][system] for r in groups.get(key, []) if system in r["auroc"]]
        return (float(np.mean(vals)) if vals else float("nan"),
                float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals))

    head = [f"{n:,} {fit} (seeds {', '.join(str(r['seed']) for r in groups[(n, fit)])})" for n, fit in keys]
    head += ["Δ sample size", "Δ N"] + [f"**Δ target** vs {fit}" for _, fit in fulls]
    print("| system | " + " | ".join(head) + " |")
    print("|---" * (1 + len(head)) + "|")
    for system in systems:
        cells = [f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}" for m, s, n in (stat(k, system) for k in keys)]
        (ms, _, _), (mb, sb, nb) = stat(sample, system), stat(big, system)
        cells += [f"{ms - stat((small, 'full'), system)[0]:+.3f}", f"{mb - ms:+.3f}"]
        for full in fulls:
            mf, sf, nf = stat(full, system)
            diff, se = mb - mf, float(np.sqrt(sf ** 2 / nf + sb ** 2 / nb))
            verdict = "✓" if abs(diff) <= TARGET else ("~" if abs(diff) - TARGET <= 2 * se else "✗")
            cells.append(f"{diff:+.3f} ± {se:.3f} {verdict}")
        print(f"| {system} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seeds", help="Full and subsampled fit of one synthetic file, per seed.")
    s.add_argument("--objects", type=int, default=100_000)
    s.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 123])
    s.add_argument("--sample", type=int, default=50_000, help="fit_max_objects of the subsampled fit")
    s.add_argument("--fits", nargs="+", choices=("full", "sample"), default=["full", "sample"])
    s.add_argument("--epochs", type=int, help="Override the preset's flow epochs (a diagnostic: equal optimiser steps)")
    s.add_argument("--root", type=Path, required=True, help="Folder for the (removed) workspace")
    c = sub.add_parser("score", help="AUROCs of an existing workspace's detect run (read-only).")
    c.add_argument("workspace", type=Path)
    c.add_argument("--note", default="")
    c.add_argument("--first-rows", type=int, help="Also the AUROCs over the file's first rows (the small file's objects)")
    g = sub.add_parser("large", help="Subsampled detect on an existing file, hard-linked into a scratch workspace.")
    g.add_argument("embeddings", type=Path)
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--sample", type=int, default=50_000)
    g.add_argument("--root", type=Path, required=True)
    g.add_argument("--first-rows", type=int, help="Also the AUROCs over the file's first rows (the small file's objects)")
    sub.add_parser("summary", help="Print the markdown table.")
    args = ap.parse_args()
    {"seeds": seeds, "score": score, "large": large, "summary": summary}[args.cmd](args)


if __name__ == "__main__":
    main()
