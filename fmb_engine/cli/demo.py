"""`fmb-engine demo`: a workspace with the mock survey and every stage run on it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fmb_engine.cli.common import reporter, section
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, table
from fmb_engine.workspace import Workspace


def best_fused(systems: list[str]) -> str:
    """The fused ranking the outlier grid shows: cca's if present (aligned), else the first fused one."""
    fused = [s for s in systems if "/fused/fisher" in s]
    return next((s for s in fused if s.startswith("cca/")), fused[0] if fused else systems[0])


def demo(
    directory: Path = typer.Option(Path("fmb-demo"), "--workspace", "-w", help="Workspace to create or reuse."),
    objects: int = typer.Option(None, "--objects", "-n", help="Mock survey size (default: mock.objects)."),
    seed: int = typer.Option(None, "--seed", help="Seed for every stage."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Include UMAP (its first call JIT-compiles for ~35 s)."),
    fmt: FormatOpt = Format.table,
) -> None:
    """Init a workspace, simulate the mock survey and run every implemented stage on it."""
    from fmb_engine.analyze.run import (analyze_neighbor_ranks, analyze_rankings, analyze_regression,
                                        analyze_similarity, analyze_umap)
    from fmb_engine.detect.evaluation import evaluate_workspace
    from fmb_engine.detect.run import detect
    from fmb_engine.embed.run import embed_survey
    from fmb_engine.figures.run import (displacement_figure, heatmap_figures, object_fig, outlier_grid_figure,
                                        regression_figures, similarity_figures, umap_figures)
    from fmb_engine.survey.active import record_active
    from fmb_engine.survey.quicklook import render_quicklook
    from fmb_engine.survey.stages import make_mock, write_index
    from fmb_engine.survey.store import SurveyReader

    ws = Workspace.init(directory, exist_ok=True)
    rep = reporter()
    outputs: list[tuple[str, Path]] = [("workspace", ws.root)]
    mock_cfg = section("mock", ws, None, objects=objects, seed=seed)
    result = make_mock(ws, mock_cfg, rep)
    survey = result.outputs["survey"]
    record_active(ws, survey)  # the demo's workspace works on its survey, like after `data mock`
    outputs.append(("mock survey", survey))
    outputs.append(("index", write_index(ws, survey)))
    with SurveyReader(survey) as reader:
        table = reader.table()
        labelled = table.index[table["anomaly_class"] != ""]
        reader_first_id = str(table["object_id"].iloc[int(labelled[0])]) if len(labelled) else ""
        if len(labelled):
            obj = reader.get(int(labelled[0]))
            outputs.append((f"quick look ({obj.meta['anomaly_class']})", render_quicklook(obj, ws.folder("figures") / f"object_{obj.object_id}.png")))
    for model in ("pca", "cca"):
        embedded = embed_survey(ws, survey, model, section(f"embed.{model}", ws, None), rep)
        outputs.append((f"{model} embeddings", embedded.outputs["embeddings"]))
    detected = detect(ws, section("detect", ws, None, seed=seed), rep)
    outputs.append(("anomaly scores", detected.outputs["scores"]))
    outputs.append(("systems table", detected.outputs["systems"]))
    evaluated = evaluate_workspace(ws, survey)
    outputs.append(("evaluation vs injected truth", evaluated.outputs["report"]))
    analyze_cfg = section("analyze", ws, None)
    outputs.append(("rankings comparison", analyze_rankings(ws, analyze_cfg, rep).outputs.get("spearman", ws.folder("analysis"))))
    analyze_similarity(ws, analyze_cfg, rep)
    analyze_neighbor_ranks(ws, analyze_cfg, rep)
    analyze_regression(ws, analyze_cfg, survey, rep)
    if umap:
        analyze_umap(ws, analyze_cfg, rep)
    figures = [
        outlier_grid_figure(ws, survey, system=best_fused(detected.summary["systems"])),
        heatmap_figures(ws),
        displacement_figure(ws),
        regression_figures(ws),
        similarity_figures(ws, survey),
    ]
    if umap:
        figures.append(umap_figures(ws, survey, ["redshift", "logM"]))
    if len(labelled):
        figures.append(object_fig(ws, survey, reader_first_id))
    outputs.append((f"figures ({sum(len(f.outputs) for f in figures)} files, PNG + PDF)", ws.folder("figures")))
    outputs.append(("run manifests", ws.folder("runs")))

    best = evaluated.summary["overview"].head(5)["auroc"].items()
    print_summary(fmt, ws.root, outputs, [{"system": k, "auroc": v} for k, v in best])


def print_summary(fmt: Format, root: Path, outputs: list[tuple[str, Path]], best: list[dict]) -> None:
    """What the demo made and its five best systems: JSON object, CSV of the outputs, or a table and two lines."""
    records = [{"what": what, "where": where} for what, where in outputs]

    def shown():
        return [table(records, (Column("what", style="cyan"), Column("where")), title="demo outputs", show_edge=False),
                "\nbest systems on the injected anomalies (AUROC): " + ", ".join(f"{b['system']} {b['auroc']:.3f}" for b in best),
                f"\nexplore it: [bold]fmb-tui {escape(str(root))}[/]   or   fmb-engine --help"]

    emit(fmt, {"workspace": root, "outputs": records, "best": best}, shown, rows=records)
