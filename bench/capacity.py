"""Capacity model of the pipeline (issue 15): measure each stage at several N, fit, project (not a test).

``measure`` runs, for one N, in a fresh workspace, every stage that matters at scale as its own child
process and records its wall time, its CPU time (user + sys of the child, ``os.wait4``), its peak RSS
(``ru_maxrss``), the 1-minute load average before and after, and the per-phase times of its manifest:

    embed synthetic -> detect all (baselines off) -> analyze rankings -> analyze similarity (approximate
    k-NN, 10,000 queries, image) -> analyze umap (image, fitted on a capped sample) -> discover rerank
    (labels written first through the engine's label store) -> evaluate

A stage interrupted or left out (e.g. one that would not fit in memory) is recovered with ``add-log``
(the records the interrupted measure printed) and ``measure --reuse --stages ...`` (the rest, in the
workspace it left). ``add`` records a stage measured elsewhere (e.g. the coordinator's ``/usr/bin/time`` of ``detect all``
on the shared 10^6 workspace, with its manifest's phases). ``fit`` fits, per stage and per phase,
CPU seconds = a + b*N and peak RSS = c + d*N by least squares, and projects them to 10^7 objects on
K shards (fit phases once, scoring phases on N/K per shard, merge phases on one node over all N).

    python bench/capacity.py measure -n 100000 300000 --root /work/scale/cap
    python bench/capacity.py measure -n 1000000 --root /work/scale/cap --embeddings /work/scale/e6/embeddings/synthetic.h5
    python bench/capacity.py add --stage detect --objects 1000000 --wall 143 --cpu 182.1 --rss-mb 1999 \\
        --manifest /work/scale/e6/runs/...-detect...json --note "coordinator's run"
    python bench/capacity.py fit                    # -> the model JSON and the markdown tables

Measurements append to ``bench/results/capacity.json`` (``--results``); the fitted model goes to
``bench/results/capacity_model.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "capacity.json"
MODEL = ROOT / "bench" / "results" / "capacity_model.json"
ENGINE = str(Path(sys.executable).with_name("fmb-engine"))
DIMS = "image=768,spectrum=768,joint=1536"
QUERIES = 10_000
LABELS = 40  # labels written before `discover rerank`: a triage session's worth

# Kinds of phase, for the projection on K shards (see project()).
FIT = "fit"        # fitted once on a capped sample: constant in N
SHARD = "shard"    # runs over each shard's N/K rows, the K shards side by side
NODE = "node"      # runs once over all N rows on one node (merge, fusion, analyses)

#: Phase name prefix -> kind; anything else is NODE.
PHASE_KINDS = {"detect/flows": FIT, "detect/score": SHARD, "detect/mismatch": SHARD, "detect/other": NODE,
               "detect/sample": NODE, "detect/fuse": NODE, "detect/systems": NODE}
#: Stage-level peak RSS, by kind: the detect run's RSS is a shard's (fit sample + one chunk).
STAGE_KINDS = {"detect": SHARD}


# ---------------------------------------------------------------- measurement

def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_stage(stage: str, argv: list[str], n: int, ws: Path, manifest_glob: str | None) -> dict:
    """One stage as a child process: its wall, CPU (user + sys) and peak RSS, its manifest's phases."""
    before = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{stage} at N={n:,} failed ({' '.join(argv)}):\n{stderr[-3000:]}")
    phases = {}
    if manifest_glob:
        manifest = sorted(ws.glob(f"runs/{manifest_glob}"))[-1]
        phases = {k: round(v, 2) for k, v in json.loads(manifest.read_text()).get("timings_s", {}).items()
                  if k != "total"}
    return {"stage": stage, "objects": n, "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "load_before": before, "load_after": _load(), "phases_s": phases, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_labels(ws: Path, count: int, seed: int) -> None:
    """``count`` seeded labels (a quarter 'interesting', the rest 'normal') through the engine's label store."""
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.triage.labels import LabelStore
    from fmb_engine.workspace import Workspace

    with EmbeddingReader(ws / "embeddings" / "synthetic.h5") as reader:
        ids = reader.object_ids.astype(str)
    rows = np.random.default_rng(seed).choice(len(ids), count, replace=False)
    with LabelStore.for_workspace(Workspace(ws), user="capacity-bench") as store:
        for i, row in enumerate(rows):
            store.set_label(ids[row], "interesting" if i % 4 == 0 else "normal")


def write_queries(ws: Path, count: int, seed: int) -> Path:
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(ws / "embeddings" / "synthetic.h5") as reader:
        ids = reader.object_ids.astype(str)
    path = ws / "bench_queries.csv"
    chosen = ids[np.sort(np.random.default_rng(seed).choice(len(ids), min(count, len(ids)), replace=False))]
    path.write_text("object_id\n" + "\n".join(chosen) + "\n")
    return path


def measure(n: int, root: Path, embeddings: Path | None, umap_points: int, stages: list[str],
            rerank_modalities: list[str], reuse: bool = False) -> list[dict]:
    """Every stage at N objects in a fresh workspace ``root/capN``, removed afterwards; with ``reuse``
    the stages run in the workspace left there by an earlier (interrupted) measure, which is kept."""
    ws = root / f"cap{n}"
    task = ws / "bench_task.yaml"
    if not reuse:
        shutil.rmtree(ws, ignore_errors=True)
        subprocess.run([ENGINE, "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
        task.write_text("detect:\n  baselines: false\n  n_jobs: 1\n"
                        f"analyze:\n  umap_max_points: {umap_points}\n  umap_thumbnails: 0\n")
    elif not task.is_file():
        raise SystemExit(f"{ws}: no earlier measure's workspace to reuse (no {task.name})")
    w, c = ["-w", str(ws)], ["-c", str(task)]
    rerank_opts = [a for m in rerank_modalities for a in ("--modality", m)]
    out = []
    try:
        if embeddings is not None and not reuse:  # the shared file: a hard link, never written to
            os.link(embeddings, ws / "embeddings" / "synthetic.h5")
        elif not reuse:
            out.append(run_stage("embed", [ENGINE, "embed", "synthetic", "--objects", str(n), "--dims", DIMS,
                                           "--seed", "0", *w], n, ws, "*embed*.json"))
            print(json.dumps(out[-1]), flush=True)
        plan = {
            "detect": ([ENGINE, "detect", "all", *w, *c], "*detect*.json"),
            "rankings": ([ENGINE, "analyze", "rankings", *w, *c], "*analyze.rankings*.json"),
            "knn": ([ENGINE, "analyze", "similarity", "--ids-csv", "{queries}", "--modality", "image",
                     "--backend", "approx", *w, *c], "*analyze.similarity*.json"),
            "umap": ([ENGINE, "analyze", "umap", "--modality", "image", *w, *c], "*analyze.umap*.json"),
            "rerank": ([ENGINE, "discover", "rerank", *rerank_opts, *w, *c], "*discover*.json"),
            "evaluate": ([ENGINE, "evaluate", *w, *c, "--format", "json"], None),
        }
        for stage in stages:
            argv, glob = plan[stage]
            if stage == "knn":
                queries = str(write_queries(ws, QUERIES, seed=1))
                argv = [queries if a == "{queries}" else a for a in argv]
            if stage == "rerank":
                write_labels(ws, LABELS, seed=2)
            name = f"rerank[{','.join(rerank_modalities)}]" if stage == "rerank" and rerank_modalities else stage
            out.append(run_stage(name, argv, n, ws, glob))
            print(json.dumps(out[-1]), flush=True)
    finally:
        if not reuse:
            shutil.rmtree(ws, ignore_errors=True)
    return out


def append(results: Path, records: list[dict]) -> None:
    """Add records to the results file (atomic rewrite)."""
    old = json.loads(results.read_text()) if results.exists() else []
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(old + records, indent=1) + "\n")
    tmp.replace(results)


# ---------------------------------------------------------------- model

@dataclass(frozen=True)
class Law:
    """y = a + b * N, fitted by least squares on (N, y) points; ``spread`` = largest |residual|,
    ``n_mean`` the mean N of the points (where the line passes through the mean y)."""
    a: float
    b: float
    points: int
    spread: float
    n_mean: float

    def __call__(self, n: float) -> float:
        return self.a + self.b * n


def fit_law(ns: list[float], ys: list[float]) -> Law:
    """Least-squares line through (N, y); one distinct N gives a constant (b = 0)."""
    x, y = np.asarray(ns, float), np.asarray(ys, float)
    if len(x) == 0:
        raise ValueError("no points to fit")
    if len(np.unique(x)) < 2:
        a, b = float(y.mean()), 0.0
    else:
        b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    return Law(float(a), float(b), len(x), float(np.abs(resid).max()), float(x.mean()))


def phase_kind(key: str) -> str:
    """FIT, SHARD or NODE for ``stage/phase`` (or a whole ``stage``)."""
    for prefix, kind in PHASE_KINDS.items():
        if key.startswith(prefix):
            return kind
    return STAGE_KINDS.get(key, NODE)


def _phase_name(phase: str) -> str:
    """'score:synthetic/image' -> 'score:image'; 'flows:synthetic' -> 'flows': run names out of the key."""
    head, _, tail = phase.partition(":")
    return f"{head}:{tail.split('/', 1)[1]}" if "/" in tail else head


def phase_cpu(record: dict) -> dict[str, float]:
    """The manifest's phases (wall seconds) as CPU seconds: each scaled by the run's CPU / wall, so that
    they add up to its CPU time (load-independent); ``other`` is start-up, reading and writing outside them.
    Scaling assumes every phase used the extra threads (or lost time to the load) in the same proportion."""
    phases = {_phase_name(k): v for k, v in record.get("phases_s", {}).items()}
    if not phases:
        return {}
    phases["other"] = max(record["wall_s"] - sum(phases.values()), 0.0)
    scale = record["cpu_s"] / sum(phases.values())
    return {k: v * scale for k, v in phases.items()}


def fit_model(records: list[dict]) -> dict[str, dict]:
    """Per stage (CPU s and peak RSS MB) and per phase (seconds) laws in N, with their kind."""
    series: dict[str, dict[str, list]] = {}
    for r in records:
        s = series.setdefault(r["stage"], {"n": [], "cpu": [], "rss": []})
        s["n"].append(r["objects"])
        s["cpu"].append(r["cpu_s"])
        s["rss"].append(r["peak_rss_mb"])
        phases = phase_cpu(r)
        for phase, sec in phases.items():
            p = series.setdefault(f"{r['stage']}/{phase}", {"n": [], "cpu": [], "rss": []})
            p["n"].append(r["objects"])
            p["cpu"].append(sec)
    model = {}
    for key, s in series.items():
        entry = {"kind": phase_kind(key), "cpu": fit_law(s["n"], s["cpu"]).__dict__}
        if s["rss"]:
            entry["rss"] = fit_law(s["n"], s["rss"]).__dict__
        model[key] = entry
    return model


def project(model: dict[str, dict], n: float, shards: int) -> dict[str, dict]:
    """Each phase's CPU seconds in all and wall seconds with ``shards`` nodes side by side, at N objects.

    FIT phases cost the mean of their measurements once (constant in N: a capped sample);
    SHARD phases cost ``a + b * N / K`` per shard, K of them in parallel (CPU: ``K * a + b * N``);
    NODE phases cost ``a + b * N`` on one node. Wall = CPU on an idle core (one thread per job)."""
    out = {}
    for key, entry in model.items():
        if "/" not in key:
            continue
        law, kind = Law(**entry["cpu"]), entry["kind"]
        if kind == FIT:
            cpu = wall = law(law.n_mean)
        elif kind == SHARD:
            wall = law(n / shards)
            cpu = shards * wall
        else:
            cpu = wall = law(n)
        out[key] = {"kind": kind, "cpu_s": max(cpu, 0.0), "wall_s": max(wall, 0.0)}
    return out


def peak_memory(model: dict[str, dict], n: float, shards: int) -> dict[str, float]:
    """Peak RSS (MB) of each stage's job at N objects: a SHARD stage at N/K, any other at N."""
    return {key: Law(**e["rss"])(n / shards if e["kind"] == SHARD else n)
            for key, e in model.items() if "/" not in key and "rss" in e}


# ---------------------------------------------------------------- report

def _fmt_law(law: dict, unit: str, per: float, per_unit: str) -> str:
    return f"{law['a']:,.1f} {unit} + {law['b'] * per:,.2f} {per_unit}"


def measurements_table(records: list[dict]) -> str:
    """Markdown: every measured run, by stage then N."""
    lines = ["| stage | objects | CPU s | wall s | peak RSS MB | load 1 min before / after |", "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["stage"], r["objects"])):
        load = "?" if r.get("load_before") is None else f"{r['load_before']:.1f} / {r['load_after']:.1f}"
        lines.append(f"| {r['stage']} | {r['objects']:,} | {r['cpu_s']:,.1f} | {r['wall_s']:,.1f} | "
                     f"{r['peak_rss_mb']:,.0f} | {load} |")
    return "\n".join(lines)


def report(model: dict[str, dict], n: float, shard_counts: list[int]) -> str:
    """Markdown: the fitted laws, the projection of detect at N for each K, each job's memory at N."""
    lines = ["| stage / phase | kind | CPU s = a + b·N (b per 10⁶) | max residual | peak RSS MB = c + d·N (d per 10⁶) |",
             "|---|---|---|---|---|"]
    for key in sorted(model):
        e = model[key]
        rss = _fmt_law(e["rss"], "MB", 1e6, "MB") if "rss" in e else "—"
        lines.append(f"| {key} | {e['kind']} | {_fmt_law(e['cpu'], 's', 1e6, 's')} | {e['cpu']['spread']:.1f} s "
                     f"({e['cpu']['points']} runs) | {rss} |")
    lines += ["", f"Projection at N = {n:,.0f}:", "",
              "| K shards | detect wall: fit + shard + merge | detect CPU, all jobs | a shard's detect job: RSS | "
              "single-node stages CPU (analyses, rerank, evaluate) |", "|---|---|---|---|---|"]
    single = sum(Law(**model[s]["cpu"])(n) for s in model  # a variant (rerank[image]) is not counted again
                 if "/" not in s and "[" not in s and s not in ("detect", "embed"))
    for k in shard_counts:
        phases = {key: v for key, v in project(model, n, k).items() if key.startswith("detect/")}
        parts = {kind: sum(v["wall_s"] for v in phases.values() if v["kind"] == kind) for kind in (FIT, SHARD, NODE)}
        cpu = sum(v["cpu_s"] for v in phases.values())
        shard_mb = peak_memory(model, n, k).get("detect", float("nan"))
        lines.append(f"| {k} | {sum(parts.values()) / 60:,.1f} min = {parts[FIT] / 60:,.1f} + {parts[SHARD] / 60:,.1f} "
                     f"+ {parts[NODE] / 60:,.1f} | {cpu / 3600:,.2f} h | {shard_mb / 1024:,.1f} GiB | {single / 3600:,.2f} h |")
    lines += ["", "| job at N (one node) | peak RSS |", "|---|---|"]
    for key, mb in sorted(peak_memory(model, n, 1).items(), key=lambda kv: -kv[1]):
        if model[key]["rss"]["points"] > 1:  # one run is no law
            lines.append(f"| {key} | {mb / 1024:,.1f} GiB |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="Run every stage at each N (fresh workspaces under --root).")
    m.add_argument("-n", type=int, nargs="+", required=True)
    m.add_argument("--root", type=Path, required=True)
    m.add_argument("--embeddings", type=Path, help="Hard-link this synthetic.h5 instead of making one (one N only).")
    m.add_argument("--umap-points", type=int, default=20_000, help="analyze.umap_max_points of the runs.")
    m.add_argument("--stages", nargs="+", default=["detect", "rankings", "knn", "umap", "rerank", "evaluate"])
    m.add_argument("--rerank-modality", nargs="+", default=[],
                   help="Modalities rerank learns on (default all three: ~24 KB per object, 24 GB at 10^6).")
    m.add_argument("--reuse", action="store_true", help="Run --stages in the kept workspace of an interrupted measure.")
    a = sub.add_parser("add", help="Record a stage measured elsewhere.")
    a.add_argument("--stage", required=True)
    a.add_argument("--objects", type=int, required=True)
    a.add_argument("--wall", type=float, required=True)
    a.add_argument("--cpu", type=float, required=True, help="user + sys seconds")
    a.add_argument("--rss-mb", type=float, required=True)
    a.add_argument("--load", type=float, help="1-min load average, if known")
    a.add_argument("--manifest", type=Path, help="The run's manifest: its timings_s become the phases.")
    a.add_argument("--note", default="")
    g = sub.add_parser("add-log", help="Record the stages an interrupted measure printed (its JSON lines).")
    g.add_argument("log", type=Path)
    g.add_argument("--objects", type=int, required=True, help="Only the records of this N.")
    f = sub.add_parser("fit", help="Fit the laws and project.")
    f.add_argument("--objects", type=float, default=1e7)
    f.add_argument("--shards", type=int, nargs="+", default=[1, 4, 16, 64])
    for p in (m, a, g, f):
        p.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.cmd == "measure":
        if args.embeddings and len(args.n) != 1:
            ap.error("--embeddings goes with exactly one -n")
        args.root.mkdir(parents=True, exist_ok=True)
        for n in args.n:
            append(args.results, measure(n, args.root, args.embeddings, args.umap_points, args.stages,
                                         args.rerank_modality, args.reuse))
    elif args.cmd == "add":
        phases = {}
        if args.manifest:
            phases = {k: round(v, 2) for k, v in json.loads(args.manifest.read_text())["timings_s"].items() if k != "total"}
        append(args.results, [{"stage": args.stage, "objects": args.objects, "wall_s": args.wall, "cpu_s": args.cpu,
                               "peak_rss_mb": args.rss_mb, "load_before": args.load, "load_after": args.load,
                               "phases_s": phases, "note": args.note}])
    elif args.cmd == "add-log":
        lines = (json.loads(line) for line in args.log.read_text().splitlines() if line.startswith('{"stage"'))
        append(args.results, [r for r in lines if r["objects"] == args.objects])
    else:
        records = json.loads(args.results.read_text())
        model = fit_model(records)
        MODEL.write_text(json.dumps(model, indent=1) + "\n")
        print(measurements_table(records), report(model, args.objects, args.shards), sep="\n\n")


if __name__ == "__main__":
    main()
