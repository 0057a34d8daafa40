"""UMAP figure's thumbnail grid: the object nearest each occupied cell's centre, read alone from the survey."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from fmb_engine.errors import DataError
from fmb_engine.figures.umap import (
    Thumbnails,
    grid_cells,
    mosaic,
    pick_representatives,
    read_thumbnails,
    umap_figure,
)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_grid_picks_the_point_nearest_each_occupied_cell_centre():
    # box [0, 4] x [0, 4], grid 2 -> cells of 2 x 2, centres (1, 1), (3, 1), (1, 3), (3, 3)
    x = np.array([0.0, 0.9, 1.6, 4.0, 3.0, 3.2, 2.8, 0.5, np.nan])
    y = np.array([0.0, 1.2, 0.2, 4.0, 3.0, 3.0, 3.0, 3.9, 1.0])
    cells = grid_cells(x, y, 2)
    assert cells[["row", "col"]].values.tolist() == [[0, 0], [1, 0], [1, 1]]  # cell (0, 1) is empty: absent
    assert cells["index"].tolist() == [1, 7, 4]  # (0.9, 1.2) nearest (1, 1); (3, 3) exact; lone point
    assert cells["count"].tolist() == [3, 1, 4]  # the NaN point counts nowhere; (4, 4) joins the last cell


def test_ties_go_to_the_earlier_object_and_ineligible_points_only_span_the_box():
    # cell units = x on a [0, 2] box; centres 0.5 and 1.5; 0.25 / 0.75 and 1.0 / 2.0 are exact ties
    x = np.array([0.0, 1.0, 0.25, 0.75, 2.0])
    cells = grid_cells(x, np.zeros(5), 2)  # zero-height box: every point at mid-height
    assert cells["index"].tolist() == [2, 1] and cells["row"].nunique() == 1
    x2 = np.array([1.5, 0.5, 2.0, 0.0])
    assert grid_cells(x2, np.zeros(4), 2)["index"].tolist() == [1, 0]
    eligible = np.array([True, False, False, False])
    cells = grid_cells(x2, np.zeros(4), 2, eligible)
    assert cells["index"].tolist() == [0] and cells["count"].tolist() == [2]  # cell 0: nobody eligible -> left out
    with pytest.raises(DataError):
        grid_cells(x2, x2, 0)
    assert grid_cells(np.array([np.nan]), np.array([1.0]), 3).empty


def test_representatives_per_panel_in_frame_order():
    coords = pd.DataFrame({
        "object_id": ["a", "b", "c", "a", "b", "c"], "model": ["m"] * 3 + ["n"] * 3, "modality": "joint",
        "x": [0.0, 1.0, 2.0, 2.0, 1.0, 0.0], "y": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]})
    cells = pick_representatives(coords, 1)  # one cell: centre x = 1
    assert cells[["model", "object_id"]].values.tolist() == [["m", "b"], ["n", "b"]]
    cells = pick_representatives(coords, 2, known=["a", "c"])
    assert cells[["model", "col", "object_id"]].values.tolist() == [["m", 0, "a"], ["m", 1, "c"], ["n", 0, "c"], ["n", 1, "a"]]


def test_mosaic_places_each_thumbnail_in_its_cell_and_leaves_empty_cells_white():
    images = {"r": np.full((8, 8, 3), (200, 0, 0), np.uint8), "g": np.full((4, 4, 3), (0, 200, 0), np.uint8)}
    cells = pd.DataFrame({"row": [0, 1], "col": [1, 0], "object_id": ["r", "g"]})
    m = mosaic(cells, images, 2, pixels=20)  # 10 px per cell: 8 px image + 1 px gutter each side
    assert m.shape == (20, 20, 3) and m.dtype == np.uint8
    assert (m[1:9, 11:19] == (200, 0, 0)).all() and (m[11:19, 1:9] == (0, 200, 0)).all()
    assert (m[0:10, 0:10] == 255).all() and (m[10:20, 10:20] == 255).all()  # empty cells
    assert (m[0, 10:20] == 255).all()  # gutter


def _coords(ids):
    rng = np.random.default_rng(0)
    n = len(ids)
    return pd.DataFrame({"object_id": list(ids) * 2, "model": ["cca"] * n + ["pca"] * n, "modality": "joint",
                         "x": rng.normal(size=2 * n), "y": rng.normal(size=2 * n)})


def test_thumbnails_read_only_the_representatives(small_survey, monkeypatch):
    from fmb_engine.survey.store import SurveyReader

    with SurveyReader(small_survey) as r:
        ids = list(r.object_ids[:40])
        assert r.has_rgb
        rgb_of = {i: r.get(i).rgb for i in ids}
    coords = pd.concat([_coords(ids), pd.DataFrame({"object_id": ["nobody"], "model": "cca", "modality": "joint",
                                                    "x": [0.0], "y": [0.0]})], ignore_index=True)
    seen = []
    original = SurveyReader.read_rows

    def spy(self, rows, fields=("images", "spectra", "rgb")):
        seen.append((np.asarray(rows).copy(), tuple(fields)))
        return original(self, rows, fields)

    monkeypatch.setattr(SurveyReader, "read_rows", spy)
    t = read_thumbnails(small_survey, coords, 3)
    assert t.source == "rgb" and "nobody" not in set(t.cells["object_id"])
    assert len(seen) == 1 and seen[0][1] == ("rgb",)
    assert len(seen[0][0]) == len(set(t.cells["object_id"])) <= 18
    assert set(t.images) == set(t.cells["object_id"])
    assert all(np.array_equal(t.images[i], rgb_of[i]) for i in t.images)


def test_missing_rgb_falls_back_to_the_bands(tmp_path, small_survey):
    from fmb_engine.config import load
    from fmb_engine.survey.composite import asinh_rgb
    from fmb_engine.survey.stages import make_mock
    from fmb_engine.survey.store import SurveyReader
    from fmb_engine.workspace import Workspace

    params = {"objects": 20, "image_size": 16, "batch_size": 20, "workers": -1}
    surveys = {}
    for rgb in (True, False):
        ws = Workspace.init(tmp_path / f"ws{rgb}")
        surveys[rgb] = make_mock(ws, load("mock", cli=params | {"rgb": rgb})).outputs["survey"]
    with SurveyReader(surveys[False]) as r:
        assert not r.has_rgb
        ids = list(r.object_ids)
        bands = {i: r.get(i).images for i in ids}
    coords = _coords(ids)
    plain, stored = read_thumbnails(surveys[False], coords, 2), read_thumbnails(surveys[True], coords, 2)
    assert (plain.source, stored.source) == ("bands", "rgb")
    assert plain.cells.equals(stored.cells) and len(plain.images) > 0
    for oid, img in plain.images.items():
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8
        assert np.array_equal(img, asinh_rgb(bands[oid])) and np.array_equal(img, stored.images[oid])


def test_figure_with_thumbnails_is_written_and_deterministic(tmp_path):
    ids = [f"o{i}" for i in range(30)]
    coords = pd.concat([_coords(ids), _coords(ids).assign(modality="image", model="cca")], ignore_index=True)
    catalog = pd.DataFrame({"redshift": np.linspace(0, 1, 30)}, index=pd.Index(ids, name="object_id"))
    rng = np.random.default_rng(1)
    images = {i: rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for i in ids}
    thumbs = Thumbnails(4, pick_representatives(coords, 4), images)
    a = umap_figure(coords, catalog, "redshift", tmp_path / "a", thumbs)
    b = umap_figure(coords, catalog, "redshift", tmp_path / "b", thumbs)
    assert [p.suffix for p in a] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in a)
    assert [_sha(p) for p in a] == [_sha(p) for p in b]
    plain = umap_figure(coords, catalog, "redshift", tmp_path / "plain")
    assert _sha(plain[0]) != _sha(a[0])


def test_door_and_cli_draw_the_grid(analysed):
    from typer.testing import CliRunner

    from fmb_engine.analyze.run import analyze_umap
    from fmb_engine.cli.figures import app
    from fmb_engine.config import load
    from fmb_engine.figures.run import umap_figures

    ws, survey = analysed
    analyze_umap(ws, load("analyze", ws, cli={"models": ["pca"]}),
                 projector=lambda x, p: np.asarray(x[:, :2], np.float32))
    out = ws.root / "figures" / "umap_thumbs"
    result = umap_figures(ws, survey, ["redshift"], out, thumbnails=5)
    files = result.summary["files"]
    assert [p.name for p in files] == ["umap_redshift.png", "umap_redshift.pdf"]
    options = json.loads(result.manifest.read_text())["config"]["values"]
    assert {"thumbnails": 5, "thumbnail_source": "rgb"}.items() <= options.items()
    plain = umap_figures(ws, survey, ["redshift"], out / "plain", thumbnails=0)
    default = umap_figures(ws, survey, ["redshift"], out / "default")  # analyze.umap_thumbnails: 25
    reference = umap_figures(ws, survey, ["redshift"], out / "25", thumbnails=25)
    assert _sha(default.summary["files"][0]) == _sha(reference.summary["files"][0])
    assert len({_sha(r.summary["files"][0]) for r in (result, plain, default)}) == 3
    res = CliRunner().invoke(app, ["umap", "--thumbnails", "5", "--out", str(out / "cli"), "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert _sha(out / "cli" / "umap_redshift.png") == _sha(files[0])
