"""Active-discovery core on plain arrays: strategies, label targets, the oracle loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from fmb_engine.discover import simulate, strategies
from fmb_engine.discover.features import Features
from fmb_engine.discover.relevance import targets
from fmb_engine.discover.simulate import Oracle, discovery_curve
from fmb_engine.discover.strategies import STRATEGIES, kth_distance, make, nearest_labelled
from fmb_engine.errors import DataError

from .synthetic import clustered


def test_every_strategy_without_labels_keeps_the_base_order():
    X, base, _ = clustered()
    none = np.empty(0, dtype=np.int64)
    for name in STRATEGIES:
        score = make(name).fit(X, base, none, np.empty(0)).score(X, base)
        assert np.array_equal(np.argsort(-score, kind="stable"), np.argsort(-base, kind="stable")), name


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"static"}))
@pytest.mark.parametrize("count", [1, 3, strategies.MIN_LABELS - 1])
def test_few_labels_keep_the_base_order_and_say_why(name, count):
    X, base, _ = clustered()
    model = make(name).fit(X, base, np.arange(count) * 7, np.ones(count))
    assert np.array_equal(model.score(X, base), base)
    assert model.fallback == f"{count} label(s), fewer than {strategies.MIN_LABELS}: the base order is kept"
    assert model.notes == [model.fallback]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("kind", [0.0, 1.0])
def test_one_kind_of_label_still_moves_the_order(name, kind):
    X, base, interesting = clustered()
    group = np.arange(60, 100) if kind else np.arange(0, 60)  # the interesting cluster or the artefacts
    idx = group[:8]
    model = make(name).fit(X, base, idx, np.full(8, kind))
    score = model.score(X, base)
    assert score.shape == base.shape and np.isfinite(score).all() and model.fallback is None
    if name == "evidence":  # the rest of the labelled objects' cluster moves the way the labels say
        ranks = np.argsort(np.argsort(-score))
        base_ranks = np.argsort(np.argsort(-base))
        moved = np.median(ranks[group[8:]]) - np.median(base_ranks[group[8:]])
        assert moved < 0 if kind else moved > 0
        assert "labels are" in model.notes[0]


def test_learned_strategies_beat_the_base_order_on_clustered_truth():
    X, base, interesting = clustered(n=1500)
    found = {name: discovery_curve(name, X, base, Oracle(interesting), budget=60, batch=10, seed=0)
             for name in ("random", "static", "astronomaly", "gp", "evidence")}
    assert found["static"][59] == 0  # the 60 artefacts come first in the base order
    assert found["evidence"][59] >= 20  # a labelled interesting object pulls its cluster up
    assert found["evidence"][59] > found["random"][59]
    assert all(np.all(np.diff(curve) >= 0) for curve in found.values())


def test_same_labels_same_seed_same_scores():
    X, base, interesting = clustered()
    idx = np.r_[np.flatnonzero(interesting)[:5], np.arange(100, 110)]
    y = interesting[idx].astype(float)
    for name in STRATEGIES:
        one = make(name, seed=4).fit(X, base, idx, y).score(X, base)
        two = make(name, seed=4).fit(X, base, idx, y).score(X, base)
        assert np.array_equal(one, two), name


def test_same_seed_same_curve_and_seeds_change_random_order():
    X, base, interesting = clustered()
    one = discovery_curve("evidence", X, base, Oracle(interesting), budget=40, batch=10, seed=3)
    two = discovery_curve("evidence", X, base, Oracle(interesting), budget=40, batch=10, seed=3)
    assert np.array_equal(one, two)
    orders = {tuple(o.asked) for o in (Oracle(interesting), Oracle(interesting))}
    for seed, oracle in enumerate(Oracle(interesting) for _ in range(2)):
        discovery_curve("random", X, base, oracle, budget=20, batch=10, seed=seed)
        orders.add(tuple(oracle.asked))
    assert len(orders) == 3  # the two empty starts collapse; two seeds, two random orders


@dataclass
class Spy:
    """Records what a strategy is given; fails if it ever holds a label the oracle was not asked for."""

    oracle: Oracle | None = None
    seen: list = field(default_factory=list)
    name: str = "spy"
    notes: list = field(default_factory=list)

    def fit(self, Z, base, idx, y):
        assert set(np.asarray(idx).tolist()) <= set(Spy.current.asked)
        assert len(idx) == len(Spy.current.asked)
        Spy.calls.append((len(idx), float(np.sum(y))))
        return self

    def score(self, Z, base):
        return np.asarray(base, dtype=np.float64)


def test_the_oracle_answers_only_what_was_inspected(monkeypatch):
    X, base, interesting = clustered()
    oracle = Oracle(interesting)
    Spy.current, Spy.calls = oracle, []
    monkeypatch.setitem(strategies.STRATEGIES, "spy", Spy)
    curve = discovery_curve("spy", X, base, oracle, budget=50, batch=10, seed=0)
    assert [n for n, _ in Spy.calls] == [0, 10, 20, 30, 40]
    assert len(oracle.asked) == len(set(oracle.asked)) == 50  # nothing inspected twice
    assert curve[-1] == interesting[oracle.asked].sum()
    assert [s for _, s in Spy.calls] == [float(curve[n - 1]) if n else 0.0 for n, _ in Spy.calls]
    assert "truth" not in simulate.discovery_curve.__code__.co_varnames


def test_block_helpers_match_brute_force(monkeypatch):
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(500, 4))
    q = Z[[3, 40, 41, 499]]
    brute = np.sqrt(((Z[:, None, :] - q[None]) ** 2).sum(-1))
    monkeypatch.setattr(strategies, "BLOCK", 64)
    assert np.allclose(nearest_labelled(Z, q), brute.min(1), atol=1e-6)
    assert np.allclose(kth_distance(Z, q, 5), np.sort(brute, axis=0)[5], atol=1e-6)
    assert np.allclose(kth_distance(Z.astype(np.float32), q.astype(np.float32), 5), np.sort(brute, axis=0)[5],
                       atol=1e-4)


def test_evidence_blocks_and_float32_agree_with_one_float64_pass(monkeypatch):
    X, base, interesting = clustered(n=1500)
    idx = np.r_[np.flatnonzero(interesting)[:4], np.arange(200, 210)]
    y = interesting[idx].astype(float)
    whole = make("evidence").fit(X, base, idx, y).score(X, base)
    monkeypatch.setattr(strategies, "BLOCK", 100)
    blocked = make("evidence").fit(X.astype(np.float32), base, idx, y).score(X.astype(np.float32), base)
    assert np.allclose(whole, blocked, rtol=1e-4, atol=1e-3)


def test_features_are_whitened_seeded_and_match_a_full_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    X = (rng.normal(size=(4000, 50)) * 4 * 0.75 ** np.arange(50)) @ np.linalg.qr(rng.normal(size=(50, 50)))[0]
    f = Features(dims=8, fit_rows=1000, seed=5)
    a = f.fit_transform(X)
    b = Features(dims=8, fit_rows=1000, seed=5).fit_transform(X)
    assert a.shape == (4000, 8) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.allclose(a.std(0), 1.0, atol=0.15)
    full = PCA(8).fit(X[np.sort(np.random.default_rng(5).choice(4000, 1000, replace=False))])
    axes = f.projection_ / np.linalg.norm(f.projection_, axis=0)
    assert np.all(np.abs(np.sum(axes * full.components_.T, axis=0)) > 0.99)  # same axes, up to sign
    assert f.explained_variance_ratio_ == pytest.approx(full.explained_variance_ratio_.sum(), rel=1e-3)


def test_features_name_the_first_non_finite_row():
    X = np.random.default_rng(0).normal(size=(300, 6))
    X[123, 2] = np.nan
    with pytest.raises(DataError, match="row 123 has non-finite"):
        Features(dims=3).fit_transform(X)
    with pytest.raises(DataError, match="row 123 has non-finite"):
        Features(dims=3, fit_rows=50, seed=1).fit_transform(X)  # the fit sample may miss it; transform does not


def test_targets_map_names_count_the_rest_and_list_objects_not_in_the_run():
    ids = np.array(["a", "b", "c", "d"])
    labels = {"a": "AGN", "b": "artefact", "c": "skip", "d": "banana", "zz": "lens"}
    t = targets(labels, ids)
    assert t.rows.tolist() == [0, 1] and t.relevance.tolist() == [1.0, 0.0]
    assert t.ignored == {"skip": 1, "banana": 1} and t.not_in_run == ["zz"]
    custom = targets({"a": "normal"}, ids, table={"normal": 0.25})
    assert custom.relevance.tolist() == [0.25]
