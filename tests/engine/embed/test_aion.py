"""AION embedder: real upstream AION + codecs at tiny size, a local snapshot and a local HF cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

aion = pytest.importorskip("aion")
pytest.importorskip("safetensors")

from aion.modalities import DESISpectrum, HSCImage  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from fmb_engine.embed.aion import EUCLID_ZP_NU, HSC_BANDS, AIONEmbedder, euclid_preprocess, euclid_to_hsc  # noqa: E402
from fmb_engine.errors import ConfigError  # noqa: E402
from fmb_engine.survey import bands  # noqa: E402
from ..aion_tiny import DIM, KEYS, build_tiny_aion  # noqa: E402
from .fake import make_batch  # noqa: E402

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny real AION + codecs saved with save_pretrained, and an adapters_final.pt."""
    return build_tiny_aion(tmp_path_factory.mktemp("aion"))


def _cfg(tiny, **kw):
    base = dict(weights=str(tiny["snap"]), adapter=str(tiny["adapters"]), device="cpu", batch_size=2)
    base.update(kw)
    return base


def _reference(tiny, batch):
    """The pipeline spelled out with the in-memory modules (what the embedder must reproduce)."""
    euclid = euclid_preprocess(torch.as_tensor(batch.images), 96, 100.0)
    with torch.no_grad():
        hsc = tiny["adapter"](euclid)
        ti = tiny["img_codec"].encode(HSCImage(flux=hsc.clone(), bands=HSC_BANDS))
        n = batch.flux.shape[1]
        ts = tiny["spec_codec"].encode(
            DESISpectrum(
                flux=torch.as_tensor(batch.flux),
                ivar=torch.as_tensor(batch.ivar),
                mask=torch.as_tensor(batch.mask),
                wavelength=torch.as_tensor(batch.wavelength, dtype=torch.float32)[None]
                .expand(len(batch), n)
                .contiguous(),
            )
        )
        m = tiny["model"]
        joint = m.encode({KEYS[0]: ti, KEYS[1]: ts}, num_encoder_tokens=ti.shape[1] + ts.shape[1]).mean(1)
        image = m.encode({KEYS[0]: ti}, num_encoder_tokens=ti.shape[1]).mean(1)
        spectrum = m.encode({KEYS[1]: ts}, num_encoder_tokens=ts.shape[1]).mean(1)
        default_joint = m.encode({KEYS[0]: ti, KEYS[1]: ts}).mean(1)  # upstream default: 256 tokens
    return {
        "joint": joint.numpy(),
        "image": image.numpy(),
        "spectrum": spectrum.numpy(),
        "default_joint": default_joint.numpy(),
    }


@pytest.fixture(scope="module")
def embedded(tiny):
    batch = make_batch(3)
    emb = AIONEmbedder(_cfg(tiny))
    return batch, emb, emb.embed(batch)


def test_shapes_finite_deterministic(embedded):
    batch, emb, out = embedded
    assert set(out) == {"image", "spectrum", "joint"}
    for v in out.values():
        assert v.shape == (3, DIM) and v.dtype == np.float32 and np.isfinite(v).all()
    again = emb.embed(batch)
    assert all(np.array_equal(out[k], again[k]) for k in out)


def test_matches_reference_pipeline_and_uses_all_tokens(tiny, embedded):
    batch, _, out = embedded
    ref = _reference(tiny, batch)
    for key in ("joint", "image", "spectrum"):
        assert np.allclose(out[key], ref[key], atol=1e-5), key
    assert not np.allclose(out["joint"], out["image"], atol=1e-4)  # the spectrum counts in the joint pass
    assert not np.allclose(out["joint"], ref["default_joint"], atol=1e-4)  # not upstream's 256-token default


def test_codec_input_not_modified(tiny):
    batch = make_batch(2)
    before = batch.images.copy(), batch.flux.copy()
    emb = AIONEmbedder(_cfg(tiny))
    t1 = emb.tokens(batch)
    t2 = emb.tokens(batch)
    assert all(torch.equal(t1[k], t2[k]) for k in t1)
    assert np.array_equal(before[0], batch.images) and np.array_equal(before[1], batch.flux)


def test_reload_from_hand_built_hf_cache(tiny, embedded, tmp_path, monkeypatch):
    batch, _, out = embedded
    one = make_batch(1)
    first = {k: v[:1] for k, v in AIONEmbedder(_cfg(tiny)).embed(one).items()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--polymathic-ai--aion-base"
    shutil.copytree(tiny["snap"], repo / "snapshots" / REV)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    # a cache root, then an HF_HOME; the first one embeds the full batch (reload == saved model)
    again = AIONEmbedder(_cfg(tiny, weights=str(tmp_path / "hub"))).embed(batch)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    again = AIONEmbedder(_cfg(tiny, weights=str(tmp_path))).embed(one)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # weights unset: the default cache
    emb = AIONEmbedder(_cfg(tiny, weights=None))
    assert emb.config.snapshot_dir() == repo / "snapshots" / REV
    again = emb.embed(one)
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_euclid_preprocessing():
    images = np.ones((1, 4, 32, 32), np.float32)
    images[0, 0, 0, 0] = np.nan
    x = euclid_preprocess(torch.as_tensor(images), 96, 100.0)
    assert x.shape == (1, 4, 96, 96) and torch.isfinite(x).all()
    expected = torch.tensor([EUCLID_ZP_NU[b] / 3631 for b in bands.BANDS])
    assert torch.allclose(x[0, :, 50, 50], expected)
    assert euclid_preprocess(torch.full((1, 4, 8, 8), 1e6), 96, 100.0).max() == 100.0


def test_adapter_state_dict_names():
    keys = set(euclid_to_hsc(16).state_dict())
    for k in (
        "inc.net.0.weight",
        "inc.net.1.running_var",
        "inc.net.4.num_batches_tracked",
        "down1.net.1.net.0.weight",
        "down2.net.1.net.3.bias",
        "up1.up.1.weight",
        "up1.conv.net.0.weight",
        "up2.conv.net.4.running_mean",
        "outc.conv.weight",
    ):
        assert k in keys
    assert euclid_to_hsc(16).state_dict()["up1.conv.net.0.weight"].shape == (32, 64, 3, 3)
    assert euclid_to_hsc(16)(torch.zeros(1, 4, 96, 96)).shape == (1, 5, 96, 96)


def test_adapter_strict_and_missing(tiny, tmp_path):
    state = dict(tiny["adapter"].state_dict())
    state["inc.net.9.weight"] = torch.zeros(1)
    torch.save({"euclid_to_hsc": state, "hsc_to_euclid": {}, "args": {"hidden": 4}}, tmp_path / "adapters_final.pt")
    with pytest.raises(ConfigError, match="inc.net.9.weight"):
        AIONEmbedder(_cfg(tiny, adapter=str(tmp_path))).load()
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(ConfigError) as err:
        AIONEmbedder(_cfg(tiny, adapter=str(empty))).load()
    assert "adapters_final.pt" in str(err.value) and str(empty) in str(err.value)
    with pytest.raises(ConfigError) as err:  # adapter unset: looked for next to the AION weights
        AIONEmbedder(_cfg(tiny, adapter=None)).load()
    assert "adapters_final.pt" in str(err.value) and str(tiny["snap"]) in str(err.value)


def test_strict_model_loading_catches_wrong_key(tiny, tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(tiny["snap"], snap)
    state = load_file(snap / "model.safetensors")
    state["encoder.0.not_a_weight"] = torch.zeros(2)
    save_file(state, snap / "model.safetensors")
    with pytest.raises(ConfigError, match="not_a_weight"):
        AIONEmbedder(_cfg(tiny, weights=str(snap))).load()


def test_strict_codec_loading_catches_missing_key(tiny, tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(tiny["snap"], snap)
    path = snap / "codecs" / "spectrum" / "model.safetensors"
    state = load_file(path)
    state.pop(sorted(state)[0])
    save_file(state, path)
    with pytest.raises(ConfigError, match="codec"):
        AIONEmbedder(_cfg(tiny, weights=str(snap))).load()


def test_missing_snapshot_file(tiny, tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(tiny["snap"], snap)
    (snap / "codecs" / "spectrum" / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        AIONEmbedder(_cfg(tiny, weights=str(snap))).load()
    msg = str(err.value)
    assert "codecs/spectrum/model.safetensors" in msg and str(snap) in msg
    assert "models--polymathic-ai--aion-base" in msg
    assert json.loads((snap / "codecs" / "image" / "config.json").read_text())  # untouched
