"""Features reduced from an embedding file block by block equal, bit for bit, those of the whole array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmb_engine.discover import features as features_module
from fmb_engine.discover.features import Features
from fmb_engine.discover.rows import EmbeddingRows
from fmb_engine.discover.run import embedding_features
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.errors import DataError

DIMS = {"image": 6, "spectrum": 4, "joint": 9}


def _file(tmp_path: Path, n: int, nan_rows: dict[str, list[int]] | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(n)
    vectors = {m: (rng.normal(size=(n, d)) * 1.5 ** -np.arange(d)).astype(np.float32) for m, d in DIMS.items()}
    for modality, rows in (nan_rows or {}).items():
        vectors[modality][rows, 1] = np.nan
    path = tmp_path / f"run{n}.h5"
    write_embeddings(path, [f"obj-{i:05d}" for i in range(n)], vectors,
                     EmbeddingMeta("test", True, tuple(DIMS)))
    return path, vectors


def _in_memory(vectors: dict[str, np.ndarray], modalities: list[str], features: Features):
    """The reference: every modality whole, concatenated, non-finite rows dropped, then reduced."""
    X = np.concatenate([vectors[m] for m in modalities], axis=1)
    finite = np.isfinite(X).all(axis=1)
    return features.fit_transform(X[finite]), np.flatnonzero(finite)


@pytest.mark.parametrize("n", [60, 230])  # below and above fit_rows
@pytest.mark.parametrize("block", [7, 64, 100_000])
def test_file_features_equal_the_in_memory_ones_bit_for_bit(tmp_path, monkeypatch, n, block):
    monkeypatch.setattr(features_module, "BLOCK", block)
    path, vectors = _file(tmp_path, n)
    modalities = ["image", "spectrum", "joint"]
    want, rows = _in_memory(vectors, modalities, reference := Features(dims=5, fit_rows=100, seed=3))
    with EmbeddingReader(path) as reader:
        Z, kept = embedding_features(reader, modalities, streamed := Features(dims=5, fit_rows=100, seed=3))
    assert np.array_equal(Z, want) and np.array_equal(kept, rows)
    assert np.array_equal(streamed.projection_, reference.projection_)
    assert streamed.fitted_rows_ == min(n, 100)


@pytest.mark.parametrize("block", [7, 64, 100_000])
def test_non_finite_rows_are_dropped_exactly_as_in_memory(tmp_path, monkeypatch, block):
    monkeypatch.setattr(features_module, "BLOCK", block)
    bad = {"spectrum": [0, 5, 6, 7, 8, 9, 10, 11, 12, 150], "joint": [149, 229]}
    path, vectors = _file(tmp_path, 230, bad)
    modalities = ["image", "spectrum", "joint"]
    want, rows = _in_memory(vectors, modalities, Features(dims=5, fit_rows=100, seed=1))
    with EmbeddingReader(path) as reader:
        Z, kept = embedding_features(reader, modalities, Features(dims=5, fit_rows=100, seed=1))
    assert sorted(set(range(230)) - set(kept.tolist())) == [0, 5, 6, 7, 8, 9, 10, 11, 12, 149, 150, 229]
    assert np.array_equal(kept, rows) and np.array_equal(Z, want)
    # a modality left out does not drop the rows that are non-finite only there
    with EmbeddingReader(path) as reader:
        Z, kept = embedding_features(reader, ["image", "joint"], Features(dims=3, fit_rows=100, seed=1))
    assert kept.size == 228


def test_rows_read_ranges_across_gaps_and_samples_in_small_windows(tmp_path):
    path, vectors = _file(tmp_path, 50)
    X = np.concatenate([vectors["spectrum"], vectors["image"]], axis=1)
    keep = np.array([1, 2, 3, 11, 12, 30, 31, 49])
    with EmbeddingReader(path) as reader:
        rows = EmbeddingRows(reader, ["spectrum", "image"], keep, window=4)
        assert rows.shape == (8, 10) and len(rows) == 8
        assert np.array_equal(rows[2:7], X[keep[2:7]])
        assert np.array_equal(rows[np.array([0, 4, 7])], X[keep[[0, 4, 7]]])
        assert rows[3:3].shape == (0, 10) and not rows.not_finite
        with pytest.raises(IndexError, match="contiguous"):
            rows[::2]


def test_array_features_still_name_the_non_finite_row_and_the_file_path_drops_it(tmp_path):
    path, vectors = _file(tmp_path, 120, {"image": [77]})
    with pytest.raises(DataError, match="row 77 has non-finite"):
        Features(dims=3, fit_rows=100).fit_transform(vectors["image"])
    with EmbeddingReader(path) as reader:
        rows = EmbeddingRows(reader, ["image"])
        Features(dims=3, fit_rows=100).fit_transform(rows)
    assert np.concatenate(rows.not_finite).tolist().count(77) >= 1


def test_features_fit_columns_of_very_different_scales():
    """Scales 3^-k over 15 columns make the float32 Gram matrix of the range finder indefinite: the fit falls
    back to a Householder QR instead of failing, and the leading axis is still the widest column."""
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((500, 15)) * (3.0 ** -np.arange(15))).astype(np.float32)
    features = Features(dims=15).fit(X)
    Z = features.transform(X)
    assert np.isfinite(Z).all()
    assert np.argmax(np.abs(features.projection_[:, 0])) == 0
