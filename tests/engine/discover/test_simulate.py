"""The simulation runner, its summary and figure, and the rerank() entry, on small synthetic arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmb_engine.figures.discovery import discovery_figure
from fmb_engine.discover.rerank import rerank
from fmb_engine.discover.simulate import CURVE_COLUMNS, simulate, summarize
from fmb_engine.discover.strategies import MIN_LABELS
from fmb_engine.errors import ConfigError, DataError

from .synthetic import clustered


@pytest.fixture(scope="module")
def curves() -> pd.DataFrame:
    X, base, interesting = clustered(n=1200)
    return simulate(X, base, interesting, ("random", "static", "evidence"), seeds=2, budget=60, batch=10)


def test_runner_writes_one_row_per_inspection_with_monotonic_found(curves):
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert len(curves) == 3 * 2 * 60
    for (name, seed), part in curves.groupby(["strategy", "seed"]):
        assert part["inspected"].tolist() == list(range(1, 61))
        found = part["found"].to_numpy()
        assert found[0] in (0, 1) and np.all(np.diff(found) >= 0) and np.all(np.diff(found) <= 1)
    final = curves[curves["inspected"] == 60].groupby("strategy")["found"].mean()
    assert final["evidence"] > final["static"] == 0  # clustered(): the 60 artefacts lead the base order


def test_summary_is_mean_and_std_over_seeds_capped_by_the_budget(curves):
    summary = summarize(curves)
    assert summary["inspected"].unique().tolist() == [50, 60]  # 100 and 200 capped at the budget of 60
    assert list(summary.columns) == ["strategy", "inspected", "mean", "std", "seeds"]
    assert summary["strategy"].unique().tolist() == ["random", "static", "evidence"]
    at = curves[(curves["strategy"] == "random") & (curves["inspected"] == 50)]["found"].to_numpy(float)
    row = summary[(summary["strategy"] == "random") & (summary["inspected"] == 50)].iloc[0]
    assert row["mean"] == pytest.approx(at.mean()) and row["std"] == pytest.approx(at.std())
    assert row["seeds"] == 2


def test_runner_takes_explicit_seeds_params_and_reports_progress():
    X, base, interesting = clustered(n=600)
    calls = []
    out = simulate(X, base, interesting, ("default",), seeds=[7], budget=20, batch=5,
                   params={"default": {"beta": 2.0}}, progress=lambda name, seed: calls.append((name, seed)))
    assert calls == [("default", 7)] and out["seed"].unique().tolist() == [7] and len(out) == 20


def test_runner_refuses_bad_input_with_a_clear_message():
    X, base, interesting = clustered(n=300)
    with pytest.raises(ConfigError, match="unknown strategy oracle"):
        simulate(X, base, interesting, ("oracle",), seeds=1)
    with pytest.raises(ConfigError, match="budget and batch"):
        simulate(X, base, interesting, ("static",), seeds=1, batch=0)
    with pytest.raises(DataError, match="same objects"):
        simulate(X, base[:-1], interesting, ("static",), seeds=1)


def test_figure_writes_png_and_pdf(curves, tmp_path):
    written = discovery_figure(curves, tmp_path / "discovery" / "curves", total=40)
    assert [p.name for p in written] == ["curves.png", "curves.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[1].read_bytes()[:4] == b"%PDF"
    with pytest.raises(DataError, match="lack column"):
        discovery_figure(curves.drop(columns="found"), tmp_path / "bad")


def test_rerank_reports_what_the_order_reflects_and_is_deterministic():
    X, base, interesting = clustered(n=1500)
    rows = np.r_[np.arange(60, 64), np.arange(0, 6)]
    relevance = interesting[rows].astype(float)
    one = rerank(X, base, rows, relevance, seed=3)
    two = rerank(X, base, rows, relevance, seed=3)
    assert np.array_equal(one.score, two.score)
    assert one.strategy == "evidence" and one.labels == 10 and one.relevant == 4 and one.fallback is None
    assert one.params["beta"] == 12.0 and one.features["dims"] == 8 and set(one.seconds) == {"features", "fit", "score"}
    open_rows = np.setdiff1d(np.arange(1500), rows)
    top = open_rows[np.argsort(-one.score[open_rows])[:20]]
    assert interesting[top].mean() > 0.9  # the labelled interesting cluster comes first, artefacts drop


def test_rerank_falls_back_with_few_labels_and_checks_its_input():
    X, base, _ = clustered(n=400)
    few = rerank(X, base, np.arange(MIN_LABELS - 1), np.ones(MIN_LABELS - 1))
    assert few.fallback and "base order is kept" in few.fallback and np.array_equal(few.score, base)
    with pytest.raises(ConfigError, match="unknown discovery strategy"):
        rerank(X, base, [], [], strategy="magic")
    with pytest.raises(DataError, match="base score has 399 values for 400"):
        rerank(X, base[:-1], [], [])
    with pytest.raises(DataError, match="labelled row 400 is outside"):
        rerank(X, base, [1, 400], [0, 1])
    with pytest.raises(DataError, match="appears twice"):
        rerank(X, base, [1, 1], [0, 1])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        rerank(X, base, [1, 2], [0, 2])


def test_runner_gives_each_curve_its_own_oracle(monkeypatch):
    from fmb_engine.discover import simulate as module

    made = []

    class Recording(module.Oracle):
        def __init__(self, truth):
            super().__init__(truth)
            made.append(self)

    monkeypatch.setattr(module, "Oracle", Recording)
    X, base, interesting = clustered(n=500)
    out = simulate(X, base, interesting, ("random", "evidence"), seeds=2, budget=30, batch=10)
    assert len(made) == 4  # strategies x seeds, none shared
    for oracle, (_, part) in zip(made, out.groupby(["strategy", "seed"], sort=False)):
        assert len(oracle.asked) == len(set(oracle.asked)) == 30
        assert part["found"].iloc[-1] == interesting[oracle.asked].sum()
