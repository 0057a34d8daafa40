"""Benchmark of the per-object CSV writer (not a test): ``write_csv`` against pandas' ``to_csv``, same tables, same run.

The tables are those of a real detect run — ``scores/anomaly_scores_<model>.csv``, ``baseline_scores_``,
``cosine_scores_`` and ``multimodal/all_scores.csv`` — read back and tiled to ``--rows`` rows with fresh
unique ids (``syn-%09d``). Without scores in ``--workspace`` the bench makes them first: ``embed synthetic
--objects 100000`` and ``detect all``. ``--fuzz`` instead compares the float text with numpy's (pandas').
Each table is written ``--repeats`` times by each writer, alternating, into the same folder; the
best CPU time (user + sys of this process) and the best wall time of each are kept and the two files
are compared byte for byte. The 1-minute load average is printed before and after each table.

    python bench/csv_tables.py --workspace /tmp/ws              # 10^6 rows per table
    python bench/csv_tables.py --workspace /tmp/ws --rows 100000
    python bench/csv_tables.py --fuzz 10                        # the float rule on 10 x 22 million doubles

Then the capacity model's merge at 10^7 objects is recomputed (``bench/results/capacity_model.json``,
docs/benchmarks.md "Capacity model"): its detect run (baselines off) writes, per object, 3 rows of the
flow table, 1 of the mismatch table and 1 of the fused table; pandas' CPU for those rows per 10^6 objects
is taken out of the ``detect/other`` law and ``write_csv``'s put in (the table's measured CPU per row).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.csv_tables import write_csv

ROOT = Path(__file__).resolve().parents[1]
ENGINE = str(Path(sys.executable).with_name("fmb-engine"))
#: Rows the capacity model's detect run writes per object, by table (baselines off; top-k tables not counted).
ROWS_PER_OBJECT = {"anomaly": 3, "cosine": 1, "fused": 1}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def tables(ws: Path, objects: int) -> dict[str, Path]:
    """The score tables of one detect run in ``ws`` (made first when there are none)."""
    scores = ws / "scores"
    if not any(scores.glob("anomaly_scores_*.csv")):
        if not (ws / "fmb.yaml").is_file():
            subprocess.run([ENGINE, "init", str(ws)], check=True)
        for argv in (["embed", "synthetic", "--objects", str(objects)], ["detect", "all"]):
            subprocess.run([ENGINE, *argv], cwd=ws, check=True)
    model = sorted(scores.glob("anomaly_scores_*.csv"))[0].stem.removeprefix("anomaly_scores_")
    found = {"anomaly": scores / f"anomaly_scores_{model}.csv", "baseline": scores / f"baseline_scores_{model}.csv",
             "cosine": scores / f"cosine_scores_{model}.csv", "fused": scores / "multimodal" / "all_scores.csv"}
    return {name: path for name, path in found.items() if path.is_file()}


def tiled(path: Path, rows: int) -> pd.DataFrame:
    """The table at ``path`` repeated to ``rows`` rows, object ids made unique again."""
    table = pd.read_csv(path, dtype={"object_id": str})
    table = pd.concat([table] * -(-rows // len(table)), ignore_index=True).iloc[:rows].reset_index(drop=True)
    table["object_id"] = pd.array([f"syn-{i:09d}" for i in range(1, rows + 1)], dtype="str")
    return table


def _timed(write, df: pd.DataFrame, path: Path) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    write(df, path)
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(name: str, df: pd.DataFrame, out: Path, repeats: int) -> dict:
    """Best CPU and wall seconds of each writer on ``df`` and whether their files are the same bytes."""
    writers = {"pandas": lambda d, p: d.to_csv(p, index=False), "write_csv": write_csv}
    best = {w: [float("inf"), float("inf")] for w in writers}
    before = _load()
    for _ in range(repeats):
        for writer, write in writers.items():
            cpu, wall = _timed(write, df, out / f"{name}.{writer}.csv")
            best[writer] = [min(best[writer][0], cpu), min(best[writer][1], wall)]
    files = [out / f"{name}.{w}.csv" for w in writers]
    same = files[0].read_bytes() == files[1].read_bytes()
    size = files[1].stat().st_size
    for f in files:
        f.unlink()
    return {"table": name, "rows": len(df), "columns": df.shape[1], "mb": size / 1e6, "identical": same,
            "pandas_cpu": best["pandas"][0], "pandas_wall": best["pandas"][1],
            "fast_cpu": best["write_csv"][0], "fast_wall": best["write_csv"][1],
            "load_before": before, "load_after": _load()}


def random_doubles(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` doubles of each kind: raw bit patterns, bit patterns in Arrow's positional range, log-uniform,
    float32 values, ratios k/n and products of them (fusion's p-values), decimals, integers, neighbours of
    powers of ten, log-normal."""
    rng = np.random.default_rng(seed)
    exponent = rng.integers(1023 - 15, 1023 + 45, n, dtype=np.uint64)
    sign = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63)
    total = rng.integers(1, 10 ** 7, n)
    part = rng.integers(0, 10 ** 7, n) % total
    tens = 10.0 ** rng.integers(-5, 16, n)
    return {
        "bits": rng.integers(0, 2 ** 64, n, dtype=np.uint64).view(np.float64),
        "bits-positional": (sign | (exponent << np.uint64(52)) | rng.integers(0, 2 ** 52, n, dtype=np.uint64)).view(np.float64),
        "log-uniform": np.sign(rng.standard_normal(n)) * 10 ** rng.uniform(-5, 14, n),
        "float32": (rng.standard_normal(n).astype(np.float32) * np.float32(100)).astype(np.float64),
        "float32-wide": (10 ** rng.uniform(-5, 14, n)).astype(np.float32).astype(np.float64),
        "ratio": part / total,
        "ratio-products": np.sqrt((part / total) * ((total - part) / total)) * (part + 1) / total,
        "decimal": rng.integers(-10 ** 9, 10 ** 9, n) / 10.0 ** rng.integers(0, 10, n),
        "integer": rng.integers(-10 ** 13, 10 ** 13, n).astype(np.float64),
        "near-powers-of-10": np.nextafter(tens, np.where(rng.integers(0, 2, n) == 1, np.inf, -np.inf)),
        "log-normal": rng.lognormal(0, 5, n) * np.sign(rng.standard_normal(n)),
    }


def fuzz(seeds: int, n: int = 2_000_000) -> int:
    """format_floats' text against pandas' (numpy's ``astype(str)``) on ``seeds`` x 11 x ``n`` doubles; mismatches."""
    from fmb_engine.csv_tables import _numpy_text, format_floats

    bad = 0
    for seed in range(seeds):
        for kind, values in random_doubles(n, seed).items():
            got = np.asarray(format_floats(values).to_pylist(), dtype=object)
            wrong = np.flatnonzero(got != _numpy_text(values))
            bad += wrong.size
            if wrong.size:
                print(f"seed {seed} {kind}: {wrong.size} differ, e.g. {values[wrong[0]]!r} -> {got[wrong[0]]!r}")
        print(f"seed {seed}: {len(values) * 11:,} doubles, {bad} differing so far (load {_load():.1f})", flush=True)
    return bad


def merge_projection(results: list[dict], model_path: Path, n: float) -> str:
    """The capacity model's one-node merge at ``n`` objects, with pandas' CSV CPU replaced by write_csv's."""
    import json

    sys.path.insert(0, str(ROOT / "bench"))
    from capacity import NODE, project

    per_row = {r["table"]: (r["pandas_cpu"] / r["rows"], r["fast_cpu"] / r["rows"]) for r in results}
    pandas_s = sum(k * per_row[t][0] for t, k in ROWS_PER_OBJECT.items()) * 1e6
    fast_s = sum(k * per_row[t][1] for t, k in ROWS_PER_OBJECT.items()) * 1e6
    model = json.loads(model_path.read_text())
    merge = {key: v["cpu_s"] for key, v in project(model, n, 1).items()
             if key.startswith("detect/") and v["kind"] == NODE}
    other = model["detect/other"]["cpu"]
    new_other = other["a"] + (other["b"] - (pandas_s - fast_s) / 1e6) * n
    lines = [f"CSV rows of the capacity run per 10^6 objects ({', '.join(f'{k} x {t}' for t, k in ROWS_PER_OBJECT.items())}): "
             f"pandas {pandas_s:.1f} CPU s, write_csv {fast_s:.1f} CPU s",
             f"detect/other per 10^6: {other['b'] * 1e6:.2f} CPU s -> {other['b'] * 1e6 - (pandas_s - fast_s):.2f} CPU s",
             f"merge at {n:,.0f} (one node, idle core): " + " + ".join(f"{k.split('/')[1]} {v / 60:.1f}" for k, v in merge.items())
             + f" = {sum(merge.values()) / 60:.1f} min -> other {new_other / 60:.1f}: "
             f"{(sum(merge.values()) - merge['detect/other'] + new_other) / 60:.1f} min"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="A workspace with a detect run (made if empty).")
    ap.add_argument("--fuzz", type=int, default=0, metavar="SEEDS",
                    help="Instead: compare the float text with numpy's on SEEDS x 22 million random doubles.")
    ap.add_argument("--objects", type=int, default=100_000, help="Objects of the synthetic run made when none exists.")
    ap.add_argument("--rows", type=int, default=1_000_000, help="Rows of each tiled table.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="Folder of the written files (default: the workspace's tmp/).")
    ap.add_argument("--capacity-model", type=Path, default=ROOT / "bench" / "results" / "capacity_model.json")
    args = ap.parse_args()
    if args.fuzz:
        sys.exit(1 if fuzz(args.fuzz) else 0)
    if args.workspace is None:
        ap.error("--workspace is required (or --fuzz)")
    out = args.out or args.workspace / "tmp"
    out.mkdir(parents=True, exist_ok=True)
    print("| table | rows | columns | MB | pandas CPU s / wall s | write_csv CPU s / wall s | ratio CPU / wall | "
          "write_csv MB / CPU s | write_csv rows / CPU s | pandas MB / CPU s | identical | load before / after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name, path in tables(args.workspace, args.objects).items():
        r = measure(name, tiled(path, args.rows), out, args.repeats)
        results.append(r)
        print(f"| {name} | {r['rows']:,} | {r['columns']} | {r['mb']:.1f} | {r['pandas_cpu']:.2f} / {r['pandas_wall']:.2f} | "
              f"{r['fast_cpu']:.2f} / {r['fast_wall']:.2f} | {r['pandas_cpu'] / r['fast_cpu']:.1f} / "
              f"{r['pandas_wall'] / r['fast_wall']:.1f} | {r['mb'] / r['fast_cpu']:.0f} | {r['rows'] / r['fast_cpu']:,.0f} | "
              f"{r['mb'] / r['pandas_cpu']:.0f} | {'yes' if r['identical'] else 'NO'} | "
              f"{r['load_before']:.1f} / {r['load_after']:.1f} |", flush=True)
    if not all(r["identical"] for r in results):
        sys.exit("write_csv wrote different bytes from pandas: see the table")
    if args.capacity_model.is_file() and all(t in {r["table"] for r in results} for t in ROWS_PER_OBJECT):
        print()
        print(merge_projection(results, args.capacity_model, 1e7))


if __name__ == "__main__":
    main()
