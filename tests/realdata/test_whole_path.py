"""The whole path on real spectra and images: import -> info -> show -> embed -> detect -> figures -> TUI.

The fixture (see build.py) is 45 objects: 25 real spectra (10 with usable pixels;
DESI's sky and unassigned fibres have none) and 20 image-only objects, every one
with its own Hubble eXtreme Deep Field stamp. The CLI runs in-process through Typer's
CliRunner (torch and the rest load once for all commands); the TUI through Textual's Pilot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from .build import IMAGE_ONLY, MissingSource, real_spectra, usable_spectra, write_dataset

pytestmark = pytest.mark.slow

SURVEY = "real"
FAST_DETECT = "detect:\n  epochs: 2\n  iforest_trees: 50\n"


def _fmb(*args: str) -> str:
    from fmb_engine.cli.main import app

    env = {"COLUMNS": "200", "NO_COLOR": "1", "FMB_WORKSPACE": None}  # None: unset for the command
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exit_code != 0:
        raise AssertionError(f"fmb-engine {' '.join(args)} exited {result.exit_code}:\n{result.output}\n{result.exception!r}")
    return result.output


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    folder = tmp_path_factory.mktemp("realdata") / "dataset"
    try:
        ids = write_dataset(folder)
    except MissingSource as exc:  # the dev extra carries specutils and scikit-image
        pytest.skip(str(exc))
    return folder, ids


@pytest.fixture(scope="module")
def workspace(dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A workspace taken through every CLI stage once; each stage's output is kept for the tests."""
    folder, _ = dataset
    root = tmp_path_factory.mktemp("realdata-ws") / "ws"
    task = root.parent / "task.yaml"
    task.write_text(FAST_DETECT)
    ws = str(root)
    out: dict[str, object] = {"root": root}
    _fmb("init", ws)
    out["import"] = _fmb("data", "import", str(folder), "--name", SURVEY, "--image-size", "32", "-w", ws)
    out["info"] = _fmb("data", "info", "-s", SURVEY, "-w", ws)
    out["show"] = _fmb("data", "show", "sdss_J220248.31+123656.3", "-s", SURVEY, "-w", ws)
    out["embed"] = [_fmb("embed", model, "--survey", SURVEY, "-w", ws) for model in ("pca", "cca")]
    out["detect"] = _fmb("detect", "all", "-c", str(task), "-w", ws)
    out["grid"] = _fmb("figures", "outlier-grid", "--system", "cca/fused/geo", "--top-k", "6", "--survey", SURVEY, "-w", ws)
    out["object"] = _fmb("figures", "object", "hpx27247_coadd_0", "--survey", SURVEY, "-w", ws)
    return out


def test_fixture_is_the_real_files_packed_deterministically(dataset, tmp_path):
    folder, ids = dataset
    spectra = real_spectra()
    assert len(spectra) == 25
    assert sum(len(v) for v in ids.values()) == len(spectra) + IMAGE_ONLY
    # DESI TARGETIDs and redrock redshifts come through from the files
    by_id = {s.object_id: s for s in spectra}
    assert by_id["tile80613_coadd_0"].targetid == 39633345008634465
    assert by_id["tile80613_coadd_0"].redshift == pytest.approx(0.36874, abs=1e-5)
    assert by_id["hpx26065_coadd_2"].targetid == 39627866878511337
    # the spliced DESI arms keep DESI's own pixels: strictly increasing, 3600-9824 A
    wave = by_id["hpx26065_coadd_2"].wavelength
    assert wave[0] == 3600.0 and wave[-1] == pytest.approx(9824.0) and np.all(np.diff(wave) > 0)
    assert usable_spectra() == {
        "tile169_coadd_4", "tile169_spectra_4", "hpx26065_coadd_2", "hpx26065_coadd_4", "hpx26065_spectra_2",
        "tile80613_coadd_0", "hpx27247_coadd_0", "sdss_J220248.31+123656.3", "mage_UM184", "esi_PH957"}
    again = write_dataset(tmp_path / "again")
    assert again == ids
    for split in ids:
        assert (folder / f"{split}.parquet").read_bytes() == (tmp_path / "again" / f"{split}.parquet").read_bytes()


def test_import_info_and_show(workspace, dataset):
    from fmb_engine.survey.store import SurveyReader

    _, ids = dataset
    root: Path = workspace["root"]  # type: ignore[assignment]
    out = workspace["import"]
    # 15 DESI fibres have no pixel with ivar > 0, 20 objects have no spectrum at all: kept and flagged
    assert "kept, flagged: 15 x spectrum: every pixel masked" in out
    assert "kept, flagged: 20 x spectrum: missing" in out
    assert "dropped:" not in out
    with SurveyReader(root / "survey" / f"{SURVEY}.h5") as reader:
        assert reader.n_objects == 45
        assert sorted(reader.object_ids) == sorted(ids["train"] + ids["test"])
        has_spectrum = dict(zip(reader.object_ids, reader.column("has_spectrum"), strict=True))
        assert {i for i, has in has_spectrum.items() if has} == usable_spectra()
        obj = reader.get("tile80613_coadd_0")
        assert obj.meta["redshift"] == pytest.approx(0.36874, abs=1e-5) and obj.meta["targetid"] == 39633345008634465
    info = workspace["info"]
    assert "train: 33" in info and "test: 12" in info and "missing spectra  35" in info
    assert "0.007 - 0.369" in info  # the two redrock redshifts; the rest have none
    assert "sdss_J220248.31+123656.3" in workspace["show"]
    assert (root / "figures" / "object_sdss_J220248.31+123656.3.png").stat().st_size > 10_000


def test_embed_detect_and_figures(workspace):
    root: Path = workspace["root"]  # type: ignore[assignment]
    for text in workspace["embed"]:
        assert "(45 objects; image: 45 embedded; spectrum: 10 embedded, 35 without a usable spectrum" in text
    assert "over 45 objects" in workspace["detect"]
    assert "skipped" not in workspace["detect"]  # ten usable spectra: every system is scored
    systems = pd.read_parquet(root / "scores" / "systems.parquet")
    assert len(systems) == 45
    # every object has an image score; only the ten usable spectra have spectrum, mismatch and fused ranks
    for model in ("pca", "cca"):
        assert systems[f"rank:{model}/image/flow"].notna().sum() == 45
        for system in (f"{model}/spectrum/flow", f"{model}/cross/mismatch", f"{model}/fused/geo"):
            ranked = systems.loc[systems[f"rank:{system}"].notna(), "object_id"]
            assert set(ranked) == usable_spectra(), system
            ranks = systems[f"rank:{system}"].dropna().astype(int)
            scores = systems.loc[ranks.index, f"score:{system}"]
            # 1 = most anomalous; equal scores share the smallest rank of their group (docs/science.md, ties)
            assert ranks.tolist() == [1 + int((scores > s).sum()) for s in scores], system
    for name in ("outliers/outliers_cca_fused_geo.png", "outliers/outliers_cca_fused_geo.pdf",
                 "objects/object_hpx27247_coadd_0.png"):
        assert (root / "figures" / name).stat().st_size > 10_000, name


@pytest.mark.asyncio
async def test_tui_anomalies_and_object_show_the_real_objects(workspace):
    from fmb_engine.config.tui import TuiConfig
    from fmb_engine.workspace import Workspace
    from fmb_tui.app import FMBApp
    from fmb_tui.screens.anomalies import AnomaliesScreen
    from fmb_tui.screens.object import ObjectScreen
    from fmb_tui.widgets.ranking_table import RankingTable

    from tui.conftest import settle  # tests/ is on sys.path (rootdir conftest)
    from tui.screen_text import screen_text

    root: Path = workspace["root"]  # type: ignore[assignment]
    systems = pd.read_parquet(root / "scores" / "systems.parquet")
    system = "cca/fused/geo"
    top = systems.sort_values(f"rank:{system}")["object_id"].iloc[0]
    app = FMBApp(Workspace(root), TuiConfig(), start="anomalies", system=system)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AnomaliesScreen) and screen.spec.system == system
        table = screen.query_one(RankingTable)
        assert table.n_rows == 45
        text = screen_text(app)
        assert top in text
        assert "z=nan" not in text  # most real rows have no redshift: the preview says z=?
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ObjectScreen) and app.screen.object_id == top
        text = screen_text(app)
        assert top in text and f"rank 1 in {system}" in text
        assert "Traceback" not in text
        # an image-only object (no spectrum in the dataset) opens with its image and a plain message
        app.push_screen(ObjectScreen("xdf_0"))
        await settle(pilot)
        text = screen_text(app)
        assert "xdf_0" in text and "no spectrum for this object" in text and "Traceback" not in text


def test_import_dropping_incomplete_rows_keeps_the_usable_spectra(dataset, tmp_path):
    from fmb_engine.survey.store import SurveyReader

    folder, _ = dataset
    ws = tmp_path / "ws"
    _fmb("init", str(ws))
    out = _fmb("data", "import", str(folder), "--name", "complete", "--missing", "drop", "-w", str(ws))
    assert "dropped: 15 x spectrum: every pixel masked" in out and "dropped: 20 x spectrum: missing" in out
    with SurveyReader(ws / "survey" / "complete.h5") as reader:
        assert set(reader.object_ids) == usable_spectra()
        assert bool(np.all(reader.column("has_spectrum")))
