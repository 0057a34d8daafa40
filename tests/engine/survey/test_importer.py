import json

import numpy as np
import pytest
from astropy.table import Table

from fmb_engine.config import load
from fmb_engine.errors import DataError
from fmb_engine.survey.importers import euclid_desi
from fmb_engine.survey.importers.euclid_desi import import_dataset
from fmb_engine.survey.importers.rows import spectrum_to_grid
from fmb_engine.survey.bands import wavelength_grid
from fmb_engine.survey.store import SurveyReader

from .hf_fixture import BAD_ROWS, write_parquet, write_save_to_disk

CFG = {"image_size": 24, "batch_size": 4}


def run(ws, src, **kw):
    result = import_dataset(ws, src, load("import", cli=CFG | kw))
    return result, json.loads(result.manifest.read_text())


def test_save_to_disk_import_counts_every_bad_row_and_keeps_flagged_ones(workspace, tmp_path):
    src = write_save_to_disk(tmp_path / "hf", n=12)
    result, manifest = run(workspace, src)
    assert manifest["dropped"] == {"object_id: missing (and no targetid)": 2, "object_id: duplicate of an earlier row": 2}
    counts = manifest["counts"]
    assert counts["kept_with:NISP_J_image: missing"] == 2
    assert counts["kept_with:spectrum: missing"] == 2
    assert counts["kept_with:spectrum: flux, wavelength and error lengths differ"] == 2
    assert counts["masked_input_pixels"] == 2 * 10  # the zero-error pixels
    kept = manifest["rows"]["kept"]["NISP_J_image: missing"]
    assert sorted(kept["examples"]) == ["2700000000000000001", "2700000000000010001"] and kept["count"] == 2
    assert manifest["rows"]["dropped"]["object_id: missing (and no targetid)"]["examples"] == [
        "row 4 of train/data-00000-of-00001.arrow", "row 4 of test/data-00000-of-00001.arrow"]
    zero_err = manifest["rows"]["repaired"]["spectrum.error: zero, negative or non-finite values, masked"]
    assert zero_err["count"] == 2 and "2700000000000000003" in zero_err["examples"]
    assert counts["rows_read"] == 24 and counts["objects"] == 20
    with SurveyReader(result.outputs["survey"]) as r:
        assert r.splits() == {"train": 10, "test": 10}
        table = r.table()
        missing_band = r.get(int(np.flatnonzero(table["object_id"] == "2700000000000000001")[0]))
        assert list(missing_band.has_bands) == [True, True, False, True]
        assert np.isnan(missing_band.images[2]).all()
        zero_err = r.get("2700000000000000003")
        assert np.isfinite(zero_err.ivar).all()
        assert zero_err.mask[100:110].all() and (zero_err.ivar[100:110] == 0).all()
        no_spec = r.get("2700000000000000002")
        assert not no_spec.meta["has_spectrum"] and no_spec.mask.all()
        ok = r.get("2700000000000000000")
        assert ok.rgb.shape == (24, 24, 3) and ok.images.shape == (4, 24, 24)
        assert np.allclose(ok.ivar[~ok.mask], 100.0)


def test_parquet_import_with_drop_policy(workspace, tmp_path):
    src = write_parquet(tmp_path / "pq", n=12, splits=("train",))
    result, manifest = run(workspace, src, missing="drop", name="pq")
    assert manifest["dropped"]["NISP_J_image: missing"] == 1
    assert manifest["dropped"]["spectrum: missing"] == 1
    assert manifest["dropped"]["spectrum: flux, wavelength and error lengths differ"] == 1
    assert result.summary["objects"] == 12 - (len(BAD_ROWS) - 1)  # the zero-error row stays: only its pixels are masked


def test_catalogue_join_fills_physical_parameters(workspace, tmp_path):
    src = write_save_to_disk(tmp_path / "hf", n=8, splits=("train",), bad=False)
    tids = 39_627_000_000_000_000 + np.arange(6)
    Table({"TARGETID": tids, "Z": np.full(6, 0.5), "LOGM": np.arange(6) + 9.0, "LOGSFR": np.zeros(6)}).write(tmp_path / "cat.fits")
    result, manifest = run(workspace, src, catalog=str(tmp_path / "cat.fits"))
    assert manifest["counts"]["catalogue_matched"] == 6 and manifest["counts"]["catalogue_unmatched"] == 2
    with SurveyReader(result.outputs["survey"]) as r:
        t = r.table().set_index("object_id")
    assert t.loc["2700000000000000004", "logM"] == 13.0
    assert np.isnan(t.loc["2700000000000000007", "logM"])


def test_interrupted_import_resumes_without_duplicates(workspace, tmp_path, monkeypatch):
    src = write_save_to_disk(tmp_path / "hf", n=12)
    real = euclid_desi.convert_batch
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(euclid_desi, "convert_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(workspace, src)
    monkeypatch.setattr(euclid_desi, "convert_batch", real)
    result, manifest = run(workspace, src)
    fresh, _ = run(workspace, src, name="fresh")
    assert manifest["counts"]["objects"] == 20
    assert manifest["dropped"] == {"object_id: missing (and no targetid)": 2, "object_id: duplicate of an earlier row": 2}
    with SurveyReader(result.outputs["survey"]) as a, SurveyReader(fresh.outputs["survey"]) as b:
        assert list(a.object_ids) == list(b.object_ids)


def test_missing_source_and_columns_are_clear_errors(workspace, tmp_path):
    with pytest.raises(DataError, match="dataset source not found"):
        run(workspace, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset found"):
        run(workspace, tmp_path / "empty")


def test_spectrum_resampling_masks_uncovered_and_bad_pixels():
    grid = wavelength_grid()
    wave = np.linspace(4000, 9000, 3000)
    flux = np.sin(wave / 300.0)
    err = np.full_like(wave, 0.5)
    err[1000] = 0.0
    f, ivar, mask, n_bad = spectrum_to_grid(flux, wave, err, grid)
    assert n_bad == 1
    assert mask[grid < 4000].all() and mask[grid > 9000].all()
    inside = (grid > 4100) & (grid < 8900) & ~mask
    assert np.allclose(f[inside], np.sin(grid[inside] / 300.0), atol=1e-3)
    assert np.allclose(ivar[inside], 4.0)
    assert np.isfinite(ivar).all() and (ivar[mask] == 0).all()
