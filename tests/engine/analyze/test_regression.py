"""Regression probes: R², bootstrap intervals, participation ratio (ridge exact, GBM TreeSHAP) and
its derived measures, random baseline on the same objects."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from fmb_engine.analyze.regression import (
    PR_BOOTSTRAP_MIN_ROWS,
    bootstrap_pr_std,
    bootstrap_r2,
    dimensionality,
    linear_attributions,
    participation_ratio,
    probe,
    r2,
    split_ids,
)
from fmb_engine.errors import ConfigError


def test_r2_and_bootstrap_interval():
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    pred = y + rng.normal(0, 0.5, 400)
    point = r2(y, pred)
    lo, hi = bootstrap_r2(y, pred, 300, seed=1)
    assert lo < point < hi and hi - lo < 0.3
    assert bootstrap_r2(y, pred, 300, seed=1) == (lo, hi)  # seeded
    assert np.isnan(bootstrap_r2(y, pred, 0, seed=1)[0])


def test_participation_ratio_bounds():
    assert participation_ratio(np.ones(8)) == (pytest.approx(1.0), pytest.approx(7.2 / 8, abs=0.13))
    pr, pr90 = participation_ratio(np.array([1.0, 0, 0, 0]))
    assert pr == pytest.approx(0.25) and pr90 == pytest.approx(0.25)
    phi = linear_attributions(np.array([2.0, 0.0, 0.0]), np.random.default_rng(0).normal(size=(50, 3)))
    assert phi[0] == pytest.approx(1.0) and phi[1:].sum() == 0


def test_derived_measures_on_a_known_pr():
    d, k, r2_value = 20, 4, 0.8
    a = np.zeros((60, d))
    a[:, :k] = 1.0 / k  # every row spreads its attribution evenly over k dims -> PR = k/D exactly
    m, phi = dimensionality(a, r2_value, "x", bootstrap=50, seed=0)
    assert phi == pytest.approx(np.r_[np.full(k, 1 / k), np.zeros(d - k)])
    assert m["pr_x"] == pytest.approx(k / d) and m["pr90_x"] == pytest.approx(k / d)
    assert m["epd_x"] == pytest.approx(k)
    assert m["pes_x"] == pytest.approx(r2_value / (k / d + 1e-3)) and m["cwp_x"] == pytest.approx(r2_value * k / d)
    assert m["pr_std_x"] == pytest.approx(0.0, abs=1e-12)  # identical rows: every resample has the same PR


def test_ridge_pr_of_a_linear_target_on_few_dims():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, 16))
    y = x[:, :4].sum(axis=1)
    res = probe(x[:800], y[:800], x[800:], y[800:], bootstrap=0, nonlinear=False, alpha=1e-6, seed=0)
    m = res.metrics
    assert m["pr_ridge"] == pytest.approx(4 / 16, abs=0.03) and m["epd_ridge"] == pytest.approx(4, abs=0.5)
    assert m["pr90_ridge"] == pytest.approx(4 / 16)
    assert m["cwp_ridge"] == pytest.approx(m["r2_ridge"] * m["pr_ridge"])
    assert m["pes_ridge"] == pytest.approx(m["r2_ridge"] / (m["pr_ridge"] + 1e-3))
    assert 0 < m["pr_std_ridge"] < 0.05
    assert res.phi["ridge"].shape == (16,) and "gbm" not in res.phi and "pr_gbm" not in m


def test_bootstrap_pr_std_needs_enough_rows():
    a = np.abs(np.random.default_rng(1).normal(size=(PR_BOOTSTRAP_MIN_ROWS, 8)))
    a /= a.sum(axis=1, keepdims=True)
    std = bootstrap_pr_std(a, 50, seed=3)
    assert np.isfinite(std) and std > 0
    assert bootstrap_pr_std(a, 50, seed=3) == std  # seeded
    assert np.isnan(bootstrap_pr_std(a[:-1], 50, seed=3))  # 49 rows
    assert np.isnan(bootstrap_pr_std(a, 0, seed=3))


def test_gbm_pr_from_treeshap():
    pytest.importorskip("shap")
    rng = np.random.default_rng(7)
    d = 10
    x = rng.normal(size=(700, d))
    one = probe(x[:500], 3 * x[:500, 0], x[500:], 3 * x[500:, 0], bootstrap=0, gbm_iter=60, seed=0)
    spread = probe(x[:500], x[:500].sum(axis=1), x[500:], x[500:].sum(axis=1), bootstrap=0, gbm_iter=60, seed=0)
    for res in (one, spread):
        m = res.metrics
        assert 1 / d <= m["pr_gbm"] <= 1 and 1 / d <= m["pr90_gbm"] <= 1
        assert m["n_shap"] == 200 and np.isfinite(m["pr_std_gbm"]) and res.phi["gbm"].shape == (d,)
        assert m["epd_gbm"] == pytest.approx(m["pr_gbm"] * d)
    assert one.metrics["pr_gbm"] < 0.2 and spread.metrics["pr_gbm"] > 0.6
    sub = probe(x[:500], x[:500].sum(axis=1), x[500:], x[500:].sum(axis=1), bootstrap=0, gbm_iter=20, seed=0,
                shap_max_rows=40)
    assert sub.metrics["n_shap"] == 40 and np.isnan(sub.metrics["pr_std_gbm"])  # < 50 rows: no bootstrap std


def test_gbm_shap_on_without_shap_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "shap", None)  # `import shap` now raises ImportError
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 4)), rng.normal(size=120)
    with pytest.raises(ConfigError, match=r"shap.*gbm_shap: false"):
        probe(x[:100], y[:100], x[100:], y[100:], bootstrap=0, gbm_iter=5)
    off = probe(x[:100], y[:100], x[100:], y[100:], bootstrap=0, gbm_iter=5, gbm_shap=False)
    assert "pr_gbm" not in off.metrics and np.isfinite(off.metrics["r2_gbm"])
    probe(x[:100], y[:100], x[100:], y[100:], bootstrap=0, nonlinear=False)  # no GBM: shap not needed


def test_probe_beats_random_on_a_linear_signal():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12))
    y = x[:, 0] * 2 + x[:, 1] + rng.normal(0, 0.1, 300)
    good = probe(x[:240], y[:240], x[240:], y[240:], bootstrap=50, gbm_iter=20, seed=0)
    noise = rng.normal(size=x.shape)
    bad = probe(noise[:240], y[:240], noise[240:], y[240:], bootstrap=50, gbm_iter=20, seed=0)
    assert good.metrics["r2_ridge"] > 0.95 and bad.metrics["r2_ridge"] < 0.1
    assert good.metrics["r2_gbm"] > 0.5 and good.metrics["pr_ridge"] < 0.5


def test_split_is_order_independent():
    ids = np.array([f"o{i}" for i in range(100)])
    assert split_ids(ids, 0.2, 7) == split_ids(ids[::-1], 0.2, 7)
    train, test = split_ids(ids, 0.2, 7)
    assert len(test) == 20 and not train & test


def test_regression_door(analysed):
    from fmb_engine.analyze.run import analyze_regression
    from fmb_engine.config import load

    ws, survey = analysed
    cfg = load("analyze", ws, cli={"targets": ["redshift"], "models": ["cca"], "modalities": ["spectrum"],
                                   "bootstrap": 20, "gbm_iter": 10, "min_train": 20})
    result = analyze_regression(ws, cfg, survey)
    res = pd.read_csv(result.outputs["results"])
    assert set(res["features"]) == {"embedding", "random"}
    emb = res[res.features == "embedding"].iloc[0]
    rnd = res[res.features == "random"].iloc[0]
    assert emb["n_test"] == rnd["n_test"] and emb["dim"] == rnd["dim"]  # same objects, same dimension (L17)
    assert emb["r2_ridge_lo"] <= emb["r2_ridge"] <= emb["r2_ridge_hi"]
    preds = pd.read_parquet(result.outputs["predictions"])
    assert len(preds) == emb["n_test"] and preds["object_id"].is_unique
    for col in ("pr_ridge", "pr_std_ridge", "epd_ridge", "pes_ridge", "cwp_ridge"):
        assert col in res.columns
    phi = pd.read_parquet(result.outputs["phi"])
    assert len(phi) == len(res) and (phi[["target", "model", "modality", "features"]].to_numpy()
                                     == res[["target", "model", "modality", "features"]].to_numpy()).all()
    assert all(len(v) == emb["dim"] for v in phi["phi_ridge"])
    if "pr_gbm" in res.columns:  # shap installed (a core dependency)
        assert 1 / emb["dim"] <= emb["pr_gbm"] <= 1 and all(len(v) == emb["dim"] for v in phi["phi_gbm"])


def test_probes_in_worker_processes_give_the_same_results(analysed):
    """n_jobs only changes where the probes run: every number is the same as in one process."""
    from fmb_engine.analyze.run import analyze_regression
    from fmb_engine.config import load

    ws, survey = analysed
    base = {"targets": ["redshift"], "models": ["cca"], "modalities": ["spectrum", "image"], "bootstrap": 20,
            "gbm_iter": 10, "min_train": 20, "shap_max_rows": 30}
    first = analyze_regression(ws, load("analyze", ws, cli=base | {"n_jobs": 1}), survey)
    one = first.summary["results"]
    timings = json.loads(first.manifest.read_text())["timings_s"]
    assert sorted(v == 0.0 for k, v in timings.items() if k.endswith(":random")) == [False, True]  # fitted once
    assert "embeddings:cca" in json.loads(first.manifest.read_text())["inputs"]  # what was read is recorded
    two = analyze_regression(ws, load("analyze", ws, cli=base | {"n_jobs": 2}), survey).summary["results"]
    assert len(one) == 4
    pd.testing.assert_frame_equal(one, two)
    # cca's image and spectrum vectors have one dimension and the same objects: one random baseline
    rnd = one[one.features == "random"].drop(columns=["modality"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rnd.iloc[[0]].reset_index(drop=True), rnd.iloc[[1]].reset_index(drop=True))


def test_regression_door_without_shap_fails_first(analysed, monkeypatch):
    from fmb_engine.analyze.run import analyze_regression
    from fmb_engine.config import load

    monkeypatch.setitem(sys.modules, "shap", None)
    ws, survey = analysed
    cfg = load("analyze", ws, cli={"targets": ["redshift"], "models": ["cca"], "modalities": ["spectrum"],
                                   "gbm_iter": 10, "min_train": 20})
    with pytest.raises(ConfigError, match="pip install"):
        analyze_regression(ws, cfg, survey)
    off = load("analyze", ws, cli={"targets": ["redshift"], "models": ["cca"], "modalities": ["spectrum"],
                                   "bootstrap": 0, "gbm_iter": 10, "min_train": 20, "gbm_shap": False})
    assert "pr_gbm" not in analyze_regression(ws, off, survey).summary["results"].columns
