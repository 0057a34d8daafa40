"""AstroCLIP embedder: FMB's pure-torch re-implementation, upstream key layout, safe checkpoints."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from fmb_engine.embed.astroclip import (
    AstroCLIP,
    AstroCLIPEmbedder,
    convert_lightning_checkpoint,
    load_state_strict,
    read_checkpoint,
    save_checkpoint,
)
from fmb_engine.embed.astroclip.checkpoint import main as convert_main
from fmb_engine.embed.astroclip.specformer import SpecFormer
from fmb_engine.errors import ConfigError
from ..astroclip_tiny import TINY
from ..astroclip_tiny import published_keys as _published_keys
from ..astroclip_tiny import tiny_model as _model
from .fake import make_batch


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("astroclip")
    model = _model()
    save_checkpoint(d / "astroclip_fmb.pt", _published_keys(model), architecture=TINY.to_dict())
    return d, model


def _cfg(d, **kw):
    base = dict(weights=str(d), checkpoint="astroclip_fmb.pt", image_size=24, device="cpu", batch_size=3)
    base.update(kw)
    return base


def test_shapes_finite_normalised_deterministic(ckpt):
    d, _ = ckpt
    emb = AstroCLIPEmbedder(_cfg(d))
    batch = make_batch()
    out = emb.embed(batch)
    assert set(out) == {"image", "spectrum", "joint"}
    for v in out.values():
        assert v.shape == (4, 16) and v.dtype == np.float32 and np.isfinite(v).all()
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    again = emb.embed(batch)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    joint = out["image"] + out["spectrum"]
    assert np.allclose(out["joint"], joint / np.linalg.norm(joint, axis=1, keepdims=True), atol=1e-6)


def test_reload_matches_saved_model(ckpt):
    d, model = ckpt
    batch = make_batch()
    emb = AstroCLIPEmbedder(_cfg(d))
    out = emb.embed(batch)
    emb.load()
    with torch.no_grad():
        img = model(emb.images(batch), "image")
        spec = model(emb.spectra(batch), "spectrum")
    assert np.allclose(out["image"], torch.nn.functional.normalize(img, dim=1).numpy(), atol=1e-6)
    assert np.allclose(out["spectrum"], torch.nn.functional.normalize(spec, dim=1).numpy(), atol=1e-6)
    again = AstroCLIPEmbedder(_cfg(d)).embed(batch)
    assert all(np.array_equal(out[k], again[k]) for k in out)


def test_inputs_layout(ckpt):
    d, _ = ckpt
    emb = AstroCLIPEmbedder(_cfg(d))
    emb.load()
    batch = make_batch(2)
    img = emb.images(batch)
    assert img.shape == (2, 3, 24, 24) and 0 <= img.min() and img.max() <= 1
    spec = emb.spectra(batch)
    assert spec.shape == (2, 7781, 1) and torch.allclose(spec[..., 0], torch.as_tensor(batch.flux))  # raw flux
    swapped = AstroCLIPEmbedder(_cfg(d, swap_hw=True))
    swapped.load()
    assert torch.equal(swapped.images(batch), img.transpose(-1, -2))


def test_specformer_tokens():
    sf = SpecFormer(embed_dim=8, num_layers=1, num_heads=2)
    x = torch.randn(2, 7781, 1) * 2 + 5
    tok = sf.preprocess(x)
    assert tok.shape == (2, 778, 22) and sf.n_tokens(7781) == 778 and sf.n_tokens(7700) == 769
    mean, std = x.mean(1)[:, 0], x.std(1)[:, 0].clamp(min=0.2)
    assert torch.allclose(tok[:, 0, 0], (mean - 2) / 2) and torch.allclose(tok[:, 0, 1], (std - 2) / 8)
    z = (x[..., 0] - mean[:, None]) / std[:, None]
    assert torch.allclose(tok[:, 1, 2:], z[:, :20]) and torch.allclose(tok[:, 2, 2:], z[:, 10:30])
    assert torch.all(tok[:, 1:, :2] == 0)


def test_full_size_layout_on_meta_device():
    with torch.device("meta"):
        model = AstroCLIP()
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(370.8e6, rel=1e-3)
    expect = {
        "image_encoder.backbone.patch_embed.proj.weight": (1024, 3, 12, 12),
        "image_encoder.backbone.pos_embed": (1, 145, 1024),
        "image_encoder.backbone.blocks.23.ls2.gamma": (1024,),
        "image_encoder.cross_attention.multihead_attn.in_proj_weight": (3072, 1024),
        "image_encoder.mlp.encoder.weight": (4096, 1024),
        "spectrum_encoder.backbone.data_embed.weight": (768, 22),
        "spectrum_encoder.backbone.position_embed.weight": (800, 768),
        "spectrum_encoder.backbone.blocks.5.attention.attention.weight": (2304, 768),
        "spectrum_encoder.backbone.head.weight": (22, 768),
        "spectrum_encoder.cross_attention.multihead_attn.q_proj_weight": (1024, 1024),
        "spectrum_encoder.cross_attention.multihead_attn.k_proj_weight": (1024, 768),
        "spectrum_encoder.cross_attention.multihead_attn.v_proj_weight": (1024, 768),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k


def test_strict_loading_reports_mismatches(ckpt):
    _, model = ckpt
    good = _published_keys(model)
    bad = dict(good)
    bad["image_encoder.backbone.blocks.0.0.attn.not_a_weight"] = torch.zeros(1)
    del bad["spectrum_encoder.mlp.decoder.bias"]
    with pytest.raises(ConfigError) as err:
        load_state_strict(AstroCLIP(TINY), bad)
    msg = str(err.value)
    assert "image_encoder.backbone.blocks.0.attn.not_a_weight" in msg
    assert "spectrum_encoder.mlp.decoder.bias" in msg
    shape = dict(good)
    shape["spectrum_encoder.cross_attention.query"] = torch.zeros(1, 1, 8)
    with pytest.raises(ConfigError, match="shape"):
        load_state_strict(AstroCLIP(TINY), shape)
    stray = dict(good)
    stray["temperature_thing"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="temperature_thing"):
        load_state_strict(AstroCLIP(TINY), stray)
    ok = dict(good)
    ok["logit_scale"] = torch.tensor(2.7)  # known non-weight entry, ignored
    load_state_strict(AstroCLIP(TINY), ok)


def test_wrong_key_in_checkpoint_file(tmp_path, ckpt):
    _, model = ckpt
    state = _published_keys(model)
    state["spectrum_encoder.backbone.blocks.0.attention.extra"] = torch.zeros(1)
    save_checkpoint(tmp_path / "astroclip_fmb.pt", state, architecture=TINY.to_dict())
    with pytest.raises(ConfigError, match="attention.extra"):
        AstroCLIPEmbedder(_cfg(tmp_path)).load()


def test_lightning_checkpoint_needs_conversion(tmp_path, ckpt, monkeypatch):
    d, model = ckpt
    # A Lightning-style file whose hyper_parameters hold an object of a class that is
    # importable when saved but gone when converted (like lightning/astroclip classes).
    mod = types.ModuleType("fmb_fake_lightning_mod")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = mod.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    mod.AttributeDict = AttributeDict
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    src = tmp_path / "astroclip.ckpt"
    torch.save(
        {
            "state_dict": _published_keys(model),
            "hyper_parameters": AttributeDict(temperature=15.5, lr=1e-4),
            "epoch": 3,
        },
        src,
    )
    monkeypatch.delitem(sys.modules, mod.__name__)
    with pytest.raises(ConfigError) as err:
        AstroCLIPEmbedder(_cfg(tmp_path, checkpoint="astroclip.ckpt")).load()
    assert "python -m fmb_engine.embed.astroclip.checkpoint" in str(err.value)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src, weights_only=True)

    dst = convert_lightning_checkpoint(src, tmp_path / "astroclip_fmb.pt", architecture=TINY.to_dict())
    state, arch = read_checkpoint(dst)
    assert arch == TINY.to_dict() and set(state) == set(_published_keys(model))
    hp = torch.load(dst, weights_only=True)["hyper_parameters"]
    assert hp == {"temperature": 15.5, "lr": 1e-4}
    batch = make_batch(2)
    out = AstroCLIPEmbedder(_cfg(tmp_path)).embed(batch)
    ref = AstroCLIPEmbedder(_cfg(d)).embed(batch)
    assert all(np.array_equal(out[k], ref[k]) for k in out)
    assert convert_main([str(src), str(tmp_path / "again.pt")]) == 0


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError) as err:
        AstroCLIPEmbedder(dict(weights=str(tmp_path), device="cpu")).embed(make_batch(1))
    assert "astroclip.ckpt" in str(err.value) and str(tmp_path) in str(err.value)
    assert "models--polymathic-ai--astroclip" in str(err.value)
