"""`fmb-engine detect ...` and `fmb-engine evaluate`: score, fuse, evaluate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from fmb_engine.cli.jobs import ExecutorOpt
from fmb_engine.cli.common import ConfigOpt, RunsOpt, SurveyOpt, Typer, WorkspaceOpt, find_workspace, reporter, section, survey_file
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, notes, plain, table
from fmb_engine.detect.params import DEFAULT_FUSION, FUSION_METHODS, PARTS, PRESETS

app = Typer(help="Anomaly scores: flows, cross-modal mismatch, baselines, rank fusion.", no_args_is_help=True)


def _run(parts, workspace, config, models, preset, seed, fusion, top_k, out_of_fold, n_jobs, executor=None,
         shards=None, fmt: Format = Format.table) -> None:
    from fmb_engine.detect.run import detect

    ws = find_workspace(workspace)
    resolved = section("detect", ws, config, models=models or None, preset=preset, seed=seed, fusion=fusion,
                       top_k=top_k, out_of_fold=out_of_fold, n_jobs=n_jobs)
    # a task config may name another survey than fmb.yaml: the embeddings are checked against that one
    named_by_task = (config is not None
                     and Path(section("general", ws, config).sources["survey"]).resolve() == config.resolve())
    survey = survey_file(ws, config, None) if named_by_task else None
    if shards is not None:
        from fmb_engine.cli.jobs import print_submission
        from fmb_engine.errors import ConfigError
        from fmb_engine.jobs.chain import submit_sharded_detect

        if executor is None:
            raise ConfigError("--shards splits detection into jobs: add --executor slurm (or local, debug); "
                             "without an executor detect runs in this process, unsharded")
        print_submission(submit_sharded_detect(ws, resolved, parts, shards, executor, section("jobs", ws, config),
                                               survey), fmt)
        return
    if executor is not None:
        from fmb_engine.cli.jobs import print_submission
        from fmb_engine.jobs.stages import submit_detect

        print_submission(submit_detect(ws, resolved, parts, executor, section("jobs", ws, config)), fmt)
        return
    result = detect(ws, resolved, reporter(), parts=parts, survey=survey)
    s = result.summary
    rows = ([{"system": name, "scored": True, "reason": None} for name in s["systems"]]
            + [{"system": skip["system"], "scored": False, "reason": skip["reason"]} for skip in s["skipped"]])
    warnings = [w for w in s.get("warnings", []) if not w.startswith("skipped ")]  # skips: grouped by reason
    data = {"systems": list(s["systems"]), "objects": s["objects"], "skipped": list(s["skipped"]),
            "warnings": warnings, "outputs": dict(result.outputs), "manifest": result.manifest}
    emit(fmt, data, lambda: [f"{len(s['systems'])} systems over {s['objects']:,} objects"], rows=rows)
    by_reason: dict[str, list[str]] = {}
    for skip in s["skipped"]:
        by_reason.setdefault(skip["reason"], []).append(skip["system"])
    out = notes(fmt)
    for reason, systems in by_reason.items():
        out.print(f"[yellow]skipped {escape(', '.join(systems))}: {escape(reason)}[/]")
    for warning in warnings:
        out.print(f"[yellow]warning: {escape(warning)}[/]")
    if fmt is not Format.json:
        out.print(f"scores: [bold]{escape(str(result.outputs['scores']))}[/]  (systems table: "
                  f"{escape(str(result.outputs['systems']))})")
        out.print(f"manifest: {escape(str(result.manifest))}")


def _command(parts: tuple[str, ...], doc: str):
    def command(
        models: RunsOpt = None,
        preset: str = typer.Option(None, "--preset", help=f"Flow preset: {' or '.join(PRESETS)}."),
        seed: int = typer.Option(None, "--seed", help="Seed (detect.seed)."),
        fusion: str = typer.Option(None, "--fusion", help=f"Fusion that orders the top-k tables: {', '.join(FUSION_METHODS)} (default {DEFAULT_FUSION}; all are computed)."),
        top_k: int = typer.Option(None, "--top-k", help="Rows of the ranked / filtered tables."),
        out_of_fold: int = typer.Option(None, "--out-of-fold", help="K folds for out-of-sample flow scores (0 = off)."),
        n_jobs: int = typer.Option(None, "--n-jobs", min=0, help="Processes training the flows side by side (0 = one per core)."),
        workspace: WorkspaceOpt = None,
        config: ConfigOpt = None,
        executor: ExecutorOpt = None,
        shards: int = typer.Option(None, "--shards", min=1, help="With --executor: fit jobs, then an array of this many "
                                   "scoring tasks, then a merge job (docs/jobs.md, Sharded detect)."),
        fmt: FormatOpt = Format.table,
    ) -> None:
        _run(parts, workspace, config, models, preset, seed, fusion, top_k, out_of_fold, n_jobs, executor, shards, fmt)

    command.__doc__ = doc
    return command


app.command("flows")(_command(("flows",), "Normalizing-flow density per model x modality (+ IsolationForest and k-NN baselines)."))
app.command("mismatch")(_command(("mismatch",), "Cross-modal mismatch: cosine for aligned embedders, learned ridge residual otherwise."))
app.command("fuse")(_command(("fuse",), "Fuse image, spectrum and mismatch ranks per model (reads the flows and mismatch tables)."))
app.command("all")(_command(PARTS, "Flows, mismatch and fusion, then the systems table."))


def _metric(value: float | None) -> str:
    """A metric to 3 decimals; an undefined one (NaN, null) as "n/a" (the report's notes say why)."""
    return "n/a" if value is None or value != value else f"{value:.3f}"


def evaluate(survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None, fmt: FormatOpt = Format.table) -> None:
    """AUROC, average precision, precision@k and recall@k of every system against the injected anomalies
    (the survey's, or those of the synthetic files a survey-free systems table was made from)."""
    from fmb_engine.detect.evaluation import evaluate_workspace, synthetic_runs

    ws = find_workspace(workspace)
    # a table made from survey-free synthetic runs is evaluated against their own truth
    truth_survey = None if survey is None and synthetic_runs(ws) else survey_file(ws, config, survey)
    result = evaluate_workspace(ws, truth_survey)
    systems = [{"system": system, **plain(row.to_dict())} for system, row in result.summary["overview"].iterrows()]
    warnings = list(result.summary.get("warnings", []))
    data = {"systems": systems, "warnings": warnings, "report": result.outputs["report"]}
    columns = [Column("system"), *(Column(c, cell=_metric) for c in ("auroc", "ap", "p@100"))]
    emit(fmt, data, lambda: [table(systems, columns, title="evaluation (overall)", show_edge=False)], rows=systems)
    for warning in warnings:
        notes(fmt).print(f"[yellow]warning: {escape(warning)}[/]")
    if fmt is not Format.json:  # the JSON document names it
        notes(fmt).print(f"report: [bold]{escape(str(result.outputs['report']))}[/]")
