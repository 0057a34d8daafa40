"""The k-NN baseline through the approximate index: Euclidean order kept by the lift, recall and
scores against exact search, the backend choice and its manifest record (force approx at small N)."""

import importlib.util

import numpy as np
import pytest

from fmb_engine.config import load
from fmb_engine.detect.baselines import EuclideanAsCosine, KNNDistanceDetector
from fmb_engine.detect.run import detect
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.errors import ConfigError
from fmb_engine.workspace import Workspace
from tests.engine.detect.manifests import detect_manifests

pytest.importorskip("faiss")  # the ann extra (the no-faiss paths are simulated below)


def _clusters(n=4000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = 4 * rng.standard_normal((40, d))
    x = centres[rng.integers(40, size=n)] + rng.standard_normal((n, d)) + 7.0  # off the origin on purpose
    return x.astype(np.float32)


def test_the_lift_turns_euclidean_order_into_cosine_order():
    ref, q = _clusters(300, 8, seed=1), _clusters(20, 8, seed=2)
    lift = EuclideanAsCosine(ref)
    db, lq = lift.database.astype(np.float64), lift.queries(q).astype(np.float64)
    assert np.allclose(np.linalg.norm(db, axis=1), np.linalg.norm(db, axis=1).max(), rtol=1e-5)
    cosine = (lq @ db.T) / np.linalg.norm(lq, axis=1)[:, None] / np.linalg.norm(db, axis=1)[None, :]
    dist = np.linalg.norm(q[:, None, :].astype(np.float64) - ref[None, :, :], axis=2)
    for c, d in zip(cosine, dist):
        assert np.array_equal(np.argsort(-c, kind="stable")[:20], np.argsort(d, kind="stable")[:20])


def test_approximate_scores_match_exact_ones_at_the_measured_recall():
    x, new = np.split(_clusters(5500), [4000])
    exact = KNNDistanceDetector(k=10).fit(x)
    approx = KNNDistanceDetector(k=10, backend="approx").fit(x)
    fitted_exact, fitted_approx = exact.score_samples(), approx.score_samples()
    report = approx.search_report
    assert report["backend"] == "approx" and report["recall_at_10"] >= report["min_recall"] == 0.95
    assert {"nlist", "nprobe", "train_rows", "tuning"} <= set(report)
    assert report["recall"]["self_query"]["queries"] == 1000
    # a missed neighbour can only be replaced by a farther one: scores never drop below the exact ones
    assert np.all(fitted_approx >= fitted_exact - 1e-4)
    same = np.isclose(fitted_approx, fitted_exact, rtol=1e-5, atol=1e-5)
    assert same.mean() >= 0.8 and np.corrcoef(fitted_approx, fitted_exact)[0, 1] > 0.99
    # later calls reuse the index and its nprobe (no new tuning), rows not in the reference set
    scored_exact, scored_approx = exact.score_samples(new), approx.score_samples(new)
    assert approx.search_report["nprobe"] == report["nprobe"]
    scored = approx.search_report["recall"]["scored_rows"]
    assert scored["queries"] == 64 and scored["recall_at_10"] >= 0.9
    assert np.all(scored_approx >= scored_exact - 1e-4)
    assert np.isclose(scored_approx, scored_exact, rtol=1e-5, atol=1e-5).mean() >= 0.8
    again = KNNDistanceDetector(k=10, backend="approx").fit(x).score_samples()  # seeded: the same scores
    assert np.array_equal(again, fitted_approx)


def _workspace(root) -> Workspace:
    ws = Workspace.init(root)
    write_synthetic(ws, SyntheticSpec(1200, {"image": 16, "spectrum": 16, "joint": 24}, seed=4, outlier_fraction=0.03))
    return ws


FAST = {"epochs": 2, "iforest_trees": 20, "n_jobs": 1, "top_k": 20, "fit_max_objects": 600}


def _run(ws, **cli) -> dict:
    detect(ws, load("detect", ws, cli=FAST | cli))
    return detect_manifests(ws)[-1]


def _knn_scores(ws):
    import pandas as pd

    table = pd.read_parquet(ws.folder("scores") / "systems.parquet").set_index("object_id").sort_index()
    return table[[c for c in table.columns if c.startswith("score:") and c.endswith("/knn")]]


def test_detect_records_the_backend_and_the_measured_recall(tmp_path):
    ws = _workspace(tmp_path / "ws")
    manifest = _run(ws, knn_backend="approx")
    searches = manifest["knn_baseline"]
    assert set(searches) == {"synthetic/image", "synthetic/spectrum", "synthetic/joint"}
    for search in searches.values():
        assert search["backend"] == "approx" and search["objects"] == 600 and search["queries"] == 1200
        assert search["recall_at_10"] >= 0.95 and search["recall"]["self_query"]["queries"] == 600
        assert search["recall"]["scored_rows"]["queries"] > 0
        parts = search["recall"].values()  # the overall figure includes the scored rows' sample
        assert search["recall_at_10"] == round(sum(p["hits"] for p in parts) / (10 * sum(p["queries"] for p in parts)), 4)
    approx = _knn_scores(ws)
    # auto below the threshold is the exact search, bit for bit the same as asking for exact
    auto = _run(ws)["knn_baseline"]
    assert {s["backend"] for s in auto.values()} == {"exact"} and "recall_at_10" not in auto["synthetic/image"]
    auto_scores = _knn_scores(ws)
    _run(ws, knn_backend="exact")
    assert _knn_scores(ws).equals(auto_scores)
    # on the standardised matrix the mean distances spread less, so the few missed neighbours weigh more
    assert np.corrcoef(approx.to_numpy().ravel(), auto_scores.to_numpy().ravel())[0, 1] > 0.98
    # auto from the threshold on (600 reference rows >= 600) is approximate, below it exact
    assert {s["backend"] for s in _run(ws, knn_approx_threshold=600)["knn_baseline"].values()} == {"approx"}
    assert {s["backend"] for s in _run(ws, knn_approx_threshold=601)["knn_baseline"].values()} == {"exact"}


def test_without_faiss_approx_is_a_clear_error_and_auto_a_recorded_fallback(tmp_path, monkeypatch):
    ws = _workspace(tmp_path / "ws")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(ConfigError, match=r"detect.knn_backend approx needs the optional package faiss-cpu.*"
                                          r"set detect.knn_backend to exact or auto"):
        _run(ws, knn_backend="approx")
    manifest = _run(ws, knn_approx_threshold=600)
    search = manifest["knn_baseline"]["synthetic/image"]
    assert search["backend"] == "exact" and "detect.knn_approx_threshold" in search["fallback"]
    assert any("k-NN baseline" in w and "faiss-cpu is not installed" in w for w in manifest["warnings"])


def test_auto_falls_back_to_exact_when_the_index_cannot_reach_the_recall():
    """Isotropic noise in 96 dimensions: distances concentrate, the 4-bit codes cannot pick the
    true neighbours among 110 candidates; auto (exact_if_short) then scores exactly and says why."""
    from fmb_engine.analyze.ann import ApproxSettings

    x = np.random.default_rng(2).standard_normal((3000, 96)).astype(np.float32)
    settings = ApproxSettings(min_recall=0.999)
    knn = KNNDistanceDetector(k=10, backend="approx", approx=settings, exact_if_short=True).fit(x)
    scores = knn.score_samples()
    report = knn.search_report
    assert report["backend"] == "exact" and "exact search instead" in report["fallback"]
    assert report["tuning"]["steps"][-1]["nprobe"] == report["nlist"]  # every cell was tried first
    exact = KNNDistanceDetector(k=10).fit(x)
    assert np.array_equal(scores, exact.score_samples())
    assert np.array_equal(knn.score_samples(x[:50]), exact.score_samples(x[:50]))
