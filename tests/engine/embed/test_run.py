"""The embedding stage: manifest, resume after interruption (exception and kill -9), shards, merge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fmb_engine.config import load
from fmb_engine.embed.baselines import CCAEmbedder
from fmb_engine.embed.merge import merge_shards
from fmb_engine.embed.run import embed_shard, embed_survey
from fmb_engine.embed.shards import coverage, embeddings_path, shards_dir
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import DataError
from fmb_engine.survey.stages import make_mock
from fmb_engine.survey.store import SurveyReader, SurveyWriter
from fmb_engine.workspace import Workspace

N = 200
CFG = {"batch_size": 32, "pca_components": 12, "n_components": 6}


def _workspace(root: Path) -> Workspace:
    ws = Workspace.init(root)
    ws.config_file.write_text("general:\n  survey: mock\n")
    return ws


@pytest.fixture(scope="module")
def mock_file(tmp_path_factory) -> Path:
    ws = _workspace(tmp_path_factory.mktemp("src"))
    make_mock(ws, load("mock", cli={"objects": N, "image_size": 32, "workers": -1}))
    return ws.survey_path("mock")


@pytest.fixture
def ws(tmp_path, mock_file) -> Workspace:
    ws = _workspace(tmp_path / "ws")
    shutil.copy(mock_file, ws.survey_path("mock"))
    return ws


def _cfg(ws: Workspace, model: str = "cca", **over):
    return load(f"embed.{model}", ws, cli=(CFG if model == "cca" else {"batch_size": 32}) | over)


def _vectors(path: Path) -> dict[str, np.ndarray]:
    with EmbeddingReader(path) as r:
        return {"ids": np.asarray(r.object_ids, dtype=str), **r.load_all(), "rows": r.rows()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mock_file) -> dict[str, np.ndarray]:
    """An uninterrupted cca run, the yardstick of every resumed one."""
    ws = _workspace(tmp_path_factory.mktemp("ref"))
    shutil.copy(mock_file, ws.survey_path("mock"))
    res = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64)
    return _vectors(res.outputs["embeddings"])


def _assert_same(path: Path, ref: dict[str, np.ndarray], exact: bool = True) -> None:
    """Same ids and rows, each exactly once; vectors bit-identical (same shard layout) or to float32 rounding."""
    got = _vectors(path)
    assert got.keys() == ref.keys()
    for k in ref:
        if exact or k in ("ids", "rows"):
            assert np.array_equal(got[k], ref[k]), k
        else:  # other batch shapes take other BLAS code paths: last-bit differences only
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_stage_writes_file_and_manifest(ws, reference):
    res = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64)
    out = res.outputs["embeddings"]
    assert out == embeddings_path(ws, "cca") and not shards_dir(ws, "cca").exists()
    _assert_same(out, reference)  # same inputs + seed -> identical vectors
    with SurveyReader(ws.survey_path("mock")) as s:
        ids, digest = s.table()["object_id"].to_numpy(str), s.digest
    assert np.array_equal(reference["ids"], ids) and np.array_equal(reference["rows"], np.arange(N))
    with EmbeddingReader(out) as r:
        assert r.aligned and r.embedder == "cca" and r.survey_digest == digest
        assert r.weights_digest.startswith("fit:") and r.state() and r.config["n_components"] == 6
        assert r.valid("joint").all() and (r.reasons() == "").all()
    m = json.loads(res.manifest.read_text())
    assert m["status"] == "completed" and m["stage"] == "embed.cca"
    assert m["inputs"]["survey_digest"] == digest and m["outputs"]["embeddings"] == str(out)
    assert m["counts"]["embedded"] == N and m["counts"]["not_embeddable"]["objects"] == 0
    assert m["counts"]["fit"]["fit_objects"] == int(N * 0.8)
    assert {"fit", "embed", "merge", "total"} <= set(m["timings_s"])
    # a second run finds the file up to date
    again = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws))
    assert again.summary["up_to_date"] and json.loads(again.manifest.read_text())["counts"]["embedded"] == 0
    # batch size does not change the vectors, so it does not invalidate the file
    assert embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws, batch_size=50)).summary.get("up_to_date")


def test_resume_after_exception(ws, reference, monkeypatch):
    calls = {"n": 0}
    original = CCAEmbedder.embed

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # shards of 64 rows, batches of 32: two shards done, the third cut short
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(CCAEmbedder, "embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64)
    manifests = [json.loads(p.read_text()) for p in ws.folder("runs").glob("*.json")]
    assert [m["status"] for m in manifests] == ["interrupted"]
    assert coverage(ws, "cca", N)["missing"] == [[128, N]]
    assert not embeddings_path(ws, "cca").exists()

    monkeypatch.setattr(CCAEmbedder, "embed", original)
    res = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64)
    assert res.summary["resumed"] == 128 and res.summary["embedded"] == N - 128
    _assert_same(res.outputs["embeddings"], reference)


def test_resume_after_kill_9(ws, reference):
    """A hard kill (no cleanup code runs) in the middle of a shard; the rerun completes it exactly."""
    script = textwrap.dedent(f"""
        import os, signal
        from fmb_engine.config import load
        from fmb_engine.embed.baselines import CCAEmbedder
        from fmb_engine.embed.run import embed_survey
        from fmb_engine.workspace import Workspace
        original, calls = CCAEmbedder.embed, [0]
        def dying(self, batch):
            calls[0] += 1
            if calls[0] == 4:  # batches of 32, shards of 64: one shard written, the second cut short
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, batch)
        CCAEmbedder.embed = dying
        ws = Workspace.find({str(ws.root)!r})
        embed_survey(ws, ws.survey_path("mock"), "cca", load("embed.cca", ws, cli={CFG!r}), shard_size=64)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert proc.returncode == -9, proc.stderr
    assert coverage(ws, "cca", N, None)["done"] == 64
    res = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64)
    assert res.summary["resumed"] == 64 and res.summary["complete"]
    _assert_same(res.outputs["embeddings"], reference)


def test_array_style_ranges_then_merge(ws, reference):
    survey = ws.survey_path("mock")
    first = embed_shard(ws, survey, "cca", _cfg(ws), 0, 90, shard_size=64)
    assert first["embedded"] == 90 and [p.name for p in first["shards"]] == [
        "shard-000000000-000000064.h5", "shard-000000064-000000090.h5"]
    with pytest.raises(DataError, match=r"\[90, 200\)"):
        merge_shards(ws, "cca")
    # an overlapping range only embeds what is missing
    second = embed_shard(ws, survey, "cca", _cfg(ws), 50, 150, shard_size=64)
    assert second["embedded"] == 60 and second["reused"] == 40
    # the stage door on the last range merges because the coverage is then complete
    res = embed_survey(ws, survey, "cca", _cfg(ws), start=150, stop=None, shard_size=64)
    assert res.summary["complete"] and res.summary["embedded"] == N - 150
    _assert_same(res.outputs["embeddings"], reference, exact=False)  # ranges cut batches differently


def test_overlapping_shards_merge_each_row_once(ws, reference):
    """Two array tasks with overlapping ranges running at once both embed the overlap."""
    survey = ws.survey_path("mock")
    first = embed_shard(ws, survey, "cca", _cfg(ws), 0, 64, shard_size=64)["shards"][0]
    aside = first.with_name("aside.h5")
    first.rename(aside)  # as if the other task had not seen it yet
    embed_shard(ws, survey, "cca", _cfg(ws), 32, N, shard_size=64)
    aside.rename(first)
    out, info = merge_shards(ws, "cca")
    assert info["duplicates_dropped"] == 32 and info["objects"] == N
    _assert_same(out, reference, exact=False)


def test_fit_from_reuses_a_stored_fit(ws, reference, tmp_path):
    """Embedding with the fit of an earlier file puts the objects in that file's space, without refitting."""
    src = _workspace(tmp_path / "first")
    shutil.copy(ws.survey_path("mock"), src.survey_path("mock"))
    first = embed_survey(src, src.survey_path("mock"), "cca", _cfg(src), shard_size=64).outputs["embeddings"]
    res = embed_survey(ws, ws.survey_path("mock"), "cca", _cfg(ws), shard_size=64, fit_from=first)
    manifest = json.loads(res.manifest.read_text())
    assert "fit" not in manifest["timings_s"] or manifest["timings_s"]["fit"] < 0.5
    assert manifest["counts"]["fit"]["fit_from"] == str(first)
    _assert_same(res.outputs["embeddings"], reference)
    with pytest.raises(Exception, match="not 'pca'"):
        embed_survey(ws, ws.survey_path("mock"), "pca", _cfg(ws, "pca"), fit_from=first)


def test_partial_range_does_not_merge(ws):
    res = embed_survey(ws, ws.survey_path("mock"), "pca", _cfg(ws, "pca"), start=0, stop=100, shard_size=64)
    assert res.summary["complete"] is False and res.summary["missing"] == [[100, N]]
    assert "shards" in res.outputs and not embeddings_path(ws, "pca").exists()


def test_changed_config_discards_shards(ws):
    survey = ws.survey_path("mock")
    embed_shard(ws, survey, "cca", _cfg(ws), 0, 64, shard_size=64)
    res = embed_shard(ws, survey, "cca", _cfg(ws, n_components=4), 0, 64, shard_size=64)
    assert res["embedded"] == 64  # nothing reused: a different run key


def test_not_embeddable_objects_are_flagged(ws, mock_file):
    with SurveyReader(mock_file) as src:
        b = src.read_rows(np.arange(N))
        table = src.table()
        wave = src.wavelength
    images, flux, ivar, mask = b.images.copy(), b.flux.copy(), b.ivar.copy(), b.mask.copy()
    has_bands = np.ones((N, 4), bool)
    has_spec = np.ones(N, bool)
    images[3, 1] = np.nan
    has_bands[3, 1] = False
    flux[7], ivar[7], mask[7], has_spec[7] = 0.0, 0.0, True, False
    ivar[9], mask[9] = 0.0, True  # a spectrum whose pixels are all bad
    cols = {c: table[c].to_numpy() for c in ("object_id", "targetid", "ra", "dec", "redshift", "split", "logM",
                                              "logSFR", "anomaly_class")}
    cols["has_spectrum"] = has_spec
    out = ws.survey_path("gappy")
    with SurveyWriter(out, image_size=32, wavelength=wave, rgb=False, generator="test", params={}) as w:
        w.append(cols, images, flux, ivar, mask, has_bands=has_bands)
    res = embed_survey(ws, out, "pca", _cfg(ws, "pca"))
    with EmbeddingReader(res.outputs["embeddings"]) as r:
        reasons = r.reasons()
        assert reasons[3] == "missing_band:NISP_Y" and reasons[7] == "no_spectrum"
        assert reasons[9] == "no_valid_spectrum_pixels" and (np.delete(reasons, [3, 7, 9]) == "").all()
        assert list(np.flatnonzero(~r.valid("image"))) == [3]
        assert list(np.flatnonzero(~r.valid("spectrum"))) == [7, 9]
        assert list(np.flatnonzero(~r.valid("joint"))) == [3, 7, 9]
        assert np.isfinite(r.load("joint")).all()  # still embedded, from imputed input
    ne = json.loads(res.manifest.read_text())["counts"]["not_embeddable"]
    assert ne["objects"] == 3 and ne["by_reason"] == {"missing_band:NISP_Y": 1, "no_spectrum": 1,
                                                       "no_valid_spectrum_pixels": 1}
    assert ne["invalid_per_modality"] == {"image": 1, "spectrum": 2, "joint": 3}
    assert res.summary["not_embeddable"] == 3
    # per modality: an object without a spectrum still has its image embedded
    assert ne["modalities"]["image"] == {"embedded": N - 1, "missing": 1, "by_reason": {"missing_band:NISP_Y": 1}}
    assert ne["modalities"]["spectrum"] == {"embedded": N - 2, "missing": 2,
                                            "by_reason": {"no_spectrum": 1, "no_valid_spectrum_pixels": 1}}
    assert ne["modalities"]["joint"]["missing"] == 3 and res.summary["modalities"] == ne["modalities"]
    from fmb_engine.cli.embed import modality_counts

    assert modality_counts(ne["modalities"]) == (
        f"image: {N - 1} embedded, 1 missing an image band; spectrum: {N - 2} embedded, 2 without a usable spectrum; "
        f"joint: {N - 3} embedded, 3 missing an image band or without a usable spectrum")


def test_sections_known_without_model_packages():
    code = ("import sys; "
            "from fmb_engine.config import SECTIONS; "
            "assert {'embed.pca','embed.cca','embed.astropt','embed.aion','embed.astroclip'} <= set(SECTIONS), SECTIONS; "
            "assert 'astropt' not in sys.modules and 'aion' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_pretrained_model_through_the_stage(ws, tmp_path):
    """A (tiny, random) AstroCLIP checkpoint through embed_survey: weights digest, aligned, unit vectors."""
    import torch

    from fmb_engine.embed.astroclip import AstroCLIP, AstroCLIPArchitecture, save_checkpoint
    from fmb_engine.embed.digests import file_identity

    arch = AstroCLIPArchitecture(image_size=16, patch_size=8, vit_dim=16, vit_depth=1, vit_heads=2, spec_dim=16,
                                 spec_layers=1, spec_heads=2, embed_dim=8, head_heads=2)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "w" / "astroclip.ckpt", AstroCLIP(arch).state_dict(), architecture=arch.to_dict())
    cfg = _cfg(ws, "astroclip", weights=str(ckpt.parent), image_size=16, batch_size=64)
    res = embed_survey(ws, ws.survey_path("mock"), "astroclip", cfg, shard_size=128)
    with EmbeddingReader(res.outputs["embeddings"]) as r:
        assert r.aligned and r.dims == {"image": 8, "spectrum": 8, "joint": 8} and not r.state()
        assert r.weights_digest and not r.weights_digest.startswith("fit:")
        assert np.allclose(np.linalg.norm(r.load("image"), axis=1), 1.0, atol=1e-5)
    assert len(file_identity(ckpt)) == 64
