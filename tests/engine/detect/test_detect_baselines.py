"""Baselines: IsolationForest and kNN distance (higher = more anomalous), flow-compatible tables."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector, detector_table
from fmb_engine.detect.flows import anomaly_table


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


def test_knn_hand_example_excludes_self():
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    np.testing.assert_allclose(KNNDistanceDetector(k=1).fit(X).score_samples(), [1, 1, 1, 1, 7])
    np.testing.assert_allclose(KNNDistanceDetector(k=2).fit(X).score_samples(), [1.5, 1, 1, 1.5, 7.5])
    # new points are not excluded from anything
    np.testing.assert_allclose(KNNDistanceDetector(k=1).fit(X).score_samples(np.array([[2.0], [6.0]])), [0, 3])


def test_knn_duplicate_is_a_neighbour_at_distance_zero():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    np.testing.assert_allclose(KNNDistanceDetector(k=1).fit(X).score_samples(), [0.0, 0.0, 5.0])


def test_knn_matches_sklearn_on_random_data_across_chunks():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    ours = KNNDistanceDetector(k=5, chunk_size=64).fit(X).score_samples()
    dist, _ = NearestNeighbors(n_neighbors=6).fit(X).kneighbors(X)
    np.testing.assert_allclose(ours, dist[:, 1:].mean(axis=1), rtol=1e-4, atol=1e-4)


def test_validation():
    with pytest.raises(ValueError):
        KNNDistanceDetector(k=0)
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
