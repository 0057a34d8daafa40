"""Embedding store: round trip, lookup, atomic writes, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, is_embedding_file, read_meta, write_embeddings
from fmb_engine.errors import DataError


def _meta(**kw) -> EmbeddingMeta:
    base = dict(embedder="pca", aligned=False, modalities=("image", "spectrum", "joint"), config={"a": 1},
                weights_digest="w" * 8, survey_digest="s" * 8, survey_path="/x/mock.h5", versions={"numpy": "x"},
                extra={"run_key": "k"})
    return EmbeddingMeta(**(base | kw))


def _vectors(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(n, 4)).astype(np.float32), "spectrum": rng.normal(size=(n, 3)).astype(np.float32),
            "joint": rng.normal(size=(n, 7)).astype(np.float32)}


def test_round_trip(tmp_path):
    ids = np.array([f"obj{i}" for i in range(5)])
    vec = _vectors(5)
    valid = {"image": np.array([1, 1, 0, 1, 1], bool)}
    reasons = np.array(["", "", "missing_band:VIS", "", ""])
    state = {"pca.mean": np.arange(3.0)}
    cols = {"targetid": np.arange(5) + 100, "note": np.array(list("abcde"))}
    path = write_embeddings(tmp_path / "e.h5", ids, vec, _meta(), rows=np.arange(5), valid=valid, reasons=reasons,
                            state=state, columns=cols)
    assert is_embedding_file(path)
    with EmbeddingReader(path) as r:
        assert r.embedder == "pca" and r.aligned is False and r.n_objects == 5
        assert r.modalities == ("image", "spectrum", "joint") and r.dims == {"image": 4, "spectrum": 3, "joint": 7}
        assert r.config == {"a": 1} and r.extra["run_key"] == "k" and r.survey_digest == "s" * 8
        assert list(r.object_ids) == list(ids)
        for m, v in vec.items():
            got = r.load(m)
            assert got.dtype == np.float32 and np.array_equal(got, v)
        assert np.array_equal(r.valid("image"), valid["image"]) and r.valid("joint").all()
        assert r.load("image", valid_only=True).shape == (4, 4)
        assert list(r.reasons()) == list(reasons)
        assert np.array_equal(r.state()["pca.mean"], state["pca.mean"])
        c = r.columns()
        assert np.array_equal(c["targetid"], cols["targetid"]) and list(c["note"]) == list("abcde")
        assert np.array_equal(r.get("obj3", "spectrum"), vec["spectrum"][3])
        assert np.array_equal(r.get(["obj4", "obj0", "obj4"], "image"), vec["image"][[4, 0, 4]])
        assert r.index_of("obj2") == 2
        with pytest.raises(DataError, match="no object"):
            r.index_of("nope")
        with pytest.raises(DataError, match="no modality"):
            r.load("rgb")
    assert read_meta(path).weights_digest == "w" * 8


def test_datasets_are_contiguous_float32(tmp_path):
    path = write_embeddings(tmp_path / "e.h5", ["a", "b"], _vectors(2), _meta())
    with h5py.File(path) as f:
        ds = f["vectors/image"]
        assert ds.chunks is None and ds.compression is None and ds.dtype == np.float32
        assert f["object_id"].dtype.kind == "S"


def test_empty_file(tmp_path):
    path = write_embeddings(tmp_path / "e.h5", [], {k: v[:0] for k, v in _vectors(1).items()}, _meta())
    with EmbeddingReader(path) as r:
        assert r.n_objects == 0 and r.load("joint").shape == (0, 7) and len(r.object_ids) == 0


def test_failed_write_leaves_old_file(tmp_path):
    path = write_embeddings(tmp_path / "e.h5", ["a", "b"], _vectors(2), _meta())
    before = path.read_bytes()
    bad = _vectors(2)
    bad["joint"] = bad["joint"][:1]
    with pytest.raises(DataError, match="joint"):
        write_embeddings(path, ["a", "b"], bad, _meta())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]  # no temp file left behind


def test_id_errors(tmp_path):
    with pytest.raises(DataError, match="more than once"):
        write_embeddings(tmp_path / "d.h5", ["a", "a"], _vectors(2), _meta())
    with pytest.raises(DataError, match="longer than"):
        write_embeddings(tmp_path / "l.h5", ["x" * 65, "b"], _vectors(2), _meta())
    with pytest.raises(DataError, match="declared"):
        write_embeddings(tmp_path / "m.h5", ["a"], {"image": np.zeros((1, 2))}, _meta())
    assert not any(tmp_path.iterdir())


def test_not_an_embedding_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        EmbeddingReader(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(DataError, match="not a readable HDF5"):
        EmbeddingReader(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "fmb-survey"
    with pytest.raises(DataError, match="not an FMB embedding file"):
        EmbeddingReader(tmp_path / "other.h5")
    assert not is_embedding_file(tmp_path / "junk.h5")
