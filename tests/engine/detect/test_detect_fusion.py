"""Rank fusion: hand-computed percentiles and scores, p in (0, 1], avg, thresholds, uplift sign."""

import numpy as np
import pytest

from fmb_engine.detect.fusion import FUSION_COLUMNS, align_ranks, fuse, percentile


def test_hand_computed_values():
    df = fuse(["a", "b", "c", "d"], rank_img=[1, 2, 3, 4], rank_spec=[2, 1, 4, 3], rank_mis=[4, 3, 1, 2],
              n_img=4, n_spec=4, n_mis=4, method="geo")
    assert list(df.columns) == list(FUSION_COLUMNS)
    np.testing.assert_allclose(df["p_img"], [1.0, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(df["p_spec"], [0.75, 1.0, 0.25, 0.5])
    np.testing.assert_allclose(df["p_mis"], [0.25, 0.5, 1.0, 0.75])
    np.testing.assert_allclose(df["score_mm_geo"], [0.25 * np.sqrt(0.75), 0.5 * np.sqrt(0.75),
                                                    np.sqrt(0.125), 0.75 * np.sqrt(0.125)])
    np.testing.assert_allclose(df["score_mm_min"], [0.1875, 0.375, 0.25, 0.1875])
    np.testing.assert_allclose(df["score_mm_avg"], [2.0 / 3, 0.75, 7.0 / 12, 0.5])
    # geo: b (0.433) > c (0.354) > d (0.265) > a (0.217)
    assert df["rank_fused"].tolist() == [4, 1, 2, 3]
    avg = fuse(["a", "b", "c", "d"], [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4, method="avg")
    assert avg["rank_fused"].tolist() == [2, 1, 3, 4]
    mn = fuse(["a", "b", "c", "d"], [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4, method="min")
    assert mn["rank_fused"].tolist() == [3, 1, 2, 3]  # a and d tie at 0.1875 -> one shared rank, not object order


def test_percentile_definition():
    np.testing.assert_allclose(percentile(np.array([1, 5, 10]), 10), [1.0, 0.6, 0.1])


def test_join_smaller_than_tables_keeps_p_in_unit_interval():
    # ranks come from tables of 1000 objects; only 3 objects survived the join (reference bug L2 made p <= 0)
    kw = dict(rank_img=[10, 900, 500], rank_spec=[999, 2, 40], rank_mis=[3, 700, 1000], n_img=1000,
              n_spec=1000, n_mis=1000)
    df = fuse(["x", "y", "z"], **kw)
    for col in ("p_img", "p_spec", "p_mis"):
        assert (df[col] > 0).all() and (df[col] <= 1).all()
    assert df["rank_img"].tolist() == [1, 3, 2]  # re-ranked within the join
    np.testing.assert_allclose(df["p_img"], [1.0, 1 / 3, 2 / 3])
    raw = fuse(["x", "y", "z"], **kw, rerank=False)
    np.testing.assert_allclose(raw["p_img"], [0.991, 0.101, 0.501])
    assert raw["rank_img"].tolist() == [10, 900, 500]
    assert ((raw[["p_img", "p_spec", "p_mis"]] > 0) & (raw[["p_img", "p_spec", "p_mis"]] <= 1)).all().all()


def test_thresholds_filter():
    df = fuse(list("abcd"), [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4,
              thresholds={"img": 0.5, "spec": 0.5})
    assert df["passes_thresholds"].tolist() == [True, True, False, False]
    df = fuse(list("abcd"), [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4, thresholds={"mis": 0.75})
    assert df["passes_thresholds"].tolist() == [False, False, True, True]
    df = fuse(list("abcd"), [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4)
    assert df["passes_thresholds"].all()
    with pytest.raises(ValueError, match="unknown threshold"):
        fuse(list("ab"), [1, 2], [1, 2], [1, 2], 2, 2, 2, thresholds={"t_img": 0.9})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse(list("ab"), [1, 2], [1, 2], [1, 2], 2, 2, 2, thresholds={"img": 1.5})


def test_uplift_positive_when_joint_evidence_beats_every_single_system():
    n = 100
    rng = np.random.default_rng(0)
    ranks = {k: rng.permutation(np.arange(2, n + 1)) for k in ("img", "spec", "mis")}
    # object 0: 5th in every system (never first); others random -> fusion puts it on top
    r = {k: np.concatenate([[5], np.where(v == 5, 1, v)]) for k, v in ranks.items()}
    df = fuse(np.arange(n), r["img"], r["spec"], r["mis"], n, n, n)
    assert df["rank_fused"].iloc[0] == 1
    assert df["uplift_mm"].iloc[0] > 0
    q = lambda rank: (n - rank + 0.5) / n  # noqa: E731
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert df["uplift_mm"].iloc[0] == pytest.approx(logit(q(1)) - logit(q(5)))
    # uplift > 0 exactly when the fused rank beats the best single rank
    best = df[["rank_img", "rank_spec", "rank_mis"]].min(axis=1)
    assert ((df["uplift_mm"] > 0) == (df["rank_fused"] < best)).all()
    assert ((df["uplift_mm"] < 0) == (df["rank_fused"] > best)).all()


def test_rank_validation():
    tied = fuse(list("ab"), [1, 1], [1, 2], [1, 2], 2, 2, 2)  # tied scores, tied ranks: allowed
    assert tied["rank_img"].tolist() == [1, 1] and tied["p_img"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="lie in"):
        fuse(list("ab"), [1, 3], [1, 2], [1, 2], 2, 2, 2)
    with pytest.raises(ValueError, match="smaller than"):
        fuse(list("abc"), [1, 2, 3], [1, 2, 3], [1, 2, 3], 2, 3, 3)
    with pytest.raises(ValueError, match="method"):
        fuse(list("ab"), [1, 2], [1, 2], [1, 2], 2, 2, 2, method="max")
    with pytest.raises(ValueError, match="expected 2 ranks"):
        fuse(list("ab"), [1, 2, 3], [1, 2], [1, 2], 3, 2, 2)
    with pytest.raises(ValueError, match="duplicates"):
        fuse(["a", "a"], [1, 2], [1, 2], [1, 2], 2, 2, 2)


def test_align_ranks_joins_on_ids_and_counts_each_system():
    out = align_ranks(["a", "b", "c", "d"], [1, 2, 3, 4], ["d", "b", "a"], [1, 2, 3], [4, 1, "b", "a", "d"],
                      [1, 2, 3, 4, 5])
    assert out["object_ids"].tolist() == ["a", "b", "d"]
    assert out["rank_img"].tolist() == [1, 2, 4]
    assert out["rank_spec"].tolist() == [3, 2, 1]
    assert out["rank_mis"].tolist() == [4, 3, 5]
    assert (out["n_img"], out["n_spec"], out["n_mis"]) == (4, 3, 5)
    df = fuse(**out)
    assert len(df) == 3 and (df["p_img"] > 0).all()
    with pytest.raises(ValueError, match="duplicate object ids"):
        align_ranks(["a", "a"], [1, 2], ["a"], [1], ["a"], [1])
