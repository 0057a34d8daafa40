"""Cross-modal mismatch: cosine for aligned spaces, out-of-fold ridge residual otherwise."""

import numpy as np
import pytest

from fmb_engine.detect.mismatch import (
    LearnedMismatch,
    cosine_mismatch,
    cosine_similarity_rows,
    mismatch_scores,
    mismatch_table,
)


def _aligned(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    return (z + 0.1 * rng.standard_normal((n, d))).astype(np.float32), (z + 0.1 * rng.standard_normal((n, d))).astype(
        np.float32
    )


def _unaligned(n=600, seed=0):
    """Image (20-d) and spectrum (12-d) driven by one latent through different maps."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5))
    img = z @ rng.standard_normal((5, 20)) + 0.1 * rng.standard_normal((n, 20)) + 2.0
    spec = (z + 0.3 * np.tanh(z)) @ rng.standard_normal((5, 12)) + 0.1 * rng.standard_normal((n, 12)) - 1.0
    return img.astype(np.float32), spec.astype(np.float32)


def test_cosine_ranks_a_swapped_pair_first():
    img, spec = _aligned()
    spec[[3, 7]] = spec[[7, 3]]
    res = cosine_mismatch(img, spec)
    assert res.method == "cosine"
    assert sorted(np.flatnonzero(res.rank <= 2)) == [3, 7]
    np.testing.assert_allclose(res.score, 1.0 - res.native)


def test_cosine_values_and_zero_norm():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity_rows(a, b), [0.0, 1.0, 0.0, -1.0])
    assert cosine_mismatch(a, b).rank.tolist() == [2, 4, 2, 1]  # ties 0.0 -> one shared rank


def test_cosine_refuses_unaligned_widths():
    with pytest.raises(ValueError, match="learned mismatch"):
        cosine_mismatch(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="learned mismatch"):
        mismatch_scores(np.ones((3, 4)), np.ones((3, 5)), aligned=True)


def test_learned_mismatch_finds_rows_with_another_objects_spectrum():
    img, spec = _unaligned()
    clean = mismatch_scores(img, spec, aligned=False, alpha=0.1, n_folds=5, seed=1)
    assert np.median(clean.score) == pytest.approx(1.0, abs=0.2)  # typical object ~1 by construction
    swapped = np.arange(10)
    spec[swapped] = spec[swapped + 300]  # spectrum vector of another object
    res = mismatch_scores(img, spec, aligned=False, alpha=0.1, n_folds=5, seed=1)
    assert res.method == "ridge_residual"
    assert set(np.flatnonzero(res.rank <= 10)) == set(swapped)


def test_ridge_map_equals_closed_form_on_standardised_data():
    img, spec = _unaligned(n=300, seed=2)
    lm = LearnedMismatch(alpha=0.5).fit(img, spec)
    X, Y = img.astype(np.float64), spec.astype(np.float64)
    Xs = (X - X.mean(0)) / X.std(0, ddof=1)
    Ys = (Y - Y.mean(0)) / Y.std(0, ddof=1)
    n = X.shape[0]
    W = np.linalg.solve(Xs.T @ Xs / n + 0.5 * np.eye(X.shape[1]), Xs.T @ Ys / n)
    np.testing.assert_allclose(lm.params_["W"], W, rtol=1e-4, atol=1e-6)
    R = Ys - Xs @ W
    tau = np.sqrt((R**2).mean(0))
    expected = np.sqrt(((R / tau) ** 2).mean(1))
    np.testing.assert_allclose(lm.score(img, spec), expected, rtol=1e-4)


def test_out_of_fold_scores_differ_from_in_sample_and_are_deterministic():
    img, spec = _unaligned(n=200, seed=3)
    lm = LearnedMismatch(alpha=0.01, n_folds=4, seed=0)
    oof = lm.fit_score(img, spec)
    in_sample = lm.score(img, spec)
    assert np.mean(oof) > np.mean(in_sample)  # held-out residuals are larger
    np.testing.assert_array_equal(oof, LearnedMismatch(alpha=0.01, n_folds=4, seed=0).fit_score(img, spec))
    restored = LearnedMismatch.from_state_dict(lm.state_dict())
    np.testing.assert_array_equal(restored.score(img, spec), in_sample)


def test_learned_mismatch_validation():
    for kwargs in (dict(alpha=0), dict(alpha=float("nan")), dict(n_folds=1), dict(seed=-1)):
        with pytest.raises(ValueError):
            LearnedMismatch(**kwargs)
    img, spec = _unaligned(n=50)
    with pytest.raises(ValueError, match="same objects"):
        LearnedMismatch().fit(img, spec[:40])
    spec[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LearnedMismatch().fit(img, spec)
    with pytest.raises(ValueError, match="aligned must be"):
        mismatch_scores(img, img, aligned="yes")


def test_mismatch_table_columns_for_both_methods():
    cos = mismatch_table(["a", "b", "c"], np.array([0.9, -0.2, 0.5]), "cosine")
    assert list(cos.columns) == ["object_id", "cosine_similarity", "mismatch_score", "method", "rank"]
    assert cos["rank"].tolist() == [3, 1, 2]
    np.testing.assert_allclose(cos["mismatch_score"], [0.1, 1.2, 0.5])
    ridge = mismatch_table([1, 2, 3], np.array([0.8, 3.0, 1.1]), "ridge_residual")
    assert ridge["cosine_similarity"].isna().all()
    assert ridge["rank"].tolist() == [3, 1, 2] and set(ridge["method"]) == {"ridge_residual"}
    with pytest.raises(ValueError, match="method"):
        mismatch_table(["a"], np.array([1.0]), "l2")
    img, spec = _aligned(n=20)
    table = mismatch_scores(img, spec, aligned=True).table(np.arange(20))
    assert table["method"].iloc[0] == "cosine" and table["rank"].min() == 1
