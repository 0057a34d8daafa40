import numpy as np
import pytest

from fmb_engine.config import load
from fmb_engine.survey import mock
from fmb_engine.survey.bands import ANOMALY_CLASSES, EMISSION_LINES, wavelength_grid
from fmb_engine.survey.stages import make_mock
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace


def test_every_class_is_present_with_the_asked_fraction():
    pop = mock.draw_population(5000, seed=3, anomaly_fraction=0.03, train_fraction=0.8)
    labels = pop.anomaly[pop.anomaly != ""]
    assert len(labels) == 150
    assert set(labels) == set(ANOMALY_CLASSES)
    counts = np.unique(labels, return_counts=True)[1]
    assert counts.max() - counts.min() <= 1  # balanced over classes
    assert abs((pop.split == "train").mean() - 0.8) < 1e-3


def test_tiny_surveys_still_get_every_class():
    assert mock.anomaly_count(200, 0.02) == len(ANOMALY_CLASSES)
    assert mock.anomaly_count(200, 0.0) == 0


def test_emission_lines_land_at_redshifted_rest_wavelengths():
    pop = mock.draw_population(400, seed=1, anomaly_fraction=0.0, train_fraction=0.8)
    rows = np.flatnonzero(~pop.quiescent & (pop.z < 0.35) & (pop.logSFR > 0.3))[:5]
    assert rows.size >= 3
    renderer = mock.MockRenderer(pop, 32, seed=1)
    model = renderer._spectrum_model(rows)
    wave = wavelength_grid()
    for k, row in enumerate(rows):
        expected = EMISSION_LINES["Ha"] * (1 + pop.z[row])
        window = np.abs(wave - expected) < 30
        peak = wave[window][np.argmax(model[k, window])]
        assert abs(peak - expected) <= 1.6  # within two 0.8 A pixels


def test_quiescent_galaxies_have_a_stronger_4000A_break_and_redder_colours():
    pop = mock.draw_population(2000, seed=2, anomaly_fraction=0.0, train_fraction=0.8)
    rows = np.flatnonzero((pop.z > 0.3) & (pop.z < 0.6))
    renderer = mock.MockRenderer(pop, 32, seed=2)
    model = renderer._spectrum_model(rows)
    wave = wavelength_grid()
    rest = wave[None] / (1 + pop.z[rows, None])
    red = np.where((rest > 4050) & (rest < 4250), model, np.nan)
    blue = np.where((rest > 3750) & (rest < 3950), model, np.nan)
    d4000 = np.nanmean(red, 1) / np.nanmean(blue, 1)
    q = pop.quiescent[rows]
    assert np.median(d4000[q]) > np.median(d4000[~q]) + 0.2
    colours = mock.band_fluxes(pop, rows)
    h_over_vis = colours[:, 3] / colours[:, 0]
    assert np.median(h_over_vis[q]) > np.median(h_over_vis[~q])


def test_cross_match_objects_show_another_galaxys_spectrum():
    pop = mock.draw_population(1000, seed=4, anomaly_fraction=0.05, train_fraction=0.8)
    rows = np.flatnonzero(pop.anomaly == "cross_match")
    assert rows.size and (pop.donor[rows] >= 0).all()
    cols = mock.catalogue_columns(pop, rows, seed=4)
    assert np.allclose(cols["redshift"], pop.z[pop.donor[rows]])
    assert (np.abs(pop.z[rows] - pop.z[pop.donor[rows]]) > 0.4).all()


def test_same_seed_same_file_whatever_the_worker_count(tmp_path):
    digests = []
    for k, workers in enumerate((-1, 1)):
        ws = Workspace.init(tmp_path / f"w{k}")
        cfg = load("mock", cli={"objects": 90, "image_size": 16, "batch_size": 20, "workers": workers})
        digests.append(make_mock(ws, cfg).summary["digest"])
    assert digests[0] == digests[1]
    ws = Workspace.init(tmp_path / "w3")
    other = make_mock(ws, load("mock", cli={"objects": 90, "image_size": 16, "batch_size": 20, "workers": -1, "seed": 5}))
    assert other.summary["digest"] != digests[0]


def test_injected_artefacts_change_the_pixels_they_claim(small_survey):
    with SurveyReader(small_survey) as r:
        table = r.table()
        normal = r.read_rows(np.flatnonzero(table["anomaly_class"] == "")[:40])
        noise_vis = np.std(normal.images[:, 0, :3, :3])

        def first(cls):
            return r.get(int(np.flatnonzero(table["anomaly_class"] == cls)[0]))

        cr = first("cosmic_rays")
        assert cr.images[0].max() > 30 * noise_vis
        dead = first("dead_segment")
        zero_run = np.diff(np.flatnonzero(np.r_[True, dead.flux != 0, True])).max() - 1
        assert zero_run >= 300
        assert (dead.ivar[dead.flux == 0] > 0).any()  # not flagged: that is the artefact
        assert np.isfinite(normal.flux).all() and (normal.ivar[normal.mask] == 0).all()


@pytest.mark.parametrize("cls", ["broad_line_agn", "extreme_emission_line"])
def test_physical_rarities_have_strong_lines(small_survey, cls):
    with SurveyReader(small_survey) as r:
        table = r.table()
        obj = r.get(int(np.flatnonzero(table["anomaly_class"] == cls)[0]))
        normal = r.read_rows(np.flatnonzero(table["anomaly_class"] == "")[:30])
    assert np.percentile(obj.flux, 99.9) > np.median(np.percentile(normal.flux, 99.9, axis=1))
