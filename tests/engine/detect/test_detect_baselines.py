"""Baselines: IsolationForest and kNN distance (higher = more anomalous), flow-compatible tables."""

import importlib.util

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from fmb_engine.detect import baselines
from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector, detector_table
from fmb_engine.detect.flows import anomaly_table

#: The exact engines: torch always, faiss (IndexFlatL2) with the ann extra.
ENGINES = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="faiss-cpu (the ann extra) not installed"))]


def _cloud_with_outliers(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((500, 5)).astype(np.float32)
    X[:5] += 9.0
    return X


def test_isolation_forest_scores_outliers_highest_and_is_seeded():
    X = _cloud_with_outliers()
    a = IsolationForestDetector(n_estimators=100, seed=3).fit(X).score_samples(X)
    b = IsolationForestDetector(n_estimators=100, seed=3).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)
    assert set(np.argsort(-a)[:5]) == set(range(5))
    assert ((a > 0) & (a <= 1)).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_knn_hand_example_excludes_self(engine):
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    np.testing.assert_allclose(KNNDistanceDetector(k=1, engine=engine).fit(X).score_samples(), [1, 1, 1, 1, 7])
    np.testing.assert_allclose(KNNDistanceDetector(k=2, engine=engine).fit(X).score_samples(), [1.5, 1, 1, 1.5, 7.5])
    # new points are not excluded from anything
    new = KNNDistanceDetector(k=1, engine=engine).fit(X).score_samples(np.array([[2.0], [6.0]]))
    np.testing.assert_allclose(new, [0, 3])


@pytest.mark.parametrize("engine", ENGINES)
def test_knn_duplicate_is_a_neighbour_at_distance_zero(engine):
    X = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    np.testing.assert_allclose(KNNDistanceDetector(k=1, engine=engine).fit(X).score_samples(), [0.0, 0.0, 5.0])
    # more duplicates than k: a row's own column may fall out of faiss's top k + 1, the distances stay right
    many = np.vstack([np.zeros((6, 3)), np.eye(3) * 4.0])
    got = KNNDistanceDetector(k=2, engine=engine).fit(many).score_samples()
    np.testing.assert_allclose(got, [0.0] * 6 + [4.0] * 3, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_knn_matches_sklearn_on_random_data_across_chunks_and_reference_blocks(engine, monkeypatch):
    monkeypatch.setattr(baselines, "REFERENCE_BLOCK", 37)  # several reference blocks, the last one short
    rng = np.random.default_rng(1)
    X, new = rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    knn = KNNDistanceDetector(k=5, chunk_size=64, engine=engine).fit(X)
    dist, _ = NearestNeighbors(n_neighbors=6).fit(X).kneighbors(X)
    np.testing.assert_allclose(knn.score_samples(), dist[:, 1:].mean(axis=1), rtol=1e-4, atol=1e-4)
    dist, _ = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(new)
    np.testing.assert_allclose(knn.score_samples(new), dist.mean(axis=1), rtol=1e-4, atol=1e-4)
    assert knn.search_report["engine"] == engine


def test_the_exact_engines_agree_and_each_is_the_same_bits_for_the_same_queries():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    X, new = rng.standard_normal((2000, 100)).astype(np.float32), rng.standard_normal((700, 100)).astype(np.float32)
    torch_knn = KNNDistanceDetector(k=10, engine="torch").fit(X)
    faiss_knn = KNNDistanceDetector(k=10, engine="faiss", threads=1).fit(X)
    for q in (None, new):
        np.testing.assert_allclose(torch_knn.score_samples(q), faiss_knn.score_samples(q), rtol=1e-5)
    assert np.array_equal(faiss_knn.score_samples(new), KNNDistanceDetector(k=10, engine="faiss").fit(X).score_samples(new))
    assert np.array_equal(torch_knn.score_samples(new), KNNDistanceDetector(k=10, engine="torch").fit(X).score_samples(new))


def test_validation():
    with pytest.raises(ValueError):
        KNNDistanceDetector(k=0)
    with pytest.raises(ValueError, match="engine"):
        KNNDistanceDetector(engine="gpu")
    with pytest.raises(ValueError, match="more than k"):
        KNNDistanceDetector(k=5).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError):
        IsolationForestDetector(seed=-1)
    with pytest.raises(RuntimeError):
        IsolationForestDetector().score_samples(np.zeros((2, 2)))
    bad = np.zeros((20, 2))
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="finite_rows"):
        KNNDistanceDetector().fit(bad)


def test_detector_table_is_interchangeable_with_flow_table():
    score = np.array([0.2, 3.0, 1.0])
    table = detector_table(["a", "b", "c"], score, "embedding_images")
    assert list(table.columns) == list(anomaly_table(["a"], np.array([0.0]), "k").columns)
    np.testing.assert_allclose(table["neg_log_prob"], score)
    assert table["rank"].tolist() == [3, 1, 2]
