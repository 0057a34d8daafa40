"""`discover rerank` on a scored workspace: labels become system <model>/fused/active in systems.parquet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fmb_engine.config import load
from fmb_engine.discover.run import labels_digest, rerank
from fmb_engine.errors import ConfigError
from fmb_engine.rankings import PROVENANCE_KEY, active_records, list_systems, systems_path
from fmb_engine.triage.labels import open_labels
from fmb_engine.workspace import Workspace


@pytest.fixture
def scored(analysed, tmp_path: Path) -> Workspace:
    """A private copy of the shared scored workspace (rerank writes into it)."""
    ws, _ = analysed
    shutil.copytree(ws.root, tmp_path / "ws")
    return Workspace.find(tmp_path / "ws")


def _label(ws: Workspace, labels: dict[str, str], user: str = "alice") -> None:
    store = open_labels(ws, user=user)
    try:
        for oid, name in labels.items():
            store.set_label(oid, name)
    finally:
        store.close()


def _top(ws: Workspace, system: str, n: int) -> list[str]:
    table = pd.read_parquet(systems_path(ws), columns=["object_id", "rank:" + system])
    return table.sort_values(["rank:" + system, "object_id"])["object_id"].head(n).tolist()


def _rerank(ws: Workspace, **flags):
    return rerank(ws, load("discover", ws, cli={"model": "cca", **flags}))


def test_rerank_adds_the_active_system_and_keeps_the_others(scored):
    before = pd.read_parquet(systems_path(scored))
    top = _top(scored, "cca/fused/fisher", 12)
    _label(scored, {oid: ("interesting" if i % 3 == 0 else "artefact") for i, oid in enumerate(top)})
    result = _rerank(scored)
    assert result.summary["system"] == "cca/fused/active"
    assert result.summary["base"] == "cca/fused/fisher"
    assert result.summary["labels_used"] == 12
    after = pd.read_parquet(systems_path(scored))
    assert "cca/fused/active" in list_systems(scored)
    for column in before.columns:  # every detect system unchanged, bit for bit
        pd.testing.assert_series_equal(before[column], after[column])
    ranks = after["rank:cca/fused/active"].to_numpy()
    assert ranks.min() == 1 and ranks.max() <= len(after)
    assert result.summary["best_unlabelled"] not in top
    meta = pq.read_schema(systems_path(scored)).metadata
    assert PROVENANCE_KEY in meta  # detect's provenance survives the rewrite
    record = active_records(scored)["cca/fused/active"]
    assert record["strategy"] == "evidence" and record["labels"] == 12 and record["users"] == {"alice": 12}
    assert record["labels_digest"] == labels_digest(open_labels(scored).labels())
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["status"] == "completed"
    assert manifest["counts"]["labels"]["used"] == 12
    assert manifest["active"]["seed"] == 42


def test_same_labels_and_seed_give_the_same_ranks_and_a_rerun_replaces_the_system(scored):
    top = _top(scored, "cca/fused/fisher", 10)
    _label(scored, {oid: ("lens" if i < 3 else "normal") for i, oid in enumerate(top)})
    _rerank(scored)
    first = pd.read_parquet(systems_path(scored))["rank:cca/fused/active"].to_numpy()
    _rerank(scored)
    table = pd.read_parquet(systems_path(scored))
    assert list(table.columns).count("rank:cca/fused/active") == 1
    np.testing.assert_array_equal(first, table["rank:cca/fused/active"].to_numpy())


def test_the_labels_move_the_order(scored):
    """Relevant labels pull their neighbourhood up; the active order is not the base order."""
    top = _top(scored, "cca/fused/fisher", 20)
    _label(scored, {oid: ("interesting" if i % 2 else "artefact") for i, oid in enumerate(top)})
    _rerank(scored)
    assert _top(scored, "cca/fused/active", 30) != _top(scored, "cca/fused/fisher", 30)


def test_labels_off_the_run_unmapped_and_from_other_users_are_counted(scored):
    top = _top(scored, "cca/fused/fisher", 4)
    _label(scored, {top[0]: "interesting", top[1]: "skip", top[2]: "weird-name"}, user="alice")
    _label(scored, {top[3]: "artefact", "not-an-object-7": "lens"}, user="bob")
    result = _rerank(scored)
    s = result.summary
    assert s["labels_used"] == 2 and s["labels_total"] == 5 and s["not_in_run"] == 1
    assert s["ignored"] == {"skip": 1, "weird-name": 1}
    assert s["users"] == {"alice": 3, "bob": 2}
    counts = json.loads(Path(result.manifest).read_text())["counts"]["labels"]
    assert counts["not_in_run_examples"] == ["not-an-object-7"]


@pytest.mark.parametrize("strategy", ["static", "astronomaly", "gp", "evidence"])
def test_every_strategy_runs_with_one_kind_of_label_and_with_none(scored, strategy):
    assert _rerank(scored, strategy=strategy).summary["labels_used"] == 0
    _label(scored, {oid: "artefact" for oid in _top(scored, "cca/fused/fisher", 3)})
    result = _rerank(scored, strategy=strategy)
    assert result.summary["labels_used"] == 3
    if strategy != "static":  # too few labels to learn from: the base order, and the reason said
        assert result.summary["fallback"] and result.summary["notes"][0] == result.summary["fallback"]
    assert pd.read_parquet(systems_path(scored))["rank:cca/fused/active"].notna().all()


def test_bad_settings_name_what_is_wrong(scored):
    with pytest.raises(ConfigError, match="params"):
        _rerank(scored, params={"no_such_knob": 1.0})
    with pytest.raises(ConfigError, match="discover.model"):
        rerank(scored, load("discover", scored, cli={"model": "nope", "system": "cca/fused/fisher"}))


def test_simulate_writes_curves_summary_and_figure(scored):
    from fmb_engine.discover.run import simulate

    result = simulate(scored, load("discover", scored, cli={
        "model": "cca", "strategies": ["random", "static", "evidence"], "seeds": 2, "budget": 20, "batch": 5}))
    curves = pd.read_csv(result.outputs["curves"])
    assert list(curves.columns) == ["strategy", "seed", "inspected", "found"]
    assert len(curves) == 3 * 2 * 20
    for _, part in curves.groupby(["strategy", "seed"]):
        assert (np.diff(part["found"].to_numpy()) >= 0).all() and part["found"].iloc[-1] <= result.summary["interesting"]
    summary = pd.read_csv(result.outputs["summary"])
    assert set(summary["inspected"]) == {20}  # 50/100/200 capped by the budget
    assert result.outputs["figure png"].is_file() and result.outputs["figure pdf"].is_file()
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["interesting"] == result.summary["interesting"]


def test_simulate_refuses_a_class_the_truth_does_not_have(scored):
    from fmb_engine.discover.run import simulate

    with pytest.raises(ConfigError, match="no_such_class"):
        simulate(scored, load("discover", scored, cli={"model": "cca", "interesting": ["no_such_class"]}))
