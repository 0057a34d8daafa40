"""Detection degrades per system: a survey with few usable spectra still gets its image scores."""

import json
import shutil

import h5py
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmb_engine.config import load
from fmb_engine.detect.run import MIN_ROWS, detect
from fmb_engine.embed.run import embed_survey
from fmb_engine.errors import DataError

FAST = {"epochs": 2, "iforest_trees": 50}
USABLE_SPECTRA = 6  # below MIN_ROWS: every spectrum system must be skipped


@pytest.fixture(scope="module")
def few_spectra(tmp_path_factory, small_survey):
    """The 120-object mock with every spectrum but six fully masked (ivar = 0), embedded and detected."""
    from fmb_engine.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("degrade") / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    with h5py.File(survey, "r+") as f:
        f["spectra/ivar"][USABLE_SPECTRA:] = 0.0
    for model in ("cca", "pca"):
        embed_survey(ws, survey, model, load(f"embed.{model}", ws))
    result = detect(ws, load("detect", ws, cli=FAST))
    return ws, result


def test_spectrum_systems_are_skipped_and_recorded_images_are_scored(few_spectra):
    assert USABLE_SPECTRA < MIN_ROWS
    ws, result = few_spectra
    systems = pd.read_parquet(ws.folder("scores") / "systems.parquet")
    assert len(systems) == 120
    for model in ("cca", "pca"):
        for method in ("flow", "iforest", "knn"):
            assert systems[f"rank:{model}/image/{method}"].notna().sum() > USABLE_SPECTRA
    assert not [s for s in result.summary["systems"] if "/spectrum/" in s or "/joint/" in s or "/cross/" in s
                or "/fused/" in s]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["status"] == "completed"
    skipped = {s["system"]: s["reason"] for s in manifest["skipped_systems"]}
    assert skipped == {s["system"]: s["reason"] for s in result.summary["skipped"]}
    for model in ("cca", "pca"):
        for method in ("flow", "iforest", "knn"):
            reason = skipped[f"{model}/spectrum/{method}"]
            assert f"only {USABLE_SPECTRA} usable spectrum rows" in reason and f">= {MIN_ROWS}" in reason
        assert f"only {USABLE_SPECTRA} usable objects with both image and spectrum" in skipped[f"{model}/cross/mismatch"]
        assert "no spectrum flow, no mismatch scores" in skipped[f"{model}/fused/fisher"]
    assert "cca/joint/flow" in skipped  # the joint vector needs both modalities
    assert any("skipped pca/spectrum/flow, pca/spectrum/iforest, pca/spectrum/knn" in w for w in manifest["warnings"])
    # the skipped systems leave header-only tables and no stale model or top-k file
    scores = ws.folder("scores")
    assert pd.read_csv(scores / "cosine_scores_pca.csv").empty
    assert pd.read_csv(scores / "multimodal" / "all_scores.csv").empty
    assert not (scores / "models" / "pca" / "flow_spectrum.npz").exists()
    assert (scores / "models" / "pca" / "flow_image.npz").is_file()
    assert not (scores / "multimodal" / "ranked" / "top200_pca_fisher.csv").exists()


def test_the_run_fails_only_when_no_system_can_be_scored(few_spectra):
    ws, _ = few_spectra
    with pytest.raises(DataError, match=r"no system could be scored: cca/cross/mismatch: only 6 usable objects"):
        detect(ws, load("detect", ws, cli=FAST), parts=("mismatch",))
    failed = sorted(ws.folder("runs").glob("*-detect.mismatch-*.json"))
    assert json.loads(failed[-1].read_text())["status"] == "failed"


def test_cli_prints_the_skipped_systems_and_fails_when_nothing_is_scored(few_spectra):
    from fmb_engine.cli.main import app

    ws, _ = few_spectra
    env = {"COLUMNS": "300", "NO_COLOR": "1", "FMB_WORKSPACE": None}
    ok = CliRunner().invoke(app, ["detect", "flows", "-m", "pca", "-w", str(ws.root)], env=env)
    assert ok.exit_code == 0, ok.output
    assert ("skipped pca/spectrum/flow, pca/spectrum/iforest, pca/spectrum/knn: only 6 usable spectrum rows "
            f"(a system needs >= {MIN_ROWS})") in " ".join(ok.output.split())  # the console may wrap
    failed = CliRunner().invoke(app, ["detect", "fuse", "-m", "pca", "-w", str(ws.root)], env=env)
    assert failed.exit_code != 0  # fmb-engine's main() prints a DataError as one line, no traceback
    assert isinstance(failed.exception, DataError) and "no system could be scored" in str(failed.exception)
