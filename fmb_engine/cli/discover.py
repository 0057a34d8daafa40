"""`fmb-engine discover ...`: triage labels re-rank the candidates; the discovery-curve simulation."""

from __future__ import annotations

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, reporter, section, survey_file
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, notes, table

app = Typer(help="Active discovery: labels re-rank the candidates; discovery curves against injected truth.",
            no_args_is_help=True)

StrategyOpt = typer.Option(None, "--strategy", help="static, astronomaly, gp or evidence (default: discover.strategy).")
ModelOpt = typer.Option(None, "--model", "-m", autocompletion=complete.embedding_runs,
                        help="Embedding run the strategy learns on (default: the base system's).")
SystemOpt = typer.Option(None, "--system", autocompletion=complete.systems,
                         help="Base system model/modality/method (default: the run's first fused system).")
ModalityOpt = typer.Option(None, "--modality", help="Modality(ies) whose vectors are concatenated (default: all).")
SeedOpt = typer.Option(None, "--seed", help="Seed (default: discover.seed).")


def _written(result, fmt: Format) -> None:
    out = notes(fmt)
    for name, path in result.outputs.items():
        out.print(f"{name}: [bold]{escape(str(path))}[/]")
    out.print(f"manifest: {escape(str(result.manifest))}")


@app.command()
def rerank(
    strategy: str = StrategyOpt,
    model: str = ModelOpt,
    system: str = SystemOpt,
    modalities: list[str] = ModalityOpt,
    seed: int = SeedOpt,
    survey: SurveyOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Learn from the workspace's labels and write system <model>/<modality>/active into scores/systems.parquet."""
    from fmb_engine.discover.run import rerank as run_rerank

    ws = find_workspace(workspace)
    resolved = section("discover", ws, config, strategy=strategy, model=model, system=system,
                       modalities=modalities or None, seed=seed)
    result = run_rerank(ws, resolved, reporter(), survey_file(ws, config, survey) if survey else None)
    s = result.summary
    data = {k: s[k] for k in ("system", "strategy", "base", "labels_used", "labels_total", "not_in_run", "ignored",
                              "users", "notes", "best_unlabelled")}
    data |= {"outputs": {k: str(v) for k, v in result.outputs.items()}, "manifest": str(result.manifest)}
    emit(fmt, data, lambda: [
        f"[bold]{escape(s['system'])}[/]: {s['strategy']} on {s['labels_used']} label(s) "
        f"({s['labels_total']} in the store; {s['not_in_run']} on objects not in the run) over {escape(s['base'])}",
        *(f"[yellow]note:[/] {escape(n)}" for n in s["notes"]),
        f"best unlabelled candidate: {escape(str(s['best_unlabelled']))}",
    ])
    if fmt is not Format.json:
        _written(result, fmt)
