"""`fmb-engine models ...`: which embedders exist, whether they can run here, and fetching weights."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from fmb_engine.cli.common import ConfigOpt, Typer, WorkspaceOpt, console
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, emit_records, table
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


def _package(model: dict) -> str:
    if model["package"] is None:
        return "core"
    return escape(f"{model['package']} ({'present' if model['package_present'] else 'missing'})")


#: `models list`: one record per embedder (ModelStatus.as_dict(); fields in docs/cli.md).
MODEL_COLUMNS = (
    Column("name", "model"), Column("modalities", cell=", ".join), Column("aligned", cell=_yes),
    Column("needs_fit", "needs fit", cell=_yes), Column("package", cell=_package, whole=True),
    Column("weights", cell=lambda w: {"found": "[green]found[/]", "missing": "[red]missing[/]"}.get(w, escape(w))),
)


@app.command("list")
def list_cmd(workspace: WorkspaceOpt = None, config: ConfigOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Every embedder: modalities, aligned, and whether its package and weights are present (nothing is loaded)."""
    from fmb_engine.embed.models_check import list_models

    records = [st.as_dict() for st in list_models(_maybe_workspace(workspace), config)]
    emit_records(fmt, records, MODEL_COLUMNS, show_edge=False)


@app.command("check")
def check_cmd(
    name: str | None = typer.Argument(None, help="One embedder (default: all)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    weights: str | None = typer.Option(None, "--weights", help="Check this weights directory instead of the configured one."),
    load: bool = typer.Option(True, "--load/--no-load", help="Also load the weights (slow for big models)."),
    fmt: FormatOpt = Format.table,
) -> None:
    """torch, CUDA devices, packages, and per embedder: weight files found and loadable, with what to do for each failure."""
    from fmb_engine.embed.models_check import check_models

    report = check_models(name, _maybe_workspace(workspace), config, load=load,
                          cli={"weights": weights} if weights else None)
    env = report["environment"]
    models = [{**st.as_dict(), "runnable": bool(st.package_present and st.weights != "missing" and st.loadable is not False)}
              for st in report["models"]]
    data = {"environment": env, "problems": [p.__dict__ for p in report["problems"]], "models": models}

    def shown():
        lines: list = [f"torch {env['torch']} (CUDA build: {env['cuda_version'] or 'none'}); "
                       f"CUDA devices: {', '.join(env['devices']) or 'none'}"]
        packages = [{"package": dist, "version": ver} for dist, ver in env["packages"].items()]
        lines.append(table(packages, (Column("package"), Column("version", cell=lambda v: escape(v) if v else "[dim]not installed[/]")),
                           title="packages", show_edge=False))
        lines += [f"[yellow]note[/]: {escape(p['what'])}\n  -> {escape(p['fix'])}" for p in data["problems"]]
        for st in models:
            status = "[green]ok[/]" if st["runnable"] else "[red]not runnable[/]"
            lines.append(f"\n[bold]{st['name']}[/]: {status}  (weights: {st['weights']}, loadable: {_yes(st['loadable'])})")
            lines += [f"  {escape(f)}" for f in st["weight_files"]]
            lines += [f"  [red]problem[/]: {escape(p['what'])}\n  [cyan]fix[/]: {escape(p['fix'])}" for p in st["problems"]]
        return lines

    emit(fmt, data, shown, rows=models)
    if name and not all(st["runnable"] for st in models):
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
