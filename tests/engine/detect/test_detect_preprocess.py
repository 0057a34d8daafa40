"""Preprocessor: order PCA -> standardise -> clip, NaN/constant handling, small-n PCA, state round trip."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from fmb_engine.detect.preprocess import Preprocessor, finite_rows


def _low_rank(n=400, d=40, r=6, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, r)) * np.linspace(5, 1, r)
    X = z @ rng.standard_normal((r, d)) + 0.05 * rng.standard_normal((n, d)) + 3.0
    return X.astype(np.float32)


def test_finite_rows_flags_nan_and_inf_rows():
    X = np.ones((5, 3), dtype=np.float32)
    X[1, 2] = np.nan
    X[3, 0] = np.inf
    X[4, 1] = -np.inf
    assert finite_rows(X).tolist() == [True, False, True, False, False]
    assert finite_rows(np.ones((2, 2), dtype=np.int64)).all()
    with pytest.raises(ValueError, match="2-D"):
        finite_rows(np.ones(3))


def test_pipeline_matches_manual_pca_standardise_clip():
    X = _low_rank()
    X[7] += 400.0  # one extreme row so the clip is active
    pre = Preprocessor(pca_components=5, clip_sigma=3.0)
    Z = pre.fit_transform(X)
    assert Z.shape == (400, 5) and Z.dtype == np.float32

    # PCA subspace and explained variance agree with sklearn (exact solver)
    sk = PCA(n_components=5, svd_solver="full").fit(X.astype(np.float64))
    overlap = np.abs(np.sum(sk.components_ * pre.components_.astype(np.float64), axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
    np.testing.assert_allclose(pre.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-4)

    # manual order: project -> (z - mean) / unbiased std -> clip at +-k
    P = (X.astype(np.float64) - X.astype(np.float64).mean(0)) @ pre.components_.T.astype(np.float64)
    S = (P - P.mean(0)) / P.std(0, ddof=1)
    expected = np.clip(S, -3.0, 3.0)
    np.testing.assert_allclose(Z, expected, atol=2e-4)
    assert np.isclose(np.abs(Z).max(), 3.0)
    # the clip happens after standardising: the outlier row is exactly at +-3 on some column
    assert np.any(np.isclose(np.abs(Z[7]), 3.0))


def test_no_pca_when_dim_not_above_components_and_no_standardise_clip_bounds():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((200, 6)) * [1, 2, 3, 4, 5, 6] + 10).astype(np.float32)
    X[0, 5] = 1000.0
    pre = Preprocessor(pca_components=6, clip_sigma=2.0, standardize=False).fit(X)
    assert pre.n_components_ == 0 and pre.n_features_out_ == 6
    Z = pre.transform(X)
    lo, hi = pre.clip_bounds()
    mean, std = X.astype(np.float64).mean(0), X.astype(np.float64).std(0, ddof=1)
    np.testing.assert_allclose(hi, mean + 2.0 * std, rtol=1e-6)
    assert Z[0, 5] == pytest.approx(hi[5], rel=1e-6)
    inside = (X >= lo) & (X <= hi)
    np.testing.assert_array_equal(Z[inside], X[inside])


def test_constant_column_gets_unit_scale_not_nan():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 4)).astype(np.float32)
    X[:, 2] = 7.5
    pre = Preprocessor(pca_components=0, clip_sigma=8.0)
    Z = pre.fit_transform(X)
    assert np.isfinite(Z).all()
    assert pre.col_scale_[2] == 1.0 and pre.n_constant_columns_ == 1
    assert np.all(Z[:, 2] == 0.0)
    new = X[:3].copy()
    new[:, 2] = 9.0  # 1.5 above the constant: (x - mean) / 1
    np.testing.assert_allclose(pre.transform(new)[:, 2], 1.5)


def test_fewer_rows_than_components():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 300)).astype(np.float32)
    pre = Preprocessor(pca_components=100)
    Z = pre.fit_transform(X)
    assert pre.n_components_ == 19  # capped at n_rows - 1
    assert Z.shape == (20, 19) and np.isfinite(Z).all()
    np.testing.assert_allclose(Z.std(0, ddof=1), 1.0, rtol=1e-3)
    assert pre.transform(rng.standard_normal((5, 300)).astype(np.float32)).shape == (5, 19)


def test_duplicated_rows_drop_null_directions():
    base = np.random.default_rng(4).standard_normal((3, 50)).astype(np.float32)
    X = np.repeat(base, 10, axis=0)  # rank 2 after centring
    pre = Preprocessor(pca_components=10)
    Z = pre.fit_transform(X)
    assert pre.n_components_ == 2 and np.isfinite(Z).all()


def test_state_dict_round_trip_is_exact():
    X = _low_rank(seed=5)
    pre = Preprocessor(pca_components=4, clip_sigma=2.5).fit(X)
    state = pre.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    again = Preprocessor.from_state_dict(state)
    new = _low_rank(n=30, seed=6)
    np.testing.assert_array_equal(again.transform(new), pre.transform(new))
    assert again.clip_sigma == 2.5 and again.n_components_ == 4
    with pytest.raises(ValueError, match="missing"):
        Preprocessor.from_state_dict({"seed": np.asarray(1)})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(pca_components=-1),
        dict(pca_components=2.5),
        dict(pca_components=True),
        dict(clip_sigma=-1.0),
        dict(clip_sigma=float("nan")),
        dict(standardize="yes"),
        dict(seed=-3),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        Preprocessor(**kwargs)


def test_bad_inputs_raise_clear_errors():
    pre = Preprocessor(pca_components=2)
    X = np.ones((4, 3), dtype=np.float32)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite_rows"):
        pre.fit(X)
    with pytest.raises(ValueError, match="at least 2 rows"):
        pre.fit(np.ones((1, 3)))
    with pytest.raises(RuntimeError, match="not fitted"):
        pre.transform(np.ones((2, 3)))
    pre.fit(np.random.default_rng(0).standard_normal((10, 3)))
    with pytest.raises(ValueError, match="expected 3 features"):
        pre.transform(np.ones((2, 4)))


@pytest.mark.parametrize("offset", [0.0, 1000.0])  # mean folded into the bias / chunks centred first
@pytest.mark.parametrize("standardize", [True, False])
def test_affine_apply_equals_the_three_steps_to_float32_rounding(offset, standardize):
    """apply() is one matrix product + bias + clip; against centre -> project -> standardise ->
    clip in float64 its error must stay within the forward-error bound of float32 dot products,
    |fl(x.a) - x.a| <= gamma_d |x|.|a| (+ the rounding of A and b), whichever way the mean is
    handled. The bound, not a comparison with transform()'s own float32 error: BLAS kernels sum
    in different orders on different CPUs (the AVX-512 kernel was 10x transform()'s error here)."""
    X = _low_rank(n=3000, d=40) + np.float32(offset)
    X[11] -= 300.0  # an outlier, so the clip is active
    pre = Preprocessor(pca_components=8, clip_sigma=4.0, standardize=standardize).fit(X)
    A, b, centre = pre._affine()
    assert (centre is None) == (offset == 0.0)  # |mu| far beyond the spread: centre, do not fold
    Z = pre.apply(X)
    P = (X.astype(np.float64) - pre.pca_mean_) @ pre.components_.T.astype(np.float64)
    if standardize:
        P = (P - pre.col_mean_) / pre.col_scale_
    expected = np.clip(P, *pre.clip_bounds())  # the clip is 1-Lipschitz: it never adds error
    Xc = X.astype(np.float64) - (0.0 if centre is None else centre)  # centred in float32 (|X| eps each) or not
    eps = float(np.finfo(np.float32).eps)
    bound = (X.shape[1] + 3) * eps * ((np.abs(Xc) + np.abs(X)) @ np.abs(A.astype(np.float64)) + np.abs(b))
    assert np.all(np.abs(Z - expected) <= bound + 1e-12)
    stepwise = pre.transform(X)
    unit = 1.0 if standardize else pre.col_scale_  # errors in standard deviations of each column
    assert np.abs((Z - stepwise) / unit).max() < 2e-3  # far below any difference a ranking can see
    assert np.array_equal(pre.fit_transform(X), stepwise)  # fit_transform: the step-by-step arithmetic


def test_apply_refuses_rows_whose_map_is_not_finite():
    """apply() checks the k mapped columns instead of the D input ones: every NaN/Inf input row is
    still refused (with the count), and so is a finite row so large that the float32 map overflows."""
    X = _low_rank(n=300, d=40)
    pre = Preprocessor(pca_components=8).fit(X)
    assert np.array_equal(pre.apply(X), pre.apply(X.copy()))
    bad = X.copy()
    bad[3, 0], bad[7, 39], bad[8, 5], bad[9, 2] = np.nan, np.inf, -np.inf, 3e38
    with pytest.raises(ValueError, match=r"Preprocessor.apply: 4 row\(s\) contain NaN/Inf \(or overflow float32"):
        pre.apply(bad)
    no_pca = Preprocessor(pca_components=0).fit(X)
    with pytest.raises(ValueError, match=r"Preprocessor.apply: 3 row\(s\) contain NaN/Inf; drop them"):
        no_pca.apply(bad)
