"""`fmb-engine config ...`: the effective configuration and where each value came from."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from fmb_engine.cli.common import ConfigOpt, Typer, WorkspaceOpt, console
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, table
from fmb_engine.config import SECTIONS
from fmb_engine.errors import ConfigError, WorkspaceError
from fmb_engine.workspace import Workspace

app = Typer(help="Show, validate and template configuration.", no_args_is_help=True)


@app.command("show")
def show(
    section: str | None = typer.Argument(None, help=f"One section ({', '.join(SECTIONS.outline())}); default all."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Print the effective config and, for each value, the layer it came from."""
    from fmb_engine.config import layers_for, resolve

    try:
        ws: Workspace | None = Workspace.find(workspace)
    except WorkspaceError:
        if workspace is not None:
            raise
        ws = None  # outside a workspace: defaults and --config only
    names = [section] if section else list(SECTIONS)
    layers = layers_for(ws, config)
    records = [{"section": name, "key": key, "value": value, "from": source}
               for name in names for key, value, source in resolve(name, layers).rows()]
    columns = (Column("key", style="cyan"), Column("value", cell=lambda v: escape(repr(v))), Column("from", style="dim"))

    def shown():
        return [part for name in names
                for part in (table([r for r in records if r["section"] == name], columns, title=f"[bold]{name}[/]",
                                   show_edge=False), "")]

    emit(fmt, records, shown)


@app.command("template")
def template_cmd(section: str = typer.Argument(..., help="Section to write a commented template for.")) -> None:
    """Print a commented YAML template of one section (every key, its default and meaning)."""
    from fmb_engine.config import template

    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; sections: {', '.join(SECTIONS)}")
    typer.echo(template(section), nl=False)


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="A YAML config file.")) -> None:
    """Check a config file: sections, keys, types and ranges."""
    from fmb_engine.config import read_layer_file, resolve

    layer = read_layer_file(file)
    for name in layer.data:
        resolve(name, [layer])
    console.print(f"[green]ok[/]: {escape(str(file))}")
