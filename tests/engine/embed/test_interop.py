"""Reference .pt files: safe import (weights_only), key mapping per family, export, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmb_engine.embed import keys as K
from fmb_engine.embed.interop import export_reference_pt, import_reference_pt, read_reference_pt
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.errors import DataError


class Custom:  # a class weights_only=True must refuse to rebuild
    def __init__(self):
        self.x = 1


def _store(tmp_path, model="astroclip", n=6, aligned=True):
    rng = np.random.default_rng(1)
    vec = {"image": rng.normal(size=(n, 5)).astype(np.float32), "spectrum": rng.normal(size=(n, 5)).astype(np.float32),
           "joint": rng.normal(size=(n, 5)).astype(np.float32)}
    meta = EmbeddingMeta(embedder=model, aligned=aligned, modalities=("image", "spectrum", "joint"))
    cols = {"targetid": np.arange(n, dtype=np.int64) + 1000, "redshift": np.linspace(0.1, 0.6, n).astype(np.float32)}
    path = write_embeddings(tmp_path / f"{model}.h5", [f"id{i}" for i in range(n)], vec, meta, columns=cols)
    return path, vec


def test_keys_one_table():
    assert K.reference_key("aion", "joint") == "embedding_hsc_desi"
    assert K.modality_of("embedding_hsc_desi") == "joint"  # not "image" (reference bug L1)
    assert K.modality_of("embedding_spectra") == K.modality_of("embedding_spectrum") == "spectrum"
    assert K.family_of("cca") == "generic" and K.family_of("aion") == "aion"
    assert K.detect_family(["object_id", "embedding_hsc"]) == "aion"
    with pytest.raises(DataError):
        K.modality_of("embedding_rgb")


@pytest.mark.parametrize("model,family", [("astroclip", None), ("aion", None), ("pca", "aion")])
def test_round_trip(tmp_path, model, family):
    src, vec = _store(tmp_path, model)
    pt = export_reference_pt(src, tmp_path / "ref.pt", family)
    records = torch.load(pt, weights_only=True)
    fam = family or K.family_of(model)
    assert isinstance(records, list) and len(records) == 6
    assert set(records[0]) == {"object_id", "targetid", "redshift", *K.FAMILIES[fam].values()}
    assert records[2]["object_id"] == "id2" and records[2]["targetid"] == 1002
    assert torch.equal(records[4][K.reference_key(fam, "spectrum")], torch.from_numpy(vec["spectrum"][4]))
    out, info = import_reference_pt(pt, tmp_path / "back.h5", model=None if family else model)
    assert info["objects"] == 6 and info["family"] == fam
    with EmbeddingReader(out) as r:
        assert list(r.object_ids) == [f"id{i}" for i in range(6)]
        for m in vec:
            assert np.array_equal(r.load(m), vec[m])
        assert np.array_equal(r.columns()["targetid"], np.arange(6) + 1000)
        assert r.extra["key_family"] == fam and r.extra["source_sha256"]
        assert r.aligned is (model == "astroclip" and family is None)


def test_reference_quirks(tmp_path):
    """int ids, targetid fallback, a record missing its joint, NaN vectors, tensors of shape (1, D)."""
    recs = [
        {"object_id": 5, "redshift": torch.tensor(0.3), "embedding_hsc": torch.ones(1, 4),
         "embedding_spectrum": torch.zeros(4), "embedding_hsc_desi": torch.full((4,), 2.0)},
        {"object_id": None, "targetid": 77, "embedding_hsc": torch.ones(4), "embedding_spectrum": torch.ones(4)},
        {"object_id": "x", "embedding_hsc": torch.tensor([1.0, float("nan"), 0, 0]),
         "embedding_spectrum": torch.ones(4), "embedding_hsc_desi": torch.ones(4)},
    ]
    torch.save(recs, tmp_path / "aions_embeddings.pt")
    ref = read_reference_pt(tmp_path / "aions_embeddings.pt")
    assert ref.family == "aion" and list(ref.object_ids) == ["5", "77", "x"]
    assert ref.counts["id_from_targetid"] == 1
    assert np.array_equal(ref.vectors["joint"][0], np.full(4, 2.0)) and np.isnan(ref.vectors["joint"][1]).all()
    assert list(ref.valid["joint"]) == [True, False, True] and list(ref.valid["image"]) == [True, True, False]
    assert list(ref.reasons) == ["", "missing_embedding_hsc_desi", "non_finite_image"]
    assert ref.columns["redshift"][0] == pytest.approx(0.3) and np.isnan(ref.columns["redshift"][1])
    # a single dict is one record
    torch.save(recs[0], tmp_path / "one.pt")
    assert list(read_reference_pt(tmp_path / "one.pt").object_ids) == ["5"]


def test_unsafe_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save([{"object_id": "a", "embedding_images": torch.ones(3), "meta": Custom()}], path)
    with pytest.raises(DataError, match="weights_only"):
        read_reference_pt(path)
    np_path = tmp_path / "numpy.pt"
    torch.save([{"object_id": "a", "embedding_images": np.ones(3)}], np_path)
    with pytest.raises(DataError, match="never unpickles"):
        import_reference_pt(np_path, tmp_path / "out.h5", model="astropt")
    assert not (tmp_path / "out.h5").exists()


def test_bad_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable torch file"):
        read_reference_pt(tmp_path / "junk.pt")
    with pytest.raises(DataError, match="not found"):
        read_reference_pt(tmp_path / "missing.pt")
    torch.save([{"object_id": "a", "embedding_images": torch.ones(3)}] * 2, tmp_path / "dup.pt")
    with pytest.raises(DataError, match="occurs 2 times"):
        read_reference_pt(tmp_path / "dup.pt")
    torch.save([{"object_id": "a", "embedding_images": torch.ones(3)},
                {"object_id": "b", "embedding_images": torch.ones(4)}], tmp_path / "dims.pt")
    with pytest.raises(DataError, match="4 values"):
        read_reference_pt(tmp_path / "dims.pt")
    torch.save([{"object_id": "a", "vector": torch.ones(3)}], tmp_path / "nokeys.pt")
    with pytest.raises(DataError, match="no embedding key"):
        read_reference_pt(tmp_path / "nokeys.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(DataError, match="list of per-object dicts"):
        read_reference_pt(tmp_path / "tensor.pt")
