"""AstroPT embedder: the real upstream GPT at tiny size, checkpoints in the upstream format."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

astropt_model = pytest.importorskip("astropt.model")

from fmb_engine.embed.astropt import AstroPTEmbedder, patchify, spiral_order, zscore_patches  # noqa: E402
from fmb_engine.errors import ConfigError  # noqa: E402
from fmb_engine.survey import bands  # noqa: E402
from .fake import make_batch

ARGS = dict(block_size=1024, n_layer=3, n_head=2, n_embd=32, n_chan=3, bias=False)
IMG_PATCH = 8


def _registry(names=("images", "spectra")):
    m = astropt_model
    mods = {
        "images": m.ModalityConfig("images", IMG_PATCH * IMG_PATCH * 3, 1, IMG_PATCH, True),
        "spectra": m.ModalityConfig("spectra", 10, 1, 10, True),
    }
    return m.ModalityRegistry([mods[n] for n in names])


def _build(names=("images", "spectra")):
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return astropt_model.GPT(astropt_model.GPTConfig(**ARGS), _registry(names)).eval()


@pytest.fixture(scope="module")
def upstream_ckpt(tmp_path_factory):
    """A checkpoint exactly as upstream writes it (pickled registry), plus the in-memory model."""
    d = tmp_path_factory.mktemp("astropt")
    model = _build()
    torch.save(
        {"model_args": dict(ARGS), "modality_registry": model.modality_registry, "model": model.state_dict()},
        d / "ckpt.pt",
    )
    return d, model


def _cfg(d, **kw):
    base = dict(weights=str(d), image_size=32, device="cpu", batch_size=3)
    base.update(kw)
    return base


def test_shapes_finite_deterministic(upstream_ckpt):
    d, _ = upstream_ckpt
    emb = AstroPTEmbedder(_cfg(d))
    batch = make_batch()
    out = emb.embed(batch)
    assert set(out) == {"image", "spectrum", "joint"}
    for v in out.values():
        assert v.shape == (4, 32) and v.dtype == np.float32 and np.isfinite(v).all()
    assert np.allclose(np.linalg.norm(out["joint"], axis=1), 1, atol=1e-5)
    again = emb.embed(batch)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    # chunking does not change the result
    whole = AstroPTEmbedder(_cfg(d, batch_size=64)).embed(batch)
    assert all(np.allclose(out[k], whole[k], atol=1e-5) for k in out)


def test_reload_matches_saved_model_both_loaders(upstream_ckpt):
    d, model = upstream_ckpt
    batch = make_batch()
    safe = AstroPTEmbedder(_cfg(d, loader="safe"))
    up = AstroPTEmbedder(_cfg(d, loader="upstream"))
    a, b = safe.embed(batch), up.embed(batch)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        ref = model.generate_embeddings(safe.inputs(batch), reduction="mean")
    assert np.array_equal(a["image"], ref["images"].numpy())
    assert np.array_equal(a["spectrum"], ref["spectra"].numpy())


def test_middle_layer_and_causal_order(upstream_ckpt):
    d, model = upstream_ckpt
    emb = AstroPTEmbedder(_cfg(d))
    batch = make_batch(2)
    base = emb.embed(batch)
    # mean over each modality's tokens after block n_layer // 2 (of 0..2), no final LayerNorm
    inputs = emb.inputs(batch)
    with torch.no_grad():
        t = model.transformer
        x = torch.cat([t.wte["images"](inputs["images"]), t.wte["spectra"](inputs["spectra"])], 1)
        x = x + torch.cat(
            [t.wpe["images"](inputs["images_positions"]), t.wpe["spectra"](inputs["spectra_positions"])], 1
        )
        for blk in t.h[: ARGS["n_layer"] // 2 + 1]:
            x = blk(x)
    n_img = inputs["images"].shape[1]
    assert np.allclose(base["image"], x[:, :n_img].mean(1).numpy(), atol=1e-6)
    assert np.allclose(base["spectrum"], x[:, n_img:].mean(1).numpy(), atol=1e-6)
    other_spec = make_batch(2)
    other_spec.flux = other_spec.flux[::-1].copy()
    out = emb.embed(other_spec)
    assert np.array_equal(out["image"], base["image"])  # images never see the spectrum
    other_img = make_batch(2)
    other_img.rgb = other_img.rgb[::-1].copy()
    out = emb.embed(other_img)
    assert not np.allclose(out["spectrum"], base["spectrum"])  # spectra see the image tokens


def test_fmb_checkpoint_without_registry(tmp_path):
    model = _build()
    cfg = {"image_size": 32}
    torch.save({"model_args": dict(ARGS), "model": model.state_dict(), "config": cfg}, tmp_path / "ckpt.pt")
    emb = AstroPTEmbedder(_cfg(tmp_path, layout="fmb", image_patch_size=IMG_PATCH, spectrum_patch_size=10))
    out = emb.embed(make_batch(2))
    with torch.no_grad():
        ref = model.generate_embeddings(emb.inputs(make_batch(2)))
    assert np.array_equal(out["image"], ref["images"].numpy())
    with pytest.raises(ConfigError, match="loader: safe"):
        AstroPTEmbedder(_cfg(tmp_path, loader="upstream")).embed(make_batch(2))


@pytest.mark.parametrize("pos_size", [1, 10])
def test_wavelength_positions(tmp_path, pos_size):
    m = astropt_model
    reg = m.ModalityRegistry(
        [
            m.ModalityConfig("images", IMG_PATCH * IMG_PATCH * 3, 1, IMG_PATCH, True),
            m.ModalityConfig("spectra", 10, pos_size, 10, False),
        ]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        model = m.GPT(m.GPTConfig(**ARGS), reg).eval()
    torch.save({"model_args": dict(ARGS), "modality_registry": reg, "model": model.state_dict()}, tmp_path / "ckpt.pt")
    emb = AstroPTEmbedder(_cfg(tmp_path, spectrum_length=7785))  # 4 bins past the grid
    pos = emb.inputs(make_batch(2))["spectra_positions"]
    assert pos.shape == (2, 779, pos_size)
    wave = (bands.wavelength_grid()[0] + 0.8 * np.arange(7790) - 3000) / 7000
    expect = wave.reshape(779, 10) if pos_size == 10 else wave.reshape(779, 10).mean(1, keepdims=True)
    assert np.allclose(pos[0].numpy(), expect, atol=1e-5)
    out = emb.embed(make_batch(2))
    assert out["spectrum"].shape == (2, 32) and np.isfinite(out["spectrum"]).all()


@pytest.mark.parametrize("loader", ["safe", "upstream"])
def test_strict_loading_catches_wrong_key(tmp_path, loader):
    model = _build()
    state = model.state_dict()
    state["transformer.h.0.attn.c_attn.not_a_weight"] = torch.zeros(1)
    torch.save(
        {"model_args": dict(ARGS), "modality_registry": model.modality_registry, "model": state}, tmp_path / "ckpt.pt"
    )
    with pytest.raises(ConfigError, match="not_a_weight"):
        AstroPTEmbedder(_cfg(tmp_path, loader=loader)).load()


def test_images_only_checkpoint_rejected(tmp_path):
    model = _build(("images",))
    torch.save(
        {"model_args": dict(ARGS), "modality_registry": model.modality_registry, "model": model.state_dict()},
        tmp_path / "ckpt.pt",
    )
    with pytest.raises(ConfigError, match="spectra"):
        AstroPTEmbedder(_cfg(tmp_path)).load()


def test_foreign_pickle_refused_by_safe_loader(tmp_path):
    model = _build()
    torch.save(
        {
            "model_args": dict(ARGS),
            "modality_registry": model.modality_registry,
            "model": model.state_dict(),
            "extra": io.StringIO("x"),
        },
        tmp_path / "ckpt.pt",
    )
    with pytest.raises(ConfigError, match="weights_only"):
        AstroPTEmbedder(_cfg(tmp_path)).load()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError) as err:
        AstroPTEmbedder(_cfg(tmp_path, checkpoint="ckpt.pt")).embed(make_batch(1))
    assert "ckpt.pt" in str(err.value) and str(tmp_path) in str(err.value)
    assert str(tmp_path / "astropt" / "095M") in str(err.value)


def test_block_size_checked(upstream_ckpt):
    d, _ = upstream_ckpt
    with pytest.raises(ConfigError, match="block size"):
        AstroPTEmbedder(_cfg(d, image_size=256)).load()


# --------------------------------------------------------------------------- patch layout


def test_patchify_matches_upstream_layouts():
    einops = pytest.importorskip("einops")
    x = torch.randn(2, 3, 32, 32)
    last = einops.rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=8, p2=8)
    first = einops.rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=8, p2=8)
    assert torch.equal(patchify(x, 8, "channel_last"), last)
    assert torch.equal(patchify(x, 8, "channel_first"), first)
    z = zscore_patches(last)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(z.std(-1), torch.ones(2, 16), atol=1e-4)


@pytest.mark.parametrize(
    "rank",
    [
        [[8, 7, 6], [1, 0, 5], [2, 3, 4]],  # AstroPT's spiral ranks, n = 3
        [[15, 14, 13, 12], [4, 3, 2, 11], [5, 0, 1, 10], [6, 7, 8, 9]],  # n = 4
    ],
)
def test_spiral_order_matches_upstream_ranks(rank):
    rank = np.array(rank).ravel()
    order = spiral_order(int(np.sqrt(rank.size)))
    assert [int(rank[i]) for i in order] == list(range(rank.size))
