"""`fmb-engine analyze ...`: ranking comparisons, similarity, neighbour ranks, regression probes, UMAP."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.common import ConfigOpt, RunsOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, reporter, section, survey_file
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, notes, plain, table

app = Typer(help="Analyses: ranking comparisons, similarity search, regression probes, UMAP.", no_args_is_help=True)

ModalityOpt = typer.Option(None, "--modality", help="Modality(ies): image, spectrum, joint (default: all).")


def _outputs(result, to=console) -> None:
    for name, path in result.outputs.items():
        to.print(f"{name}: [bold]{escape(str(path))}[/]")
    to.print(f"manifest: {escape(str(result.manifest))}")


def _written(result) -> dict:
    """The JSON fields every analysis shares: its output files and run manifest."""
    return {"outputs": dict(result.outputs), "manifest": result.manifest}


def _emit_stage(fmt: Format, result, data: dict, rows: list[dict], shown, remarks: list[str] = ()) -> None:
    """An analysis's result: JSON (``data`` + outputs + manifest), CSV ``rows``, or ``shown`` and the files written.
    ``remarks`` are notes for the reader (beside the table, else on stderr); the files written are listed
    after the table, on stderr after CSV, and are part of the JSON document."""
    emit(fmt, {**data, **_written(result)}, shown, rows=rows)
    for remark in remarks:
        notes(fmt).print(f"[yellow]note: {escape(remark)}[/]")
    if fmt is not Format.json:
        _outputs(result, notes(fmt))


@app.command()
def rankings(
    systems: list[str] = typer.Option(None, "--system", autocompletion=complete.systems, help="System(s) model/modality/method to compare (default: all)."),
    top_percent: float = typer.Option(None, "--top", help="Top q % for Jaccard, disagreement and retention (default 1)."),
    disagree: float = typer.Option(None, "--disagree", help="Disagreement: beyond this percentile in the other system (default 50)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Spearman, top-q % Jaccard, retention/displacement and disagreement of every pair of systems."""
    from fmb_engine.analyze.run import analyze_rankings

    ws = find_workspace(workspace)
    result = analyze_rankings(ws, section("analyze", ws, config, systems=systems or None, top_percent=top_percent,
                                          disagree_percent=disagree), reporter())
    s = result.summary
    names = list(s["systems"])
    pairs = [{"system_a": a, "system_b": b, "spearman": plain(s["spearman"].loc[a, b]),
              "jaccard": plain(s["jaccard"].loc[a, b])} for i, a in enumerate(names) for b in names[i + 1:]]
    data = {"systems": names, "objects": s["objects"], "disagreements": len(s["disagreement"]), "pairs": pairs,
            "notes": list(s["notes"]["note"])}
    _emit_stage(fmt, result, data, pairs, lambda: [
        f"{len(names)} systems over {data['objects']:,} objects; {data['disagreements']:,} disagreements"],
        remarks=data["notes"])


def _queries(ids: list[str] | None, csv: Path | None) -> list[str] | None:
    from fmb_engine.analyze.run import read_query_ids

    found = read_query_ids(ids, csv)
    return found or None


@app.command()
def similarity(
    ids: list[str] = typer.Option(None, "--id", help="Query object id (repeat for several; default: every object)."),
    ids_csv: Path = typer.Option(None, "--ids-csv", help="CSV of query ids (column object_id, else the first)."),
    k: int = typer.Option(None, "--k", "-k", help="Neighbours per query (default 10)."),
    models: RunsOpt = None,
    modalities: list[str] = ModalityOpt,
    backend: str = typer.Option(None, "--backend", help="auto, exact, approx (or the exact engines torch, faiss)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Cosine k-nearest neighbours per model and modality (self excluded; approximate from analyze.approx_threshold on) -> neighbours.parquet."""
    from fmb_engine.analyze.run import analyze_similarity

    ws = find_workspace(workspace)
    resolved = section("analyze", ws, config, k=k, models=models or None, modalities=modalities or None, backend=backend)
    result = analyze_similarity(ws, resolved, reporter(), queries=_queries(ids, ids_csv))
    console.print(f"{len(result.summary['neighbours']):,} neighbour rows")
    _outputs(result)


@app.command("neighbor-ranks")
def neighbor_ranks(
    method: str = typer.Option(None, "--method", help="Method whose ranks are read (default flow)."),
    top_percent: float = typer.Option(None, "--top", help="Share of neighbours in the top q % (default 1)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Anomaly-rank percentiles of each object's neighbours and their top-q % share."""
    from fmb_engine.analyze.run import analyze_neighbor_ranks

    ws = find_workspace(workspace)
    result = analyze_neighbor_ranks(ws, section("analyze", ws, config, rank_method=method, top_percent=top_percent), reporter())
    rows = plain(result.summary["summary"].to_dict("records"))
    columns = [Column(str(c), cell=lambda v: f"{v:.2f}" if isinstance(v, float) else escape(str(v)))
               for c in result.summary["summary"].columns]
    _emit_stage(fmt, result, {"summary": rows}, rows,
                lambda: [table(rows, columns, title="neighbour ranks", show_edge=False)])


@app.command()
def regression(
    targets: list[str] = typer.Option(None, "--target", "-t", help="Survey column(s) to predict (default redshift, logM, logSFR)."),
    models: RunsOpt = None,
    modalities: list[str] = ModalityOpt,
    bootstrap: int = typer.Option(None, "--bootstrap", help="Bootstrap resamples for R² intervals."),
    seed: int = typer.Option(None, "--seed", help="Seed (analyze.seed)."),
    linear_only: bool = typer.Option(False, "--linear-only", help="Skip the non-linear regressor."),
    survey: SurveyOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Probe physical parameters from each embedding: ridge + gradient boosting vs a random baseline."""
    from fmb_engine.analyze.run import analyze_regression

    ws = find_workspace(workspace)
    resolved = section("analyze", ws, config, targets=targets or None, models=models or None,
                       modalities=modalities or None, bootstrap=bootstrap, seed=seed)
    result = analyze_regression(ws, resolved, survey_file(ws, config, survey), reporter(), nonlinear=not linear_only)
    res = result.summary["results"]
    rows = plain(res.to_dict("records"))
    numbers = [c for c in ("r2_ridge", "r2_gbm", "pr_ridge", "pr_gbm") if c in res.columns]
    columns = [*map(Column, ("target", "model", "modality", "features")),
               *(Column(c, cell=lambda v: "nan" if v is None else f"{v:.3f}") for c in numbers)]
    _emit_stage(fmt, result, {"results": rows}, rows, lambda: [
        table(rows, columns, title="R² on held-out objects; participation ratio PR of the attributions", show_edge=False)])


@app.command()
def umap(
    models: RunsOpt = None,
    modalities: list[str] = ModalityOpt,
    neighbors: int = typer.Option(None, "--neighbors", help="UMAP n_neighbors (default 15)."),
    min_dist: float = typer.Option(None, "--min-dist", help="UMAP min_dist (default 0.1)."),
    seed: int = typer.Option(None, "--seed", help="Seed (analyze.seed)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Seeded 2-D UMAP of every valid object per model and modality (fitted on a seeded sample of
    analyze.umap_max_points, the rest placed by the fitted model; cached by input digest) -> analysis/umap/coords.parquet."""
    from fmb_engine.analyze.run import analyze_umap

    ws = find_workspace(workspace)
    resolved = section("analyze", ws, config, models=models or None, modalities=modalities or None,
                       umap_neighbors=neighbors, umap_min_dist=min_dist, seed=seed)
    _outputs(analyze_umap(ws, resolved, reporter()))
