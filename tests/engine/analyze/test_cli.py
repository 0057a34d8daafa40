"""`fmb-engine analyze` / `figures` groups through Typer (mounted on a local app here;
the lead registers them in cli/main.py)."""

import typer
from typer.testing import CliRunner

from fmb_engine.cli import analyze as analyze_cli
from fmb_engine.cli import figures as figures_cli


def _app():
    app = typer.Typer()
    app.add_typer(analyze_cli.app, name="analyze")
    app.add_typer(figures_cli.app, name="figures")
    return app


def test_cli_rankings_and_heatmaps(analysed):
    ws, _ = analysed
    runner = CliRunner()
    r = runner.invoke(_app(), ["analyze", "rankings", "-w", str(ws.root), "--system", "cca/image/flow", "--system", "pca/image/flow",
                               "--top", "5"])
    assert r.exit_code == 0, r.output
    assert "2 systems" in r.output
    r = runner.invoke(_app(), ["figures", "heatmaps", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert (ws.folder("figures") / "rankings" / "spearman_heatmap.pdf").is_file()


def test_cli_unknown_system_is_a_user_error(analysed):
    from fmb_engine.errors import DataError

    ws, _ = analysed
    r = CliRunner().invoke(_app(), ["analyze", "rankings", "-w", str(ws.root), "--system", "nope/x/y", "--system", "cca/image/flow"])
    assert r.exit_code != 0 and isinstance(r.exception, DataError) and "nope/x/y" in str(r.exception)


def test_cli_similarity_by_id_and_figures(analysed, tmp_path):
    ws, _ = analysed
    import pandas as pd

    oid = pd.read_parquet(ws.folder("scores") / "systems.parquet")["object_id"].iloc[3]
    runner = CliRunner()
    r = runner.invoke(_app(), ["analyze", "similarity", "-w", str(ws.root), "--id", oid, "--id", oid, "-k", "3",
                               "-m", "pca", "--modality", "image"])
    assert r.exit_code == 0, r.output
    q = pd.read_parquet(ws.folder("analysis") / "similarity" / "query_neighbours.parquet")
    assert set(q["object_id"]) == {oid} and len(q) == 3
    out = tmp_path / "sim"
    r = runner.invoke(_app(), ["figures", "similarity", "-w", str(ws.root), "--id", oid, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "neighbours.png").is_file()
    r = runner.invoke(_app(), ["figures", "object", oid, "-w", str(ws.root), "--smooth", "0", "-o", str(tmp_path / "obj")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "obj.pdf").is_file()
