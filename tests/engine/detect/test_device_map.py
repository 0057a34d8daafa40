"""The preprocessing's affine map on the flow's device (a GPU in production; the CPU device here):
same map as Preprocessor.apply to float32 rounding, same refusals, and detect's scorer uses it
whenever the flow is not on the CPU."""

import numpy as np
import pytest
import torch

from fmb_engine.detect import run as detect_run
from fmb_engine.detect.flows import FlowDensity
from fmb_engine.detect.preprocess import Preprocessor

FAST = dict(num_transforms=2, hidden_features=16, epochs=2, batch_size=128, seed=3, device="cpu")


def _data(n=2000, d=24, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)) @ rng.standard_normal((4, d)) + 0.1 * rng.standard_normal((n, d)) + offset
    X[7] -= 60.0  # an outlier: the clip is active
    return X.astype(np.float32)


@pytest.mark.parametrize("offset", [0.0, 500.0])  # the mean folded into the bias / rows centred first
@pytest.mark.parametrize("standardize", [True, False])
def test_device_map_is_apply_to_float32_rounding(offset, standardize):
    X = _data(offset=offset)
    pre = Preprocessor(pca_components=6, clip_sigma=3.0, standardize=standardize).fit(X)
    on_device = pre.device_map(torch.device("cpu"))(torch.from_numpy(X)).numpy()
    unit = 1.0 if standardize else pre.col_scale_
    assert on_device.dtype == np.float32 and on_device.shape == (X.shape[0], 6)
    assert np.abs((on_device - pre.apply(X)) / unit).max() < 1e-4
    lo, hi = pre.clip_bounds()
    assert (on_device >= lo.astype(np.float32) - 1e-6).all() and (on_device <= hi.astype(np.float32) + 1e-6).all()


def test_device_map_refuses_bad_rows_and_widths():
    X = _data()
    pre = Preprocessor(pca_components=6).fit(X)
    mapped = pre.device_map(torch.device("cpu"))
    bad = X.copy()
    bad[[3, 9], 5] = np.nan
    with pytest.raises(ValueError, match=r"device_map: 2 row\(s\) contain NaN/Inf"):
        mapped(torch.from_numpy(bad))
    with pytest.raises(ValueError, match="expected 24 features"):
        mapped(torch.from_numpy(X[:, :20]))
    with pytest.raises(ValueError, match="fitted PCA"):
        Preprocessor(pca_components=0).fit(X).device_map(torch.device("cpu"))


def test_flow_scores_raw_rows_through_the_device_map():
    X = _data()
    pre = Preprocessor(pca_components=6).fit(X)
    flow = FlowDensity(**FAST).fit(pre.transform(X))
    flow.score_batch_size = 300  # several batches
    direct = flow.score_samples(pre.apply(X))
    through = flow.score_samples(X, before=pre.device_map(flow.device_))
    np.testing.assert_allclose(through, direct, rtol=1e-4, atol=1e-4)


def test_detect_scorer_maps_on_the_flows_device_when_it_is_not_the_cpu(monkeypatch):
    X = _data()
    pre = Preprocessor(pca_components=6).fit(X)
    flow = FlowDensity(**FAST).fit(pre.transform(X))
    cpu_scorer = detect_run._scorers(pre, flow, {})
    asked = []
    real_map = Preprocessor.device_map

    def spy(self, device):
        asked.append(device)
        return real_map(self, torch.device("cpu"))

    class Gpu:  # what a CUDA flow reports; its tensors stay on the CPU here
        type = "cuda"

    monkeypatch.setattr(Preprocessor, "device_map", spy)
    monkeypatch.setattr(FlowDensity, "device_", property(lambda self: Gpu()))
    gpu_scorer = detect_run._scorers(pre, flow, {})
    monkeypatch.setattr(FlowDensity, "device_", property(lambda self: torch.device("cpu")))
    np.testing.assert_allclose(gpu_scorer(X)["flow"], cpu_scorer(X)["flow"], rtol=1e-4, atol=1e-4)
    assert len(asked) == 1 and asked[0].type == "cuda"
