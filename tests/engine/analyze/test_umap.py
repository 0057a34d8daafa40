"""UMAP coordinates: cache by input digest (cheap injected projector) and one real, tiny, seeded run."""

import json

import numpy as np
import pandas as pd
import pytest

from fmb_engine.analyze.umap_embed import digest, project


def test_cache_by_digest(tmp_path):
    calls = []

    def fake(x, params):
        calls.append(len(x))
        return x[:, :2] * params["seed"]

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    params = {"n_neighbors": 5, "min_dist": 0.1, "metric": "euclidean", "seed": 2}
    a, key, hit = project(x, params, tmp_path, fake)
    b, key2, hit2 = project(x, params, tmp_path, fake)
    assert (not hit, hit2, key == key2, calls) == (True, True, True, [10]) and np.array_equal(a, b)
    _, key3, hit3 = project(x, params | {"seed": 3}, tmp_path, fake)
    x2 = x.copy()
    x2[0, 0] += 1
    assert not hit3 and key3 != key and digest(x2, params) != key and len(calls) == 2


def test_umap_door_with_injected_projector(analysed):
    from fmb_engine.analyze.run import analyze_umap
    from fmb_engine.config import load

    ws, _ = analysed
    cfg = load("analyze", ws, cli={"models": ["pca"]})
    first = analyze_umap(ws, cfg, projector=lambda x, p: np.asarray(x[:, :2], np.float32))
    again = analyze_umap(ws, cfg, projector=lambda x, p: pytest.fail("should be cached"))
    assert all(v["cached"] for v in again.summary["projections"].values())
    manifest = json.loads(first.manifest.read_text())
    assert "embeddings:pca" in manifest["inputs"] and "pca/image:invalid" in manifest["dropped"]  # counted, even 0
    coords = pd.read_parquet(first.outputs["coords"])
    assert set(coords.columns) == {"object_id", "model", "modality", "x", "y"} and len(coords) > 0


@pytest.mark.slow
def test_real_umap_is_seeded_on_tiny_data():
    from fmb_engine.analyze.umap_embed import umap_projector

    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    params = {"n_neighbors": 5, "min_dist": 0.1, "metric": "euclidean", "seed": 1}
    a, b = umap_projector(x, params), umap_projector(x, params)
    assert a.shape == (40, 2) and np.allclose(a, b)


def test_distance_path():
    from fmb_engine.analyze.umap_embed import SMALL_DATA, distance_path

    assert distance_path(2000, "euclidean") == "precomputed" and distance_path(2000, "cosine") == "precomputed"
    assert distance_path(SMALL_DATA, "euclidean") == "umap"  # UMAP's approximate neighbours from here on
    assert distance_path(100, "correlation") == "umap"  # not vectorised by scikit-learn: UMAP's own metric


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_precomputed_distances_give_umaps_own_neighbour_graph(metric):
    """The small-data shortcut changes how distances are computed, not the graph UMAP lays out."""
    import warnings

    import umap
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) @ rng.normal(size=(6, 24)) + 0.3 * rng.normal(size=(300, 24))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        own = umap.UMAP(metric=metric, random_state=1, n_jobs=1, n_epochs=10).fit(x)
        pre = umap.UMAP(metric="precomputed", random_state=1, n_jobs=1, n_epochs=10).fit(pairwise_distances(x, metric=metric))
    assert np.array_equal(own.graph_.indices, pre.graph_.indices)
    assert abs(own.graph_ - pre.graph_).max() < 1e-4
