"""Shell completion: workspace-aware values (runs, surveys, systems, object ids), silent on a broken workspace,
and one completion end to end through the shell protocol (``_FMB_ENGINE_COMPLETE``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from fmb_engine.cli import complete
from fmb_engine.cli.main import app
from tests.faults import harness


def ctx(**params):
    """What a completion callback reads of Click's context: the options typed so far."""
    return SimpleNamespace(params=params)


def test_values_come_from_the_workspace(analysed):
    ws, _ = analysed
    here = ctx(workspace=ws.root)
    assert complete.embedding_runs(here, "") == ["cca", "pca"]
    assert complete.embedding_runs(here, "c") == ["cca"]
    assert complete.surveys(here, "") == ["mock"]
    fused = complete.systems(here, "cca/fused/")
    assert "cca/fused/fisher" in fused and all(s.startswith("cca/fused/") for s in fused)
    assert complete.object_ids(here, "mock42-000001") == [f"mock42-00000{i}" for i in range(10, 20)]
    assert complete.object_ids(ctx(workspace=ws.root, survey="mock"), "mock42-0000007") == ["mock42-0000007"]


def test_the_workspace_is_found_as_commands_find_it(analysed, monkeypatch):
    ws, _ = analysed
    monkeypatch.setenv("FMB_WORKSPACE", str(ws.root))
    assert complete.surveys(ctx(), "m") == ["mock"]


def test_a_broken_workspace_gives_no_suggestions(analysed, tmp_path, monkeypatch):
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    for callback in (complete.embedding_runs, complete.surveys, complete.systems, complete.object_ids):
        assert callback(ctx(), "") == []  # no workspace here
        assert callback(ctx(workspace=tmp_path / "nope"), "") == []
    ws, _ = analysed
    broken = Path(shutil.copytree(ws.root, tmp_path / "ws", ignore=shutil.ignore_patterns("*.h5", "*.parquet")))
    (broken / "scores" / "systems.parquet").write_bytes(b"not parquet")
    (broken / "survey" / "mock.h5").write_bytes(b"not hdf5")
    assert complete.systems(ctx(workspace=broken), "") == []
    assert complete.object_ids(ctx(workspace=broken), "") == []


def test_completion_can_be_installed():
    options = {name for p in typer.main.get_command(app).params for name in p.opts}
    assert {"--install-completion", "--show-completion"} <= options


def test_bash_completion_end_to_end(analysed):
    """What bash's completion function does on TAB: the program, asked through its environment."""
    ws, _ = analysed
    words = f"fmb-engine data show -w {ws.root} mock42-000001"
    env = harness.environment() | {"_FMB_ENGINE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "5"}
    if Path(harness.engine()[0]).name != "fmb-engine":
        pytest.skip("the fmb-engine console script is not installed in this environment")
    done = subprocess.run(harness.engine(), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"mock42-00000{i}" for i in range(10, 20)]
