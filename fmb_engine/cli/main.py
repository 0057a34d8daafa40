"""`fmb-engine`: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from fmb_engine.sections import register_all

register_all()  # before any config is read: every layer may hold any stage's section

from fmb_engine.cli import analyze as analyze_cli  # noqa: E402
from fmb_engine.cli import config as config_cli  # noqa: E402
from fmb_engine.cli import data as data_cli  # noqa: E402
from fmb_engine.cli import detect as detect_cli  # noqa: E402
from fmb_engine.cli import embed as embed_cli  # noqa: E402
from fmb_engine.cli import figures as figures_cli  # noqa: E402
from fmb_engine.cli import jobs as jobs_cli  # noqa: E402
from fmb_engine.cli import models as models_cli  # noqa: E402
from fmb_engine.cli import retrain as retrain_cli  # noqa: E402
from fmb_engine.cli import triage as triage_cli  # noqa: E402
from fmb_engine.cli.common import Typer, console, err_console  # noqa: E402
from fmb_engine.cli.demo import demo  # noqa: E402
from fmb_engine.errors import FMBError  # noqa: E402
from fmb_engine.workspace import Workspace  # noqa: E402

app = Typer(
    name="fmb-engine",
    help="Foundation-model anomaly discovery: survey data, embeddings, retraining, detection, analysis, jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cli.app, name="config")
app.add_typer(data_cli.app, name="data")
app.add_typer(embed_cli.app, name="embed")
app.add_typer(models_cli.app, name="models")
app.add_typer(retrain_cli.app, name="retrain")
app.add_typer(detect_cli.app, name="detect")
app.add_typer(analyze_cli.app, name="analyze")
app.add_typer(figures_cli.app, name="figures")
app.add_typer(jobs_cli.app, name="jobs")
app.add_typer(triage_cli.app, name="triage")
app.command()(detect_cli.evaluate)
app.command()(demo)


@app.command()
def init(
    directory: str = typer.Argument(..., help="Folder to create (or complete) as a workspace."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Complete an existing workspace instead of failing."),
) -> None:
    """Create a workspace: fmb.yaml plus survey/, embeddings/, scores/, analysis/, figures/, runs/, jobs/, checkpoints/, triage/."""
    ws = Workspace.init(directory, exist_ok=exist_ok)
    console.print(f"workspace ready: [bold]{escape(str(ws.root))}[/]")
    console.print(f"next: cd {escape(str(ws.root))} && fmb-engine data mock")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one clear message and exit non-zero."""
    try:
        app(args=argv, standalone_mode=True)
    except FMBError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: partial outputs are kept and resume on the next run")
        sys.exit(130)


if __name__ == "__main__":
    main()
