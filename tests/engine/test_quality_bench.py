"""bench/quality.py: its AUROCs are `evaluate`'s, and its summary splits the target's gap as documented."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from bench.quality import aurocs, summary
from fmb_engine.config import load
from fmb_engine.detect.evaluation import evaluate_workspace
from fmb_engine.detect.run import detect
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.workspace import Workspace

FLOWS = ("synthetic/image/flow", "synthetic/spectrum/flow", "synthetic/joint/flow")


def test_aurocs_are_evaluates_and_split_the_sampled_flows(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    h5 = write_synthetic(ws, SyntheticSpec(900, {"image": 24, "spectrum": 24, "joint": 40}, seed=3,
                                           outlier_fraction=0.03)).outputs["embeddings"]
    detect(ws, load("detect", ws, cli={"epochs": 2, "n_jobs": 1, "baselines": False, "fit_max_objects": 300}))
    got = aurocs(ws.root, h5, seed=42, fit_max_objects=300, first_rows=450)
    evaluate_workspace(ws, None)
    table = pd.read_csv(ws.folder("analysis") / "evaluation.csv")
    want = table[(table["subset"] == "all") & (table["metric"] == "auroc")].set_index("system")["value"]
    assert set(got["auroc"]) == set(want.index)
    for system, value in want.items():
        assert got["auroc"][system] == pytest.approx(value, abs=5e-5), system
    assert set(got["in_sample"]) == set(got["out_of_sample"]) == set(FLOWS)  # flows only: fused scores mix both
    assert set(got["first_rows"]) == set(want.index)
    full = aurocs(ws.root, h5, seed=42, fit_max_objects=900)  # nothing left out of the fit: no split
    assert set(full) == {"auroc"}


def _record(objects: int, fit: str, seed: int, value: float) -> dict:
    return {"objects": objects, "fit": fit, "seed": seed, "auroc": {"s": value}}


def test_summary_differences_and_verdicts(tmp_path, capsys):
    records = [_record(10, "full", 1, 0.70), _record(10, "full", 2, 0.72),
               _record(10, "sample", 1, 0.73), _record(10, "sample", 2, 0.73),
               _record(100, "sample", 1, 0.735), _record(100, "sample", 2, 0.745)]
    results = tmp_path / "q.json"
    results.write_text(json.dumps(records))
    summary(argparse.Namespace(results=results))
    row = capsys.readouterr().out.strip().splitlines()[-1].split(" | ")
    # means 0.710 / 0.730 / 0.740; Δ sample size +0.020, Δ N +0.010, Δ target +0.030
    # ± sqrt(0.01414²/2 + 0.00707²/2) = 0.0112: 0.030 − 0.01 = 0.020 <= 2 × 0.0112, so "~"
    assert row[1:4] == ["0.710 ± 0.014", "0.730 ± 0.000", "0.740 ± 0.007"]
    assert row[4:6] == ["+0.020", "+0.010"]
    assert row[6].removesuffix(" |") == "+0.030 ± 0.011 ~"
