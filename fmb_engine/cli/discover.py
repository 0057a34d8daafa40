"""`fmb-engine discover ...`: triage labels re-rank the candidates; the discovery-curve simulation."""

from __future__ import annotations

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, find_workspace, reporter, section, survey_file
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


@app.command()
def simulate(
    strategies: list[str] = typer.Option(None, "--strategy", help="Order(s) to compare: random, static, astronomaly, gp, "
                                         "evidence (repeat; default: all)."),
    seeds: int = typer.Option(None, "--seeds", min=1, help="Seeds per strategy (default 5)."),
    budget: int = typer.Option(None, "--budget", min=1, help="Inspections per loop (default 200)."),
    batch: int = typer.Option(None, "--batch", min=1, help="Objects labelled per round before the refit (default 10)."),
    interesting: list[str] = typer.Option(None, "--interesting", help="anomaly_class value(s) the oracle calls "
                                          "interesting (repeat; default: the physical rarities)."),
    model: str = ModelOpt,
    system: str = SystemOpt,
    modalities: list[str] = ModalityOpt,
    seed: int = SeedOpt,
    survey: SurveyOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Discovery curves: an oracle from the injected truth labels what each strategy shows, batch by batch."""
    from fmb_engine.discover.run import simulate as run_simulate

    ws = find_workspace(workspace)
    resolved = section("discover", ws, config, strategies=strategies or None, seeds=seeds, budget=budget, batch=batch,
                       interesting=interesting or None, model=model, system=system, modalities=modalities or None,
                       seed=seed)
    result = run_simulate(ws, resolved, reporter(), survey_file(ws, config, survey) if survey else None)
    s = result.summary
    rows = [{"strategy": r.strategy, "inspected": int(r.inspected), "mean": float(r.mean), "std": float(r.std),
             "seeds": int(r.seeds)} for r in s["summary"].itertuples()]
    data = {k: s[k] for k in ("base", "model", "objects", "interesting", "strategies", "seeds", "budget", "batch")}
    data |= {"summary": rows, "outputs": {k: str(v) for k, v in result.outputs.items()},
             "manifest": str(result.manifest)}
    wide: dict[str, dict] = {}
    for r in rows:
        wide.setdefault(r["strategy"], {"strategy": r["strategy"]})[f"@{r['inspected']}"] = \
            f"{r['mean']:.1f} ± {r['std']:.1f}"
    columns = [Column("strategy")] + [Column(k, justify="right") for k in next(iter(wide.values())) if k != "strategy"]
    emit(fmt, data, lambda: [
        f"found among the first inspections, mean ± std over {s['seeds']} seed(s); {s['interesting']} interesting of "
        f"{s['objects']:,} objects; base {escape(s['base'])}",
        table(list(wide.values()), columns),
    ], rows=rows)
    if fmt is not Format.json:
        _written(result, fmt)
