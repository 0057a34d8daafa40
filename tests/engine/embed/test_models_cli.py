"""`embed` and `models` command groups through a Typer app, as the main CLI mounts them."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fmb_engine.cli import embed as embed_cli
from fmb_engine.cli import models as models_cli
from fmb_engine.config import load
from fmb_engine.embed.models_check import HubUnreachable, check_models, download, list_models
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import ConfigError
from fmb_engine.survey.stages import make_mock
from fmb_engine.workspace import Workspace

app = typer.Typer()
app.add_typer(embed_cli.app, name="embed")
app.add_typer(models_cli.app, name="models")
runner = CliRunner()
MODELS = {"pca", "cca", "astropt", "aion", "astroclip"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    ws = Workspace.init(tmp_path_factory.mktemp("ws"))
    ws.config_file.write_text("general:\n  survey: mock\nembed:\n  pca:\n    image_components: 8\n    spectrum_components: 6\n")
    make_mock(ws, load("mock", cli={"objects": 120, "image_size": 32, "workers": -1}))
    return ws


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _hf_cache(root, repo="polymathic-ai/astroclip", files=("astroclip.ckpt",), rev="0" * 40):
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in files:
        (snap / f).write_bytes(b"not really a checkpoint")
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(rev)
    return snap


def test_one_command_per_embedder():
    res = _run("embed", "--help")
    assert res.exit_code == 0
    for name in MODELS | {"import", "export", "run"}:
        assert name in res.output


def test_embed_export_import(ws, tmp_path):
    res = _run("embed", "pca", "-w", ws.root, "--batch-size", 50, "--shard-size", 64)
    assert res.exit_code == 0, res.output
    out = ws.folder("embeddings") / "pca.h5"
    with EmbeddingReader(out) as r:
        assert r.n_objects == 120 and r.dims["image"] == 8  # fmb.yaml layer applied
        assert r.config["batch_size"] == 50  # the flag layer
        image = r.load("image")
    part = _run("embed", "cca", "-w", ws.root, "--start", 0, "--stop", 40, "--shard-size", 32)
    assert part.exit_code == 0 and "partial" in part.output and "[40, 120)" in part.output
    pt = tmp_path / "pca.pt"
    assert _run("embed", "export", "pca", "-w", ws.root, "-o", pt).exit_code == 0
    back = tmp_path / "back.h5"
    res = _run("embed", "import", pt, "--model", "pca", "-o", back, "-w", ws.root)
    assert res.exit_code == 0, res.output
    with EmbeddingReader(back) as r:
        assert np.array_equal(r.load("image"), image) and r.embedder == "pca"
    clash = _run("embed", "import", pt, "--model", "pca", "-w", ws.root)
    assert isinstance(clash.exception, ConfigError) and "--force" in str(clash.exception)
    bad = _run("embed", "export", "pca", "-w", ws.root, "-o", pt, "--format", "csv")
    assert isinstance(bad.exception, ConfigError)


def test_array_task_form(ws):
    for shard in (2, 0, 1):  # any order; the task that completes the coverage merges
        res = _run("embed", "run", "--model", "cca", "--shard", shard, "--shards", 3, "-w", ws.root,
                   "--shard-size", 32, "--batch-size", 32)
        assert res.exit_code == 0, res.output
    assert "done" in res.output
    with EmbeddingReader(ws.folder("embeddings") / "cca.h5") as r:
        assert r.n_objects == 120 and np.array_equal(r.rows(), np.arange(120))
    bad = _run("embed", "run", "--model", "cca", "--shard", 3, "--shards", 3, "-w", ws.root)
    assert isinstance(bad.exception, ConfigError)


def test_missing_weights_fail_before_any_work(ws, tmp_path):
    res = _run("embed", "astroclip", "-w", ws.root, "--weights", tmp_path / "nowhere")
    assert isinstance(res.exception, ConfigError) and "weights not found" in str(res.exception)
    assert not (ws.folder("embeddings") / "astroclip.shards").exists()


def test_models_list(ws):
    res = _run("models", "list", "-w", ws.root)
    assert res.exit_code == 0, res.output
    for name in MODELS:
        assert name in res.output
    status = {s.name: s for s in list_models(ws)}
    assert status["pca"].weights == "not needed" and not status["pca"].problems
    assert status["astroclip"].aligned and not status["astropt"].aligned


def test_models_check(ws, tmp_path):
    assert _run("models", "check", "pca", "-w", ws.root).exit_code == 0
    res = _run("models", "check", "astropt", "-w", ws.root, "--weights", tmp_path / "empty", "--no-load")
    assert res.exit_code == 1 and "fix" in res.output and "models download astropt" in res.output
    # weights present but not loadable: found, loadable False, with a fix
    cache = tmp_path / "hf"
    _hf_cache(cache)
    report = check_models("astroclip", ws, cli={"weights": str(cache)})
    st = report["models"][0]
    assert st.weights == "found" and st.loadable is False and st.problems and st.problems[0].fix
    assert "torch" in report["environment"] and "packages" in report["environment"]


def test_download_offline_from_local_cache(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    snap = _hf_cache(cache)
    res = _run("models", "download", "astroclip", "-w", ws.root, "--weights", cache)
    assert res.exit_code == 0, res.output
    assert "weights ready" in res.output and "Convert" in res.output
    assert download("astroclip", ws, weights=str(cache)) == snap
    with pytest.raises(HubUnreachable, match="offline"):
        download("aion", ws, weights=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no weights"):
        download("pca", ws)
