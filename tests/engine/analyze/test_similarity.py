"""Exact cosine k-NN (self excluded by row) and neighbour ranks."""

import numpy as np
import pandas as pd
import pytest

from fmb_engine.analyze.similarity import knn, neighbour_ranks, neighbour_table, normalise


def test_knn_matches_brute_force_and_excludes_self():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    idx, sims = knn(x, x, 5, self_rows=np.arange(300), chunk=64, backend="torch")
    full = normalise(x) @ normalise(x).T
    np.fill_diagonal(full, -np.inf)
    expect = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert (idx == expect).mean() > 0.999  # float ties aside
    assert np.allclose(sims, np.take_along_axis(full, idx, 1), atol=1e-5)
    assert not (idx == np.arange(300)[:, None]).any()
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_duplicates_stay_neighbours_and_short_rows_are_padded():
    x = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    idx, sims = knn(x, x, 5, self_rows=np.arange(3), backend="torch")
    assert idx[0, 0] == 1 and sims[0, 0] == pytest.approx(1.0)
    assert (idx[:, 2:] == -1).all() and np.isnan(sims[:, 2:]).all()
    table = neighbour_table(np.array(["a", "b", "c"], object), np.array(["a", "b", "c"], object), idx, sims, "m", "image")
    assert len(table) == 6 and table.loc[0, "neighbour_id"] == "b"


def test_neighbour_percentiles_rerank_within_ranked():
    nb = pd.DataFrame({"object_id": "q", "model": "m", "modality": "image", "neighbour": [1, 2, 3],
                       "neighbour_id": ["a", "b", "z"], "similarity": [0.9, 0.8, 0.7]})
    ranks = pd.Series([10, 30, pd.NA, 20], index=["a", "b", "c", "d"], dtype="Int64")
    out = neighbour_ranks(nb, ranks)
    assert out["rank"].tolist()[:2] == [1, 3] and pd.isna(out["rank"].iloc[2])
    assert out["percentile"].tolist()[:2] == pytest.approx([100 / 3, 100.0])


def test_similarity_and_neighbour_rank_doors(analysed):
    from fmb_engine.analyze.run import analyze_neighbor_ranks, analyze_similarity, read_query_ids
    from fmb_engine.config import load
    from fmb_engine.rankings import load_neighbours

    ws, _ = analysed
    cfg = load("analyze", ws, cli={"k": 4, "models": ["cca"]})
    full = analyze_similarity(ws, cfg)
    table = full.summary["neighbours"]
    assert set(table["modality"]) == {"image", "spectrum", "joint"}
    assert (table["object_id"] != table["neighbour_id"]).all()
    first = table["object_id"].iloc[0]
    shown = load_neighbours(ws, first)
    assert len(shown) == 12 and shown["neighbour"].tolist()[:4] == [1, 2, 3, 4]
    ranks = analyze_neighbor_ranks(ws, cfg)
    summary = ranks.summary["summary"]
    assert len(summary) == 3 and summary["top1_share"].between(0, 100).all()
    # queries by id: repeated ids collapse, unknown ids are reported in the manifest
    csv = ws.root / "q.csv"
    pd.DataFrame({"object_id": [first, "nope"]}).to_csv(csv, index=False)
    queries = read_query_ids([first, first], csv)
    assert queries == [first, "nope"]
    some = analyze_similarity(ws, cfg, queries=queries)
    assert set(some.summary["neighbours"]["object_id"]) == {first}
    import json

    manifest = json.loads(some.manifest.read_text())
    assert any("nope" in w for w in manifest["warnings"])
    assert some.outputs["neighbours"].name == "query_neighbours.parquet"
    assert len(load_neighbours(ws, table["object_id"].iloc[-1])) == 12  # the full table is kept


def test_symmetric_self_query_equals_the_generic_path():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(257, 8)).astype(np.float32)
    fast_i, fast_s = knn(x, x, 6, self_rows=np.arange(257), chunk=50, backend="torch")  # symmetric strips
    slow_i, slow_s = knn(x, x, 6, self_rows=np.arange(257), chunk=50, backend="torch", symmetric=False)
    assert np.allclose(fast_s, slow_s, atol=1e-6) and (fast_i == slow_i).mean() > 0.99
