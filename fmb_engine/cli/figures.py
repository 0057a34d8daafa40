"""`fmb-engine figures ...`: publication figures (PNG + PDF, one style) under figures/."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, section, survey_file

app = Typer(help="Publication figures: outliers, objects, heatmaps, displacement, regression, UMAP, similarity.",
                  no_args_is_help=True)

OutOpt = typer.Option(None, "--output", "--out", "-o", help="Output path without suffix (default under figures/).")


def _written(result) -> None:
    for path in result.summary["files"]:
        console.print(f"wrote [bold]{escape(str(path))}[/]")


@app.command("outlier-grid")
def outlier_grid(
    system: str = typer.Option(None, "--system", autocompletion=complete.systems, help="Ranking model/modality/method in scores/systems.parquet."),
    table: Path = typer.Option(None, "--table", help="Any ranked CSV/parquet with object_id (rank column optional)."),
    ids: list[str] = typer.Option(None, "--id", help="Object id(s) to draw instead of a top-k (repeat)."),
    ids_csv: Path = typer.Option(None, "--ids-csv", help="CSV of object ids to draw."),
    top_k: int = typer.Option(12, "--top-k", help="Objects drawn from the top of the ranking."),
    columns: int = typer.Option(2, "--columns", help="Objects per row."),
    smooth: float = typer.Option(2.0, "--smooth", help="Gaussian smoothing of spectra (σ in pixels, 0 = none)."),
    out: Path = OutOpt, survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None,
) -> None:
    """Top-k objects of a ranking (or listed ids): asinh RGB with id, rank, score + spectrum with lines."""
    from fmb_engine.analyze.run import read_query_ids
    from fmb_engine.figures.run import outlier_grid_figure

    ws = find_workspace(workspace)
    chosen = read_query_ids(ids, ids_csv) or None
    _written(outlier_grid_figure(ws, survey_file(ws, config, survey), system=system, table=table, ids=chosen,
                                 top_k=top_k, columns=columns, smooth=smooth, out=out))


@app.command("object")
def object_(
    object_id: str = typer.Argument(..., help="Object id.", autocompletion=complete.object_ids),
    smooth: float = typer.Option(2.0, "--smooth", help="Gaussian smoothing of the spectrum (σ in pixels, 0 = none)."),
    out: Path = OutOpt, survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None,
) -> None:
    """One object: 4 bands, RGB, spectrum with emission/absorption lines at its redshift."""
    from fmb_engine.figures.run import object_fig

    ws = find_workspace(workspace)
    _written(object_fig(ws, survey_file(ws, config, survey), object_id, smooth, out))


@app.command()
def heatmaps(
    top_percent: float = typer.Option(1.0, "--top", help="q of the Jaccard top-q % (title only)."),
    out: Path = typer.Option(None, "--output", "--out", "-o", help="Output folder (default figures/rankings)."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Clustered Spearman and Jaccard heatmaps (reads analysis/rankings)."""
    from fmb_engine.figures.run import heatmap_figures

    _written(heatmap_figures(find_workspace(workspace), top_percent, out))


@app.command()
def displacement(
    systems: list[str] = typer.Option(None, "--system", autocompletion=complete.systems, help="Systems of the grid (default: every flow system)."),
    top_percent: float = typer.Option(1.0, "--top", help="q of the source top-q % (title only)."),
    out: Path = OutOpt, workspace: WorkspaceOpt = None,
) -> None:
    """Where each system's top q % land in the others' rankings (histograms + retention)."""
    from fmb_engine.figures.run import displacement_figure

    _written(displacement_figure(find_workspace(workspace), systems or None, top_percent, out))


@app.command()
def regression(
    targets: list[str] = typer.Option(None, "--target", "-t", help="Target(s) (default: all probed)."),
    predictor: str = typer.Option("gbm", "--predictor", help="gbm or ridge."),
    out: Path = typer.Option(None, "--output", "--out", "-o", help="Output folder (default figures/regression)."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Held-out truth vs prediction per model x modality with R², its interval and the random baseline."""
    from fmb_engine.errors import ConfigError
    from fmb_engine.figures.run import regression_figures

    if predictor not in ("gbm", "ridge"):
        raise ConfigError(f"--predictor must be gbm or ridge, got {predictor!r}")
    _written(regression_figures(find_workspace(workspace), targets or None, predictor, out))


@app.command()
def umap(
    colour_by: list[str] = typer.Option(None, "--color-by", help="Survey column(s) colouring the points (default redshift)."),
    thumbnails: int = typer.Option(None, "--thumbnails", min=0, max=100,
                                   help="Thumbnail grid beside each map: N x N cells, 0 = none (default: analyze.umap_thumbnails)."),
    out: Path = typer.Option(None, "--output", "--out", "-o", help="Output folder (default figures/umap)."),
    survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None,
) -> None:
    """UMAP maps per model x modality coloured by a physical parameter, optionally with a thumbnail grid
    (the RGB of the object nearest each occupied cell's centre)."""
    from fmb_engine.figures.run import umap_figures

    ws = find_workspace(workspace)
    grid = section("analyze", ws, config, umap_thumbnails=thumbnails).values.umap_thumbnails  # type: ignore[attr-defined]
    _written(umap_figures(ws, survey_file(ws, config, survey), colour_by or ["redshift"], out, grid))


@app.command()
def similarity(
    ids: list[str] = typer.Option(None, "--id", help="Query id(s) whose neighbours are drawn (repeat)."),
    ids_csv: Path = typer.Option(None, "--ids-csv", help="CSV of query ids."),
    top_percent: float = typer.Option(1.0, "--top", help="q of the top-q % share."),
    smooth: float = typer.Option(3.0, "--smooth", help="Gaussian smoothing of spectra (σ in pixels)."),
    out: Path = typer.Option(None, "--output", "--out", "-o", help="Output folder (default figures/similarity)."),
    survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None,
) -> None:
    """Neighbour grid of the query ids and the neighbour anomaly-rank histograms."""
    from fmb_engine.analyze.run import read_query_ids
    from fmb_engine.figures.run import similarity_figures

    ws = find_workspace(workspace)
    _written(similarity_figures(ws, survey_file(ws, config, survey), read_query_ids(ids, ids_csv) or None,
                                top_percent, smooth, out))
