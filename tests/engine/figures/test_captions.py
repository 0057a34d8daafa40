"""Long object ids (real SDSS names) fit the caption of their panel in the object grids."""

import numpy as np
import pytest

from fmb_engine.figures import objects
from fmb_engine.figures.panels import ID_CHARS, short_id

LONG_IDS = ["sdss_J220248.31+123656.3", "sdss_J000001.00-000001.0", "hpx27247_coadd_0", "x" * 64]


def test_short_id_keeps_short_ids_and_both_ends_of_long_ones():
    assert short_id("hpx27247_coadd_0") == "hpx27247_coadd_0"
    assert short_id("a" * ID_CHARS) == "a" * ID_CHARS
    cut = short_id("sdss_J220248.31+123656.3")
    assert cut == "sdss_J2…123656.3" and len(cut) == ID_CHARS
    assert len(short_id("x" * 64)) == ID_CHARS and len(short_id("abcdefgh", 5)) == 5


@pytest.fixture
def long_id_survey(tmp_path, small_survey):
    """Four objects of the mock survey under long real-world ids."""
    from fmb_engine.survey.store import SurveyReader, SurveyWriter

    with SurveyReader(small_survey) as src:
        b = src.read_rows(np.arange(len(LONG_IDS)))
        table = src.table().head(len(LONG_IDS))
        wave = src.wavelength
    cols = {c: table[c].to_numpy() for c in ("targetid", "ra", "dec", "redshift", "split", "logM", "logSFR",
                                              "anomaly_class", "has_spectrum")}
    cols["object_id"] = np.asarray(LONG_IDS)
    out = tmp_path / "long.h5"
    with SurveyWriter(out, image_size=32, wavelength=wave, rgb=False, generator="test", params={}) as w:
        w.append(cols, b.images, b.flux, b.ivar, b.mask, has_bands=np.ones((len(LONG_IDS), 4), bool))
    return out


@pytest.mark.parametrize("draw", ["outlier", "neighbour"])
def test_captions_stay_inside_their_image_panel(long_id_survey, tmp_path, monkeypatch, draw):
    import pandas as pd

    drawn = []
    monkeypatch.setattr(objects, "save", lambda fig, path: drawn.append(fig) or [path])
    if draw == "outlier":
        ranked = pd.DataFrame({"object_id": LONG_IDS, "rank": [1, 2, 3, 4], "score": [9.5, 8.25, 7.0, 6.5]})
        objects.outlier_grid(long_id_survey, ranked, tmp_path / "grid")
    else:
        neighbours = pd.DataFrame({"model": "cca", "modality": "image", "object_id": LONG_IDS[0],
                                   "neighbour": [1, 2, 3], "neighbour_id": LONG_IDS[1:], "similarity": [0.9, 0.8, 0.7]})
        objects.neighbour_grid(long_id_survey, neighbours, [LONG_IDS[0]], tmp_path / "neighbours")
    (fig,) = drawn
    fig.canvas.draw()  # applies the image panels' equal aspect
    renderer = fig.canvas.get_renderer()
    captions = [(ax, t) for ax in fig.axes if ax.images for t in ax.texts]
    assert len(captions) == len(LONG_IDS)
    for ax, text in captions:
        assert {short_id(i) for i in LONG_IDS} & set(text.get_text().split("\n"))
        box, panel = text.get_bbox_patch().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.x1 <= panel.x1, f"{text.get_text()!r} runs {box.x1 - panel.x1:.1f} px past its panel"
