"""PCA and CCA baseline embedders on a small mock survey."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fmb_engine.config import load
from fmb_engine.embed.baselines import CCAEmbedder, PCAEmbedder, pool_matrix, radial_matrix
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.survey.stages import make_mock
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace

FIELDS = ("images", "spectra")


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    ws = Workspace.init(tmp_path_factory.mktemp("ws"))
    make_mock(ws, load("mock", cli={"objects": 300, "image_size": 32, "workers": -1, "anomaly_fraction": 0.05}))
    with SurveyReader(ws.survey_path("mock")) as reader:
        yield reader


def _fit(cls, reader, **cfg):
    return cls(cfg).fit(reader.iter_batches(100, split="train", fields=FIELDS))


def _embed_all(emb, reader):
    parts = [emb.embed(b) for b in reader.iter_batches(128, fields=FIELDS)]
    return {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}


@pytest.fixture(scope="module")
def fitted(survey):
    return {"pca": _fit(PCAEmbedder, survey, image_components=16, spectrum_components=12),
            "cca": _fit(CCAEmbedder, survey, pca_components=16, n_components=8)}


def test_shapes_and_declarations(survey, fitted):
    pca, cca = fitted["pca"], fitted["cca"]
    assert PCAEmbedder.needs_fit and CCAEmbedder.needs_fit
    assert not PCAEmbedder.aligned and CCAEmbedder.aligned
    out = _embed_all(pca, survey)
    assert out["image"].shape == (300, 16) and out["spectrum"].shape == (300, 12) and out["joint"].shape == (300, 28)
    assert np.array_equal(out["joint"], np.concatenate([out["image"], out["spectrum"]], 1))  # joint = concatenation
    c = _embed_all(cca, survey)
    assert c["image"].shape == c["spectrum"].shape == (300, 8)
    assert np.allclose(np.linalg.norm(c["joint"], axis=1), 1.0, atol=1e-5)
    for arr in (*out.values(), *c.values()):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    rho = cca.correlations
    assert np.all(np.diff(rho) <= 1e-6) and 0 < rho[-1] <= rho[0] <= 1.0
    assert pca.fit_counts["fit_objects"] == int((survey.table()["split"] == "train").sum())


def test_state_round_trip_and_determinism(survey, fitted):
    for cls, name in ((PCAEmbedder, "pca"), (CCAEmbedder, "cca")):
        emb = fitted[name]
        state = emb.state_dict()
        assert all(isinstance(v, np.ndarray) for v in state.values())
        again = _fit(cls, survey, **emb.config.model_dump(include={"image_components", "spectrum_components",
                                                                    "pca_components", "n_components"}))
        other = again.state_dict()
        assert state.keys() == other.keys() and all(np.array_equal(state[k], other[k]) for k in state)
        fresh = cls(emb.config)
        fresh.load_state_dict(state)
        batch = survey.read_rows(np.arange(40, 90), FIELDS)
        a, b = emb.embed(batch), fresh.embed(batch)
        assert all(np.array_equal(a[m], b[m]) for m in a)


def test_batch_independent(survey, fitted):
    """An object's vector does not depend on the other objects of its batch."""
    emb = fitted["pca"]
    whole = emb.embed(survey.read_rows(np.arange(0, 64), FIELDS))
    part = emb.embed(survey.read_rows(np.arange(10, 20), FIELDS))
    for m in whole:
        np.testing.assert_allclose(whole[m][10:20], part[m], rtol=1e-5, atol=1e-5)


def test_cca_cosine_exposes_mismatched_pairs(survey, fitted):
    """cos(image, spectrum) is high for an object's own pair, low for another galaxy's spectrum."""
    c = _embed_all(fitted["cca"], survey)
    table = survey.table()
    normal = np.flatnonzero(table["anomaly_class"].to_numpy(str) == "")
    z = table["redshift"].to_numpy()[normal]
    img, spec = c["image"][normal], c["spectrum"][normal]
    rng = np.random.default_rng(0)
    partner = rng.permutation(normal.size)
    far = np.abs(z - z[partner]) > 0.4  # like the mock's cross-matches
    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    own, swapped = cos(img, spec), cos(img[far], spec[partner][far])
    assert np.median(own) > 0.5
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.zeros(own.size), np.ones(swapped.size)], -np.r_[own, swapped])
    assert auc > 0.9, auc


def test_missing_band_and_spectrum_are_imputed(survey, fitted):
    batch = survey.read_rows(np.arange(5), FIELDS)
    images, flux, ivar, mask = batch.images.copy(), batch.flux.copy(), batch.ivar.copy(), batch.mask.copy()
    has_bands, has_spec = batch.has_bands.copy(), batch.has_spectrum.copy()
    images[1, 2] = np.nan
    has_bands[1, 2] = False
    flux[3], ivar[3], mask[3], has_spec[3] = np.nan, 0.0, True, False
    bad = replace(batch, images=images, flux=flux, ivar=ivar, mask=mask, has_bands=has_bands, has_spectrum=has_spec)
    pca = fitted["pca"]
    out, ref = pca.embed(bad), pca.embed(batch)
    for arr in out.values():
        assert np.isfinite(arr).all()
    # no spectrum -> train-mean features -> (almost) the origin of the spectrum PCA
    assert np.abs(out["spectrum"][3]).max() < 1e-4 < np.abs(ref["spectrum"][3]).max()
    assert np.array_equal(out["spectrum"][[0, 1, 2, 4]], ref["spectrum"][[0, 1, 2, 4]])
    assert not np.allclose(out["image"][1], ref["image"][1])  # the band was replaced by its mean
    assert np.array_equal(out["image"][[0, 2, 3, 4]], ref["image"][[0, 2, 3, 4]])


def test_fit_skips_incomplete_objects(survey):
    batch = survey.read_rows(np.arange(60), FIELDS)
    has_spec = batch.has_spectrum.copy()
    has_spec[:7] = False
    emb = PCAEmbedder({"image_components": 4, "spectrum_components": 4}).fit([replace(batch, has_spectrum=has_spec)])
    assert emb.fit_counts == {"fit_objects": 53, "fit_skipped_incomplete": 7}


def test_errors(survey, fitted):
    batch = survey.read_rows(np.arange(3), FIELDS)
    with pytest.raises(ConfigError, match="not fitted"):
        PCAEmbedder().embed(batch)
    other = PCAEmbedder({"image_grid": 8, "image_components": 16, "spectrum_components": 12})
    with pytest.raises(ConfigError, match="image_grid"):
        other.load_state_dict(fitted["pca"].state_dict())
    with pytest.raises(ConfigError, match="does not belong"):
        CCAEmbedder().load_state_dict(fitted["pca"].state_dict())
    small = replace(batch, images=batch.images[:, :, :16, :16])
    with pytest.raises(DataError, match="fitted on 32-px"):
        fitted["pca"].embed(small)
    with pytest.raises(DataError, match="at least 3"):
        PCAEmbedder().fit([survey.read_rows(np.arange(2), FIELDS)])


def test_feature_matrices():
    m = radial_matrix(16, 8)
    assert np.allclose(m.sum(0), 1.0) and (m > 0).sum(1).max() == 1  # each pixel in one annulus
    p = pool_matrix(30, 16)  # 30 px -> 15 cells of 2 px, centred
    assert p.shape == (15, 30) and np.allclose(p.sum(1), 1.0)
