"""`fmb-engine retrain TASK` through the command line: run, resume, start fresh, submit as a job."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("astropt")

from fmb_engine.cli.main import app  # noqa: E402

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=64, image_size=32, image_patch_size=8, spectrum_length=200,
            spectrum_patch_size=10, device="cpu", threads=1, batch_size=8, accum_steps=1, eval_every=2,
            eval_batches=1, checkpoint_every=2)


@pytest.fixture
def ws(workspace, small_survey, tmp_path):
    shutil.copy(small_survey, workspace.survey_path("mock"))
    (workspace.root / "tiny.yaml").write_text(yaml.safe_dump({"retrain": {"astropt": TINY}}))
    return workspace


def _run(ws, *args):
    result = CliRunner().invoke(app, ["retrain", "astropt", "--workspace", str(ws.root),
                                      "--config", str(ws.root / "tiny.yaml"), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _manifests(ws):
    """Oldest first (by write time: two runs may start within the same second)."""
    paths = sorted(ws.folder("runs").glob("*retrain-astropt*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(p.read_text()) for p in paths]


def test_run_resume_and_fresh(ws):
    out = _run(ws, "--steps", "3", "--seed", "5")
    folder = ws.folder("checkpoints") / "astropt"
    assert "done: 3 steps" in out and (folder / "ckpt_final.pt").is_file() and (folder / "history.csv").is_file()
    first = _manifests(ws)[-1]
    assert first["config"]["values"]["steps"] == 3 and first["config"]["sources"]["seed"] == "command line"
    assert first["config"]["sources"]["n_embd"].endswith("tiny.yaml")

    _run(ws, "--steps", "5", "--seed", "5")  # continues the 3 finished steps up to 5
    assert _manifests(ws)[-1]["resumed_from"]["step"] == 3
    assert len(open(folder / "history.csv").read().splitlines()) == 1 + 5

    _run(ws, "--steps", "2", "--seed", "5", "--fresh")
    assert "resumed_from" not in _manifests(ws)[-1]
    assert len(open(folder / "history.csv").read().splitlines()) == 1 + 2


def test_submitted_as_a_job(ws):
    """Through the job registry (the debug executor runs it in this process, like a SLURM job would)."""
    from fmb_engine.jobs.registry import open_registry

    out = _run(ws, "--steps", "2", "--executor", "debug")
    assert "retrain.astropt" in out and "follow with: fmb-engine jobs show" in out
    assert (ws.folder("checkpoints") / "astropt" / "ckpt_final.pt").is_file()
    with open_registry(ws) as reg:
        [run] = reg.runs()
    assert run.stage == "retrain.astropt"


def test_missing_weights_are_a_clear_error(ws):
    from fmb_engine.errors import ConfigError

    result = CliRunner().invoke(app, ["retrain", "astropt", "--workspace", str(ws.root), "--config",
                                      str(ws.root / "tiny.yaml"), "--weights", str(ws.root / "nowhere")])
    assert isinstance(result.exception, ConfigError)
    assert "never falls back to random weights" in str(result.exception) and "nowhere" in str(result.exception)
