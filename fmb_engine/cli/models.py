"""`fmb-engine models ...`: which embedders exist, whether they can run here, and fetching weights."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fmb_engine.cli.common import ConfigOpt, Typer, WorkspaceOpt, console
from fmb_engine.errors import WorkspaceError
from fmb_engine.workspace import Workspace

app = Typer(help="List embedders, check packages/weights/GPU, download weights.", no_args_is_help=True)


def _maybe_workspace(path: Path | None) -> Workspace | None:
    try:
        return Workspace.find(path)
    except WorkspaceError:
        if path is not None:
            raise
        return None  # outside a workspace: defaults and --config only


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("[green]yes[/]" if flag else "[red]no[/]")


@app.command("list")
def list_cmd(workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Every embedder: modalities, aligned, and whether its package and weights are present (nothing is loaded)."""
    from fmb_engine.embed.models_check import list_models

    table = Table(show_edge=False)
    for col in ("model", "modalities", "aligned", "needs fit", "package", "weights"):
        table.add_column(col)
    for st in list_models(_maybe_workspace(workspace), config):
        pkg = "core" if st.package is None else f"{st.package} ({'present' if st.package_present else 'missing'})"
        weights = {"found": "[green]found[/]", "missing": "[red]missing[/]"}.get(st.weights, st.weights)
        table.add_row(st.name, ", ".join(st.modalities), _yes(st.aligned), _yes(st.needs_fit), escape(pkg), weights)
    console.print(table)


@app.command("check")
def check_cmd(
    name: str | None = typer.Argument(None, help="One embedder (default: all)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    weights: str | None = typer.Option(None, "--weights", help="Check this weights directory instead of the configured one."),
    load: bool = typer.Option(True, "--load/--no-load", help="Also load the weights (slow for big models)."),
) -> None:
    """torch, CUDA devices, packages, and per embedder: weight files found and loadable, with what to do for each failure."""
    from fmb_engine.embed.models_check import check_models

    report = check_models(name, _maybe_workspace(workspace), config, load=load,
                          cli={"weights": weights} if weights else None)
    env = report["environment"]
    console.print(f"torch {env['torch']} (CUDA build: {env['cuda_version'] or 'none'}); "
                  f"CUDA devices: {', '.join(env['devices']) or 'none'}")
    pk = Table(title="packages", title_justify="left", show_edge=False)
    pk.add_column("package")
    pk.add_column("version")
    for dist, ver in env["packages"].items():
        pk.add_row(dist, ver or "[dim]not installed[/]")
    console.print(pk)
    for p in report["problems"]:
        console.print(f"[yellow]note[/]: {escape(p.what)}\n  -> {escape(p.fix)}")
    failed = False
    for st in report["models"]:
        ok = st.package_present and st.weights != "missing" and st.loadable is not False
        failed |= not ok
        status = "[green]ok[/]" if ok else "[red]not runnable[/]"
        console.print(f"\n[bold]{st.name}[/]: {status}  (weights: {st.weights}, loadable: {_yes(st.loadable)})")
        for f in st.weight_files:
            console.print(f"  {escape(f)}")
        for p in st.problems:
            console.print(f"  [red]problem[/]: {escape(p.what)}\n  [cyan]fix[/]: {escape(p.fix)}")
    if name and failed:
        raise typer.Exit(1)


@app.command("download")
def download_cmd(
    name: str = typer.Argument(..., help="Embedder whose weights to fetch (astropt, aion, astroclip)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    weights: str | None = typer.Option(None, "--weights", help="Target directory (default: embed.<name>.weights, else the HF cache)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
) -> None:
    """Download an embedder's weights from the Hugging Face Hub into the configured weights directory."""
    from fmb_engine.embed.models_check import REQUIREMENTS, download

    path = download(name, _maybe_workspace(workspace), config, weights=weights, revision=revision)
    console.print(f"[green]weights ready[/]: {escape(str(path))}")
    note = REQUIREMENTS[name].download_note if name in REQUIREMENTS else ""
    if note:
        console.print(f"[yellow]next[/]: {escape(note)}")
