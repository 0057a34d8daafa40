"""Ranking comparisons: shared-set re-ranking (L6), Spearman, Jaccard, retention, disagreement, the door."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from fmb_engine.analyze.rankings import RankMatrix, compare, jaccard, rerank, retention_matrix, spearman, top_count


def test_top_count_and_rerank():
    assert top_count(120, 1.0) == 1 and top_count(1000, 1.0) == 10 and top_count(1000, 10) == 100
    assert top_count(0, 1.0) == 0 and top_count(5, 1.0) == 1
    assert rerank(np.array([7, 3, 10, 5])).tolist() == [3, 1, 4, 2]


def test_spearman_matches_scipy_and_extremes():
    rng = np.random.default_rng(0)
    a = rerank(rng.random(500))
    b = rerank(a + rng.normal(0, 80, 500))
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, len(a) + 1 - a) == pytest.approx(-1.0)
    assert jaccard(a, a, 10) == 1.0 and jaccard(a, len(a) + 1 - a, 10) == 0.0


def test_percentiles_use_the_shared_set():
    # A ranks 200 objects; B ranks only A's bottom half, in the same order. Within the shared set
    # the two rankings agree exactly: B's best is A's best *among shared objects* (L6 would put it
    # at A-percentile 101/100 > 50 and call it a disagreement).
    ids = [f"o{i:03d}" for i in range(200)]
    a = pd.Series(np.arange(1, 201), index=ids, dtype="Int64")
    b = pd.Series([pd.NA] * 100 + list(range(1, 101)), index=ids, dtype="Int64")
    res = compare(RankMatrix({"A": a, "B": b}), top_percent=1.0)
    assert res["shared"].loc["A", "B"] == 100
    assert res["spearman"].loc["A", "B"] == pytest.approx(1.0)
    assert res["jaccard"].loc["A", "B"] == 1.0
    assert res["disagreement"].empty
    ret = res["retention"].set_index(["source", "target"])
    assert ret.loc[("A", "B"), "retention_1"] == 100.0 and ret.loc[("A", "B"), "n_source_top"] == 1
    disp = res["displacement"]
    assert disp.loc[disp.source == "A", "object_id"].tolist() == ["o100"]
    assert disp.loc[disp.source == "A", "target_percentile"].tolist() == [1.0]


def test_retention_and_disagreement_by_hand():
    n = 1000
    ids = [f"x{i}" for i in range(n)]
    a = np.arange(1, n + 1)
    b = a.copy()
    # a's top 10 (1 %): 5 stay in b's top 10, 3 move to b's top 100, 2 fall beyond the median
    b[[5, 6, 7]], b[[50, 51, 52]] = b[[50, 51, 52]], b[[5, 6, 7]]
    b[[8, 9]], b[[900, 901]] = b[[900, 901]], b[[8, 9]]
    res = compare(RankMatrix(pd.DataFrame({"A": a, "B": b}, index=ids)), 1.0, 50.0, [1.0, 10.0])
    ret = res["retention"].set_index(["source", "target"])
    assert ret.loc[("A", "B"), "retention_1"] == pytest.approx(50.0)
    assert ret.loc[("A", "B"), "retention_10"] == pytest.approx(80.0)
    dis = res["disagreement"]
    assert sorted(dis["object_id"]) == ["x8", "x9", "x900", "x901"]
    assert set(dis.loc[dis.object_id.isin(["x8", "x9"]), "anomalous_in"]) == {"A"}
    assert set(dis.loc[dis.object_id.isin(["x900", "x901"]), "anomalous_in"]) == {"B"}
    assert res["jaccard"].loc["A", "B"] == pytest.approx(5 / 15)
    m = retention_matrix(res["retention"])
    assert m.loc["A", "A"] == 100.0 and m.loc["A", "B"] == pytest.approx(50.0)


def test_rankings_door_writes_matrices_the_tui_reads(analysed):
    from fmb_engine.analyze.run import analyze_rankings
    from fmb_engine.config import load
    from fmb_engine.rankings import load_comparison

    ws, _ = analysed
    systems = ["cca/image/flow", "cca/joint/flow", "pca/joint/flow", "cca/fused/geo"]
    result = analyze_rankings(ws, load("analyze", ws, cli={"systems": systems}))
    for kind in ("spearman", "jaccard"):
        m = load_comparison(ws, kind)
        assert list(m.index) == systems and np.allclose(np.diag(m), 1.0)
        assert np.allclose(m.to_numpy(), m.to_numpy().T)
    ret = pd.read_csv(result.outputs["retention"])
    assert len(ret) == len(systems) * (len(systems) - 1)
    assert ret["retention_1"].between(0, 100).all() and (ret["retention_10"] >= ret["retention_1"]).all()
    assert result.manifest is not None and result.manifest.is_file()
    assert set(pd.read_csv(result.outputs["disagreement"]).columns) >= {"object_id", "anomalous_in"}


def _ties_and_gaps(n, seed):
    """Rank columns with ties, missing objects and a numbering that is not 1..n."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.normal(size=(n, 3)), 1)  # coarse: many ties
    ranks = {f"s{k}": rerank(-score[:, k]).astype(float) for k in range(3)}
    ranks["s0"][rng.random(n) < 0.2] = np.nan
    ranks["s1"][rng.random(n) < 0.05] = np.nan
    ranks["gappy"] = rng.permutation(n) * 3.0 + 7  # any increasing numbering
    return pd.DataFrame(ranks, index=[f"o{i}" for i in range(n)])


def test_shared_reranking_from_one_sort_equals_a_fresh_rerank():
    frame = _ties_and_gaps(3000, 1)
    matrix = RankMatrix(frame)
    for a in frame.columns:
        for b in frame.columns:
            mask, ra, rb = matrix.shared(a, b)
            both = (frame[a].notna() & frame[b].notna()).to_numpy()
            assert np.array_equal(mask, both)
            assert ra.dtype == np.int64 and np.array_equal(ra, rerank(frame[a].to_numpy()[both]))
            assert np.array_equal(rb, rerank(frame[b].to_numpy()[both]))


def test_spearman_of_tied_competition_ranks_matches_scipy():
    frame = _ties_and_gaps(2000, 2)
    matrix = RankMatrix(frame)
    _, ra, rb = matrix.shared("s0", "s1")
    assert len(np.unique(ra)) < len(ra)  # ties: the mid-rank path from counted group sizes
    assert spearman(ra, rb) == pytest.approx(spearmanr(ra, rb).statistic, abs=1e-12)
    raw_a, raw_b = frame["gappy"].to_numpy(), frame["s2"].to_numpy()  # not competition ranks: scipy's rankdata path
    assert spearman(raw_a, raw_b) == pytest.approx(spearmanr(raw_a, raw_b).statistic, abs=1e-12)
