"""A task config's general.survey decides which survey detect checks the embeddings against."""

from __future__ import annotations

from typer.testing import CliRunner

from fmb_engine.cli.main import app


def _fmb(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1", "FMB_WORKSPACE": None})


def test_detect_checks_embeddings_against_the_survey_of_the_task_config(tmp_path):
    ws = str(tmp_path / "ws")
    assert _fmb("init", ws).exit_code == 0
    for name, n in (("a", "60"), ("b", "80")):
        assert _fmb("data", "mock", "-n", n, "--image-size", "16", "--name", name, "-w", ws).exit_code == 0
    # fmb.yaml now names b (the last one written); the embeddings are made from a
    assert _fmb("embed", "pca", "--survey", "a", "-w", ws).exit_code == 0
    task = tmp_path / "task.yaml"
    task.write_text("general:\n  survey: a\ndetect:\n  epochs: 2\n  iforest_trees: 20\n")
    stale = _fmb("detect", "all", "-w", ws)
    assert stale.exit_code != 0 and "stale" in str(stale.exception)  # fmb.yaml's survey b: refused
    done = _fmb("detect", "all", "-c", str(task), "-w", ws)
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    assert "over 60 objects" in done.output
