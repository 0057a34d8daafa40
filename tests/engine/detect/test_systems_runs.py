"""A detect run over fewer embedding runs keeps the others' systems, and says so (file metadata + manifest)."""

import json
import shutil

import pandas as pd
import pytest

from fmb_engine import rankings
from fmb_engine.config import load
from fmb_engine.detect.run import detect
from fmb_engine.workspace import Workspace

FAST = {"epochs": 2, "iforest_trees": 50}


@pytest.fixture
def ws(analysed, tmp_path):
    src, _ = analysed
    shutil.copytree(src.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def test_fewer_runs_keep_the_other_runs_systems(ws):
    first = rankings.provenance(ws)
    assert first is not None and sorted(first.scored) == ["cca", "pca"] and first.kept == []
    before = pd.read_parquet(rankings.systems_path(ws))
    result = detect(ws, load("detect", ws, cli=FAST | {"models": ["cca"]}))
    after = pd.read_parquet(rankings.systems_path(ws))
    pca = [c for c in before.columns if c.startswith(("rank:pca/", "score:pca/"))]
    assert pca and "rank:pca/fused/fisher" in pca
    for col in pca:  # the other run's systems are still there, unchanged
        assert after[col].equals(before[col]), col
    assert set(after.columns) == set(before.columns)
    fused = pd.read_csv(ws.folder("scores") / "multimodal" / "all_scores.csv")
    assert set(fused["model"]) == {"cca", "pca"}

    prov = rankings.provenance(ws)
    run_id = json.loads(result.manifest.read_text())["run_id"]
    assert prov.scored == ["cca"] and prov.kept == ["pca"] and prov.dropped == []
    assert prov.runs["cca"]["run_id"] == run_id
    assert prov.runs["pca"] == first.runs["pca"]  # still credited to the first detect run
    manifest = json.loads(result.manifest.read_text())
    assert manifest["counts"]["systems_runs"] == {"cca": "scored now",
                                                  "pca": f"kept from {first.runs['pca']['run_id']}"}


def test_runs_without_embeddings_are_dropped_and_named(ws):
    (ws.folder("embeddings") / "pca.h5").unlink()
    result = detect(ws, load("detect", ws, cli=FAST | {"models": ["cca"]}), parts=("flows",))
    systems = rankings.list_systems(ws)
    assert systems and all(s.startswith("cca/") for s in systems)
    prov = rankings.provenance(ws)
    assert prov.scored == ["cca"] and prov.dropped == ["pca"] and list(prov.runs) == ["cca"]
    warnings = json.loads(result.manifest.read_text())["warnings"]
    assert any("pca dropped" in w and "pca.h5" in w for w in warnings)


def test_a_table_without_provenance_reads_as_none(workspace):
    pd.DataFrame({"object_id": ["a"], "rank:m/image/flow": [1], "score:m/image/flow": [0.5]}).to_parquet(
        rankings.systems_path(workspace), index=False)
    assert rankings.provenance(workspace) is None
