"""FlowDensity: outliers get high -log p, determinism, state round trip, optimiser and coupling equivalence."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from nflows.transforms import AffineCouplingTransform

import fmb_engine.detect.flows as flows
from fmb_engine.detect.params import PRESETS
from fmb_engine.detect.flows import FlowDensity, anomaly_table, build_flow, score_out_of_fold, split_preset

FAST = dict(num_transforms=2, hidden_features=16, epochs=3, batch_size=64, lr=3e-3, threads=1, device="cpu")


def _gaussian(n=1500, d=6, seed=0):
    rng = np.random.default_rng(seed)
    A = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    return (rng.standard_normal((n, d)) @ A).astype(np.float32)


@pytest.mark.parametrize("flow_type", ["coupling", "autoregressive"])
def test_far_points_get_higher_negative_log_prob(flow_type):
    X = _gaussian()
    model = FlowDensity(flow_type=flow_type, **FAST).fit(X)
    rng = np.random.default_rng(1)
    inliers = _gaussian(n=200, seed=2)
    directions = rng.standard_normal((20, 6))
    far = (12.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)).astype(np.float32)
    nlp_in = -model.score_samples(inliers)
    nlp_far = -model.score_samples(far)
    assert nlp_far.min() > np.percentile(nlp_in, 99)
    assert model.history_[-1] < model.history_[0]  # training lowered the loss
    assert model.score_samples(X).dtype == np.float64


def test_same_seed_is_bit_identical_and_other_seed_differs():
    X = _gaussian(n=600)
    a = FlowDensity(seed=7, **FAST).fit(X).score_samples(X)
    b = FlowDensity(seed=7, **FAST).fit(X).score_samples(X)
    c = FlowDensity(seed=8, **FAST).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_leaves_global_rng_state_and_threads_alone():
    X = _gaussian(n=200)
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    threads = torch.get_num_threads()
    FlowDensity(**{**FAST, "threads": 1}).fit(X)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("flow_type", ["coupling", "autoregressive"])
def test_state_dict_round_trip_gives_identical_scores(flow_type):
    X = _gaussian(n=500)
    model = FlowDensity(flow_type=flow_type, **FAST).fit(X)
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = FlowDensity.from_state_dict(state, device="cpu")
    np.testing.assert_array_equal(restored.score_samples(X), model.score_samples(X))
    assert restored.flow_type == flow_type and restored.history_ == model.history_
    other = FlowDensity(flow_type="coupling", num_transforms=7, device="cpu").load_state_dict(state)
    np.testing.assert_array_equal(other.score_samples(X[:10]), model.score_samples(X[:10]))


def test_half_coupling_equals_generic_nflows_coupling_and_inverts():
    torch.manual_seed(0)
    half = flows._HalfAffineCoupling(7, transform_first=False, hidden_features=8)
    for p in half.transform_net.parameters():  # non-zero output layer so the test is not trivial
        torch.nn.init.normal_(p, std=0.3)
    generic = AffineCouplingTransform(half.transform_features.new_zeros(7).index_fill(0, half.transform_features, 1),
                                      lambda i, o: flows._ConditionerMLP(i, o, 8))
    generic.transform_net.load_state_dict(half.transform_net.state_dict())
    x = torch.randn(32, 7)
    y1, l1 = half(x)
    y2, l2 = generic(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    back, _ = half.inverse(y1)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)


def test_lean_actnorm_equals_nflows_actnorm():
    from nflows.transforms import ActNorm

    ours, ref = flows._ActNorm(5), ActNorm(5)
    with torch.no_grad():
        for m in (ours, ref):
            m.log_scale.copy_(torch.linspace(-1, 1, 5))
            m.shift.copy_(torch.linspace(2, -2, 5))
            m.initialized.fill_(True)
    x = torch.randn(9, 5)
    (y1, l1), (y2, l2) = ours(x), ref(x)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(ours.inverse(y1)[0], x)


def test_flat_adamw_matches_torch_adamw_with_clipping():
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net_b = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net_b.load_state_dict(net_a.state_dict())
    flat = flows._FlatAdamW(net_a.parameters(), lr=1e-2, weight_decay=0.1, grad_clip=0.5)
    ref = torch.optim.AdamW(net_b.parameters(), lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    for _ in range(6):
        flat.zero_grad()
        ((net_a(x) - y) ** 2).mean().mul(50).backward()
        assert flat.step()
        ref.zero_grad()
        ((net_b(x) - y) ** 2).mean().mul(50).backward()
        torch.nn.utils.clip_grad_norm_(net_b.parameters(), 0.5)
        ref.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_non_finite_gradient_skips_the_update():
    net = torch.nn.Linear(3, 1)
    opt = flows._FlatAdamW(net.parameters(), lr=0.1, weight_decay=0.0, grad_clip=1.0)
    before = opt.flat.clone()
    opt.zero_grad()
    (net(torch.tensor([[float("inf"), 1.0, 1.0]])).sum()).backward()
    assert not opt.step()
    assert torch.equal(opt.flat, before)


def test_build_flow_structure_and_never_naive_linear():
    flow = build_flow(10, "coupling", 4, 8, seed=0)
    names = [type(t).__name__ for t in flow._transform._transforms]
    assert names == ["RandomPermutation", "_HalfAffineCoupling", "_HalfAffineCoupling", "RandomPermutation",
                     "_HalfAffineCoupling", "_HalfAffineCoupling", "_ActNorm"]
    maf = build_flow(10, "autoregressive", 3, 8, seed=0)
    names = [type(t).__name__ for t in maf._transform._transforms]
    assert names == ["MaskedAffineAutoregressiveTransform", "ReversePermutation",
                     "MaskedAffineAutoregressiveTransform", "ReversePermutation",
                     "MaskedAffineAutoregressiveTransform", "_ActNorm"]
    assert not any("NaiveLinear" in type(m).__name__ for m in list(flow.modules()) + list(maf.modules()))
    with pytest.raises(ValueError, match="at least 2 features"):
        build_flow(1, "coupling", 2, 8, seed=0)


def test_presets_and_split():
    assert PRESETS["paper"] == dict(flow_type="coupling", num_transforms=4, hidden_features=16,
                                    pca_components=100, epochs=5, batch_size=24, lr=1e-4,
                                    weight_decay=1e-5, clip_sigma=8.0, grad_clip=5.0, seed=42)
    pre, flow = split_preset("paper", epochs=2)
    assert pre == dict(pca_components=100, clip_sigma=8.0, seed=42)
    assert flow["epochs"] == 2 and "pca_components" not in flow
    FlowDensity(**flow)  # every flow key is accepted
    FlowDensity(**split_preset("default")[1])
    with pytest.raises(ValueError, match="unknown flow preset"):
        split_preset("nope")
    with pytest.raises(ValueError, match="unknown preset override"):
        split_preset("paper", hidden=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(flow_type="realnvp"),
        dict(num_transforms=0),
        dict(hidden_features=2.0),
        dict(epochs=-1),
        dict(batch_size=0),
        dict(lr=0.0),
        dict(lr=float("inf")),
        dict(weight_decay=-1e-5),
        dict(grad_clip=-1.0),
        dict(seed=-1),
        dict(threads=0),
        dict(device="tpu"),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        FlowDensity(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_request_without_gpu_is_a_clear_error_and_auto_means_cpu():
    with pytest.raises(ValueError, match="no CUDA"):
        FlowDensity(device="cuda")
    assert flows._device("auto").type == "cpu"


def test_input_checks():
    model = FlowDensity(**FAST)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.score_samples(np.zeros((2, 3)))
    bad = _gaussian(n=50, d=3)
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="finite_rows"):
        model.fit(bad)
    model.fit(_gaussian(n=10, d=3))  # fewer rows than the batch size
    with pytest.raises(ValueError, match="expected 3 features"):
        model.score_samples(np.zeros((2, 4), dtype=np.float32))


def test_out_of_fold_never_scores_a_row_with_a_model_that_saw_it(monkeypatch):
    X = _gaussian(n=120, d=4)
    X[:, 0] = np.arange(120)  # row id recoverable from the data
    seen = []

    class Spy(FlowDensity):
        def fit(self, data):
            self._train_ids = set(np.rint(data[:, 0]).astype(int))
            return super().fit(data)

        def score_samples(self, data):
            seen.append((self._train_ids, set(np.rint(data[:, 0]).astype(int))))
            return super().score_samples(data)

    monkeypatch.setattr(flows, "FlowDensity", Spy)
    lp = score_out_of_fold(X, k_folds=4, seed=3, **FAST)
    assert lp.shape == (120,) and np.isfinite(lp).all()
    assert len(seen) == 4
    scored = set()
    for train_ids, test_ids in seen:
        assert not train_ids & test_ids
        scored |= test_ids
    assert scored == set(range(120))


def test_out_of_fold_with_preprocessing_flags_outliers():
    X = _gaussian(n=400, d=12, seed=4)
    X[:5] += 15.0
    lp = score_out_of_fold(X, k_folds=3, seed=0, preprocess=dict(pca_components=6, clip_sigma=8.0), **FAST)
    assert set(np.argsort(lp)[:5]) == set(range(5))
    with pytest.raises(ValueError, match="k_folds"):
        score_out_of_fold(X, k_folds=1)
    with pytest.raises(ValueError):
        score_out_of_fold(X, k_folds=2, num_transforms=0)


def test_anomaly_table_columns_sigma_and_tied_ranks():
    df = anomaly_table([10, 11, 12, 13], np.array([-1.0, -5.0, -1.0, -3.0]), "embedding_images")
    assert list(df.columns) == ["object_id", "embedding_key", "log_prob", "neg_log_prob", "anomaly_sigma", "rank"]
    assert df["object_id"].tolist() == ["10", "11", "12", "13"]
    assert df["rank"].tolist() == [3, 1, 3, 2]  # tie between rows 0 and 2 -> one shared rank
    nlp = np.array([1.0, 5.0, 1.0, 3.0])
    np.testing.assert_allclose(df["anomaly_sigma"], (nlp - nlp.mean()) / nlp.std())
    flat = anomaly_table(["a", "b"], np.array([2.0, 2.0]), "k")
    assert flat["anomaly_sigma"].tolist() == [0.0, 0.0] and flat["rank"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="NaN"):
        anomaly_table(["a"], np.array([np.nan]), "k")
    with pytest.raises(ValueError, match="object ids"):
        anomaly_table(["a"], np.array([1.0, 2.0]), "k")
    assert isinstance(df, pd.DataFrame) and math.isclose(df["neg_log_prob"].sum(), 10.0)


def test_fit_flows_parallel_matches_sequential():
    data = {"image": _gaussian(n=300, d=4, seed=1), "spectrum": _gaussian(n=250, d=5, seed=2)}
    seq = flows.fit_flows(data, n_jobs=1, **FAST)
    par = flows.fit_flows(data, n_jobs=2, **FAST)
    assert list(par) == ["image", "spectrum"]
    for key, X in data.items():
        np.testing.assert_array_equal(par[key].score_samples(X), seq[key].score_samples(X))
        np.testing.assert_array_equal(seq[key].score_samples(X), FlowDensity(**FAST).fit(X).score_samples(X))
    with pytest.raises(ValueError, match="n_jobs"):
        flows.fit_flows(data, n_jobs=0)


def test_final_actnorm_starts_standardised_and_survives_degenerate_inputs():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((400, 4)) * [0.1, 1.0, 5.0, 2.0] + [3.0, 0.0, -2.0, 1.0]).astype(np.float32)
    flow = build_flow(4, "coupling", 2, 8, seed=0)
    data = torch.from_numpy(X)
    flows._init_actnorm(flow, data)
    with torch.no_grad():
        z, _ = flow._transform(data)
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0).numpy(), 1.0, atol=1e-3)
    # a constant column and batches of one: nflows' own first-batch init would give inf/NaN
    X[:, 1] = 0.0
    model = FlowDensity(num_transforms=2, hidden_features=8, epochs=1, batch_size=1, lr=1e-3, device="cpu").fit(X[:50])
    assert np.isfinite(model.score_samples(X[:50])).all() and np.isfinite(model.history_).all()
