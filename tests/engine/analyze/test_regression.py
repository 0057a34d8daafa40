"""Regression probes: R², bootstrap intervals, participation ratio, random baseline on the same objects."""

import numpy as np
import pandas as pd
import pytest

from fmb_engine.analyze.regression import bootstrap_r2, linear_attributions, participation_ratio, probe, r2, split_ids


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
