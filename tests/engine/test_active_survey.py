"""The active survey (general.survey), negative object ids, and replacing a survey later stages depend on.

Through the real CLI (a subprocess per command, real exit codes), like a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from fmb_engine.errors import WorkspaceError
from fmb_engine.survey.active import record_active, resolve_survey
from fmb_engine.workspace import Workspace


def fmb(*args, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"fmb-engine {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _workspace(tmp_path: Path, name: str = "small", objects: int = 40) -> Path:
    fmb("init", "ws", cwd=tmp_path)
    ws = tmp_path / "ws"
    fmb("data", "mock", "--objects", objects, "--image-size", 16, "--name", name, cwd=ws)
    return ws


def _negative_ids(survey: Path) -> list[str]:
    """Rewrite the survey's object ids as negative numbers, like Euclid MER ids can be."""
    with h5py.File(survey, "r+") as f:
        column = f["objects/object_id"]
        ids = [f"-{1000 + i}" for i in range(column.shape[0])]
        column[...] = np.array([i.encode() for i in ids], dtype=column.dtype)
    return ids


def test_mock_with_a_name_becomes_the_active_survey_of_every_command(tmp_path):
    ws = _workspace(tmp_path)
    assert yaml.safe_load((ws / "fmb.yaml").read_text())["general"]["survey"] == "small"
    assert "# The active survey" in (ws / "fmb.yaml").read_text()  # the user's comments stay
    assert not (ws / "survey" / "mock.h5").exists()
    info = fmb("data", "info", cwd=ws).stdout
    assert str(ws / "survey" / "small.h5") in info and "40" in info
    shown = fmb("data", "show", "mock42-0000003", cwd=ws).stdout
    assert "redshift" in shown
    fmb("figures", "object", "mock42-0000003", cwd=ws)
    assert (ws / "figures" / "objects" / "object_mock42-0000003.png").is_file()
    embedded = fmb("embed", "pca", cwd=ws).stdout
    assert "40 objects" in embedded
    manifest = json.loads(sorted((ws / "runs").glob("*-embed.pca-*.json"))[-1].read_text())
    assert manifest["inputs"]["survey_digest"]

    from fmb_tui.data import WorkspaceData

    assert WorkspaceData(Workspace(ws)).survey_path() == ws / "survey" / "small.h5"


def test_a_missing_configured_survey_is_an_error_naming_the_file_and_the_choices(tmp_path):
    ws = _workspace(tmp_path)
    (ws / "fmb.yaml").write_text("general:\n  survey: gone\n")
    for args in (["data", "info"], ["embed", "pca"], ["evaluate"], ["figures", "object", "x"]):
        proc = fmb(*args, cwd=ws, check=False)
        assert proc.returncode == 1, args
        err = " ".join(proc.stderr.split())
        assert str(ws / "survey" / "gone.h5") in err and "small" in err and "--survey" in err, err
        assert "Traceback" not in proc.stderr
    assert "40" in fmb("data", "info", "-s", "small", cwd=ws).stdout  # the flag still chooses


def test_record_active_edits_fmb_yaml_in_place(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    ws.config_file.write_text("# mine\nmock:\n  objects: 99  # keep\n")
    assert record_active(ws, ws.folder("survey") / "euclid.h5") == "euclid"
    text = ws.config_file.read_text()
    assert "# mine" in text and "# keep" in text
    assert yaml.safe_load(text) == {"mock": {"objects": 99}, "general": {"survey": "euclid"}}
    elsewhere = tmp_path / "other" / "s.h5"
    assert record_active(ws, elsewhere) == str(elsewhere.resolve())  # outside survey/: the absolute path
    assert yaml.safe_load(ws.config_file.read_text())["general"]["survey"] == str(elsewhere.resolve())
    with pytest.raises(WorkspaceError, match="s.h5"):
        resolve_survey(ws, str(elsewhere))


def test_negative_object_ids_need_no_double_dash(tmp_path):
    ws = _workspace(tmp_path)
    ids = _negative_ids(ws / "survey" / "small.h5")
    assert "-1000" in fmb("data", "show", "-1000", cwd=ws).stdout
    fmb("data", "show", "--survey", "small", "-1002", "-o", tmp_path / "q.png", cwd=ws)
    assert (tmp_path / "q.png").is_file()
    fmb("figures", "object", "-1001", cwd=ws)
    assert (ws / "figures" / "objects" / "object_-1001.png").is_file()
    fmb("embed", "pca", cwd=ws)
    fmb("analyze", "similarity", "--id", "-1000", "-k", "3", cwd=ws)
    import pandas as pd

    table = pd.read_parquet(next((ws / "analysis" / "similarity").glob("*.parquet")))
    assert set(table["object_id"]) == {"-1000"} and len(table) == 9  # 3 neighbours x 3 modalities
    missing = fmb("data", "show", "-5", cwd=ws, check=False)
    assert missing.returncode == 1 and "'-5'" in missing.stderr  # an id, not "no such option -5"
    assert ids[0] == "-1000"


def test_replacing_a_survey_with_dependents_needs_force_and_lists_them(tmp_path):
    ws = _workspace(tmp_path)
    survey = ws / "survey" / "small.h5"
    fmb("embed", "pca", cwd=ws)
    again = fmb("data", "mock", "--objects", 40, "--image-size", 16, "--name", "small", cwd=ws)  # same settings
    assert "stale" not in again.stdout
    before = survey.read_bytes()
    proc = fmb("data", "mock", "--objects", 50, "--image-size", 16, "--name", "small", cwd=ws, check=False)
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "embeddings/pca.h5" in err and "--force" in err and "Nothing was changed" in err
    assert survey.read_bytes() == before
    forced = fmb("data", "mock", "--objects", 50, "--image-size", 16, "--name", "small", "--force", cwd=ws)
    assert "stale now" in forced.stdout and str(ws / "embeddings" / "pca.h5") in forced.stdout
    assert "50" in fmb("data", "info", cwd=ws).stdout
    assert "50 objects" in fmb("embed", "pca", cwd=ws).stdout  # the stale run is recomputed, not reused


def test_small_survey_or_no_train_split_is_said_and_recorded(tmp_path):
    ws = _workspace(tmp_path, objects=25)
    out = fmb("embed", "cca", cwd=ws)
    said = " ".join(out.stderr.split()) + " ".join(out.stdout.split())
    assert "20 fit objects allow at most 19 components" in said and "dimension reduced to 19" in said
    manifest = json.loads(sorted((ws / "runs").glob("*-embed.cca-*.json"))[-1].read_text())
    assert any("dimension reduced to 19" in w for w in manifest["warnings"])
    assert any("overfitted" in w for w in manifest["warnings"])
    with h5py.File(ws / "survey" / "small.h5", "r+") as f:
        split = f["objects/split"]
        split[...] = np.array([b"test"] * split.shape[0], dtype=split.dtype)
    fmb("embed", "pca", "--force", cwd=ws)
    manifest = json.loads(sorted((ws / "runs").glob("*-embed.pca-*.json"))[-1].read_text())
    assert any("no 'train' split: fitted on all 25 objects" in w for w in manifest["warnings"])
    assert any("25 fit objects allow at most 24 components" in w for w in manifest["warnings"])


def test_import_records_the_imported_survey_as_active(tmp_path):
    from .survey.hf_fixture import write_save_to_disk

    src = write_save_to_disk(tmp_path / "hf", n=12)
    fmb("init", "ws", cwd=tmp_path)
    ws = tmp_path / "ws"
    out = fmb("data", "import", src, "--name", "q1", "--image-size", 24, cwd=ws).stdout
    assert "active survey: q1" in " ".join(out.split())
    assert yaml.safe_load((ws / "fmb.yaml").read_text())["general"]["survey"] == "q1"
    assert str(ws / "survey" / "q1.h5") in fmb("data", "info", cwd=ws).stdout
    # a re-import over a survey that embeddings were made from needs --force, like `data mock`
    fmb("embed", "pca", cwd=ws)
    before = (ws / "survey" / "q1.h5").read_bytes()
    proc = fmb("data", "import", src, "--name", "q1", "--image-size", 24, cwd=ws, check=False)
    assert proc.returncode == 1 and "Nothing was changed" in " ".join(proc.stderr.split())
    assert (ws / "survey" / "q1.h5").read_bytes() == before
    forced = fmb("data", "import", src, "--name", "q1", "--image-size", 24, "--force", cwd=ws).stdout
    assert "stale now" in forced and "pca.h5" in forced
