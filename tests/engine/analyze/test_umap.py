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


def test_umap_door_places_every_object_beyond_the_fitted_sample(analysed):
    """Above umap_max_points nothing is dropped: the projector gets every valid object and the
    sample size, and the manifest says how many were fitted and how many transformed."""
    from fmb_engine.analyze.run import analyze_umap
    from fmb_engine.config import load

    ws, _ = analysed
    seen = []

    def fake(x, params):
        seen.append((len(x), params["fit_points"], params["chunk"]))
        return np.asarray(x[:, :2], np.float32)

    result = analyze_umap(ws, load("analyze", ws, cli={"models": ["pca"], "umap_max_points": 50}), projector=fake)
    coords = pd.read_parquet(result.outputs["coords"])
    projections = result.summary["projections"]
    for name, record in projections.items():
        model, modality = name.split("/")
        placed = int(((coords.model == model) & (coords.modality == modality)).sum())
        assert record["fitted"] == 50 and record["fitted"] + record["transformed"] == placed > 50
    assert all(fit == 50 for _, fit, _ in seen)
    manifest = json.loads(result.manifest.read_text())
    assert not any("subsampled" in key for key in manifest["dropped"])


def test_umap_door_refuses_a_fit_beyond_the_node_limit(analysed):
    from fmb_engine.analyze.run import analyze_umap
    from fmb_engine.analyze.umap_embed import FIT_LIMIT
    from fmb_engine.config import load
    from fmb_engine.errors import ConfigError

    ws, _ = analysed
    with pytest.raises(ConfigError, match=r"analyze\.umap_max_points is 500,001, above the 500,000"):
        analyze_umap(ws, load("analyze", ws, cli={"umap_max_points": FIT_LIMIT + 1}),
                     projector=lambda x, p: pytest.fail("refused before any projection"))


def test_fit_rows_are_a_seeded_sample():
    from fmb_engine.analyze.umap_embed import fit_rows

    assert np.array_equal(fit_rows(30, 100, 0), np.arange(30))
    a, b, c = fit_rows(1000, 100, 7), fit_rows(1000, 100, 7), fit_rows(1000, 100, 8)
    assert len(a) == 100 and np.array_equal(a, b) and not np.array_equal(a, c) and np.all(np.diff(a) > 0)


def test_fitted_sample_and_chunk_are_in_the_cache_digest(tmp_path):
    x = np.arange(400, dtype=np.float32).reshape(100, 4)
    params = {"n_neighbors": 5, "min_dist": 0.1, "metric": "euclidean", "seed": 2, "fit_points": 50, "chunk": 20}
    keys = {project(x, p, tmp_path, lambda x, _: x[:, :2])[1]
            for p in (params, params | {"fit_points": 60}, params | {"chunk": 30})}
    assert len(keys) == 3


@pytest.mark.slow
def test_real_umap_is_seeded_on_tiny_data():
    from fmb_engine.analyze.umap_embed import umap_projector

    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    params = {"n_neighbors": 5, "min_dist": 0.1, "metric": "euclidean", "seed": 1}
    a, b = umap_projector(x, params), umap_projector(x, params)
    assert a.shape == (40, 2) and np.allclose(a, b)


@pytest.mark.slow
def test_real_umap_fits_a_sample_and_transforms_the_rest_the_same_way_each_time():
    from fmb_engine.analyze.umap_embed import fit_rows, umap_projector

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 4, size=(3, 6))[rng.integers(0, 3, 120)] + rng.normal(size=(120, 6))).astype(np.float32)
    params = {"n_neighbors": 5, "min_dist": 0.1, "metric": "euclidean", "seed": 1, "fit_points": 60, "chunk": 25}
    a, b = umap_projector(x, params), umap_projector(x, params)
    assert a.shape == (120, 2) and np.isfinite(a).all() and np.array_equal(a, b)
    fitted = fit_rows(120, 60, 1)
    other_chunks = umap_projector(x, params | {"chunk": 60})
    assert np.array_equal(a[fitted], other_chunks[fitted])  # the sample's coordinates are the fit's own
    rest = np.setdiff1d(np.arange(120), fitted)
    assert np.isfinite(other_chunks[rest]).all()


def test_distance_path():
    from fmb_engine.analyze.umap_embed import SMALL_DATA, distance_path

    assert distance_path(2000, "euclidean") == "precomputed" and distance_path(2000, "cosine") == "precomputed"
    assert distance_path(SMALL_DATA, "euclidean") == "umap"  # UMAP's approximate neighbours from here on
    assert distance_path(100, "correlation") == "umap"  # not vectorised by scikit-learn: UMAP's own metric
    assert distance_path(2000, "euclidean", transformed=True) == "umap"  # a precomputed fit cannot place new objects


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
