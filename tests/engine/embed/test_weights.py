"""Weight-location resolution, the optional-package guard, shared preprocessing and registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmb_engine.embed import preprocess as pp
from fmb_engine.embed.weights import default_hf_cache, import_optional, resolve_dir, resolve_file
from fmb_engine.errors import ConfigError
from .fake import make_batch

REPO = "org/model"
REV = "a" * 40


def _cache(root, files, rev=REV, ref=True):
    snap = root / f"models--{REPO.replace('/', '--')}" / "snapshots" / rev
    for f in files:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        (snap / f).write_text(rev)
    if ref:
        (root / f"models--{REPO.replace('/', '--')}" / "refs").mkdir(parents=True, exist_ok=True)
        (root / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(rev)
    return snap


# --------------------------------------------------------------------------- resolution


def test_plain_directory_subfolder_and_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ckpt.pt").write_text("x")
    assert resolve_file("ckpt.pt", weights=tmp_path, repo_id=REPO, subfolder="sub") == tmp_path / "sub" / "ckpt.pt"
    (tmp_path / "ckpt.pt").write_text("y")
    assert resolve_file("ckpt.pt", weights=tmp_path, repo_id=REPO) == tmp_path / "ckpt.pt"
    # weights may name the file itself
    assert resolve_file("other.pt", weights=tmp_path / "ckpt.pt", repo_id=REPO) == tmp_path / "ckpt.pt"


@pytest.mark.parametrize("layout", ["cache", "hf_home", "repo_folder"])
def test_hugging_face_cache_layouts(tmp_path, layout):
    files = ["config.json", "codecs/image/model.safetensors"]
    cache = tmp_path / "hub" if layout == "hf_home" else tmp_path
    snap = _cache(cache, files)
    weights = {"cache": tmp_path, "hf_home": tmp_path, "repo_folder": snap.parent.parent}[layout]
    assert resolve_dir(files, weights=weights, repo_id=REPO) == snap


def test_refs_main_preferred_and_incomplete_snapshots_skipped(tmp_path):
    files = ["config.json", "model.safetensors"]
    main = _cache(tmp_path, files, rev=REV)
    _cache(tmp_path, files[:1], rev="b" * 40, ref=False)  # newer but incomplete
    assert resolve_dir(files, weights=tmp_path, repo_id=REPO) == main


def test_default_cache_when_weights_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert default_hf_cache() == tmp_path
    snap = _cache(tmp_path, ["ckpt.pt"])
    assert resolve_file("ckpt.pt", weights=None, repo_id=REPO) == snap / "ckpt.pt"


def test_missing_file_names_file_and_every_location(tmp_path):
    _cache(tmp_path, ["config.json"])
    with pytest.raises(ConfigError) as err:
        resolve_dir(["config.json", "model.safetensors"], weights=tmp_path, repo_id=REPO, what="Demo")
    msg = str(err.value)
    assert "model.safetensors" in msg and "Demo" in msg
    assert str(tmp_path) in msg
    assert str(tmp_path / "models--org--model" / "snapshots" / REV) in msg
    assert "never falls back to random weights" in msg


def test_missing_default_cache_and_missing_weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as err:
        resolve_file("ckpt.pt", weights=None, repo_id=REPO)
    assert "ckpt.pt" in str(err.value) and str(tmp_path / "empty") in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_file("ckpt.pt", weights=tmp_path / "nope", repo_id=REPO)


def test_import_optional_guard():
    assert import_optional("json", "demo") is not None
    with pytest.raises(ConfigError, match=r"pip install fmb\[demo\]"):
        import_optional("fmb_no_such_package_xyz", "demo")


# --------------------------------------------------------------------------- preprocessing


def test_spectrum_helpers():
    x = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    assert pp.pad_or_trim(x, 4).shape == (2, 4)
    padded = pp.pad_or_trim(x, 8)
    assert padded.shape == (2, 8) and torch.all(padded[:, 6:] == 0)
    z = pp.normalise_spectra(x, "zscore")
    assert torch.allclose(z.mean(1), torch.zeros(2), atol=1e-6) and torch.allclose(z.std(1), torch.ones(2), atol=1e-5)
    s = pp.normalise_spectra(x, "std")
    assert torch.allclose(s.std(1), torch.ones(2), atol=1e-5) and not torch.allclose(s.mean(1), torch.zeros(2))
    flat = torch.ones(1, 5)
    assert torch.equal(pp.normalise_spectra(flat, "std"), flat)  # zero spread: unchanged
    assert torch.equal(pp.normalise_spectra(x, "none"), x)


def test_image_helpers():
    batch = make_batch(2)
    rgb = pp.rgb_to_float(batch.rgb)
    assert rgb.shape == (2, 3, 64, 64) and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.allclose(rgb[0, :, 5, 7] * 255, torch.tensor(batch.rgb[0, 5, 7], dtype=torch.float32))
    assert pp.resize(rgb, 144).shape == (2, 3, 144, 144)
    comp = pp.rgb_composite(torch.as_tensor(batch.images))
    assert comp.shape == (2, 3, 64, 64) and comp.min() >= 0 and comp.max() <= 1
    from fmb_engine.survey.composite import asinh_rgb

    stored = torch.as_tensor(asinh_rgb(batch.images)).permute(0, 3, 1, 2) / 255.0
    assert torch.allclose(comp, stored)  # same composite as the store's RGB
    batch.rgb = None
    assert pp.batch_rgb(batch, 32).shape == (2, 3, 32, 32)  # falls back to the bands
    batch.images[0, 0, 0, 0] = np.nan
    assert torch.isfinite(pp.batch_rgb(batch, 32, source="bands")).all()


def test_joint_and_chunks():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    j = pp.joint_of(a, b)
    assert torch.allclose(j.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(j, pp.joint_of(3 * a, 0.5 * b), atol=1e-6)
    batch = make_batch(5)
    chunks = list(pp.iter_chunks(batch, 2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert np.array_equal(np.concatenate([c.flux for c in chunks]), batch.flux)


def test_registry_names():
    from fmb_engine.embed import base

    for name in ("astropt", "aion", "astroclip"):
        cls = base.get(name)
        assert cls.name == name and cls.modalities == ("image", "spectrum", "joint")
    assert base.get("astroclip").aligned is True
    assert base.get("astropt").aligned is False and base.get("aion").aligned is False


def test_missing_optional_packages_raise_config_error(monkeypatch, tmp_path):
    import sys

    from fmb_engine.embed.aion import AIONEmbedder
    from fmb_engine.embed.astropt import AstroPTEmbedder

    for mod in ("astropt", "astropt.model", "aion", "aion.modalities"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes the import fail
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pip install fmb\[astropt\]"):
        AstroPTEmbedder(dict(weights=str(tmp_path / "ckpt.pt"), device="cpu")).load()
    with pytest.raises(ConfigError, match=r"pip install fmb\[aion\]"):
        AIONEmbedder(dict(weights=str(tmp_path), device="cpu")).load()
