"""`fmb-engine embed ...`: one command per registered embedder, plus import/export of reference files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.jobs import ExecutorOpt, refuse_ignored_options
from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, reporter, section, survey_file
from fmb_engine.embed.catalog import DEFAULT_SHARD_SIZE, EMBEDDERS
from fmb_engine.errors import ConfigError

app = Typer(help="Compute embeddings (one command per model); import/export reference .pt files.",
                  no_args_is_help=True)

BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Objects per batch (embed.<model>.batch_size).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (embed.<model>.device).")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="Weights directory or Hugging Face cache (embed.<model>.weights).")]
StartOpt = Annotated[int, typer.Option("--start", min=0, help="First survey row to embed (for SLURM array shards).")]
StopOpt = Annotated[int | None, typer.Option("--stop", min=0, help="Row after the last one to embed (default: the end).")]
ShardOpt = Annotated[int, typer.Option("--shard-size", min=1, help="Rows per shard file (the unit of resumption).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Discard earlier shards and recompute everything.")]
ArrayOpt = Annotated[int, typer.Option("--shards", min=1, help="With --executor: number of array tasks (row shards).")]
FitFromOpt = Annotated[Path | None, typer.Option("--fit-from", help="pca/cca: reuse the fit stored in this embedding file.")]


#: Why an object's vector of some modality is not valid, in words, per reason of the embedding store.
_REASON_WORDS = {"missing_band": "missing an image band", "no_spectrum": "without a usable spectrum",
                 "no_valid_spectrum_pixels": "without a usable spectrum"}


def modality_counts(modalities: dict[str, dict]) -> str:
    """``image: 45 embedded; spectrum: 10 embedded, 35 without a usable spectrum`` (per modality, valid vectors)."""
    parts = []
    for m, c in modalities.items():
        text = f"{m}: {c['embedded']} embedded"
        if c["missing"]:
            words = dict.fromkeys(_REASON_WORDS.get(r.split(":", 1)[0], "with a non-finite vector") for r in c["by_reason"])
            text += f", {c['missing']} {' or '.join(words) or 'not valid'}"
        parts.append(text)
    return "; ".join(parts)


def _embed(name, workspace, config, survey, batch_size, device, weights, start, stop, shard_size, force, fit_from,
           shard=None, shards=None, executor=None, array=1) -> None:
    from fmb_engine.embed.run import embed_survey
    from fmb_engine.embed.shards import shard_range

    ws = find_workspace(workspace)
    resolved = section(f"embed.{name}", ws, config, batch_size=batch_size, device=device, weights=weights)
    path = survey_file(ws, config, survey)
    if executor is not None:
        from fmb_engine.cli.jobs import print_submission
        from fmb_engine.embed.shards import discard
        from fmb_engine.jobs.stages import submit_embedding

        if force:  # the array tasks then start from nothing
            discard(ws, name)
        print_submission(submit_embedding(ws, path, name, resolved, array, executor, section("jobs", ws, config)))
        return
    if shards is not None:
        from fmb_engine.survey.store import SurveyReader

        with SurveyReader(path) as reader:
            start, stop = shard_range(reader.n_objects, shard or 0, shards)
    result = embed_survey(ws, path, name, resolved, reporter(), start=start, stop=stop, shard_size=shard_size,
                          force=force, fit_from=fit_from)
    s = result.summary
    if "embeddings" in result.outputs:
        console.print(f"[green]done[/]: {escape(str(result.outputs['embeddings']))} ({s.get('objects')} objects; "
                      f"{escape(modality_counts(s['modalities']))})")
    else:
        missing = ", ".join(f"[{a}, {b})" for a, b in s.get("missing", [])[:5])
        console.print(f"[yellow]partial[/]: rows {s['range'][0]}-{s['range'][1]} embedded; still missing {missing}")
    if result.manifest:
        console.print(f"manifest: {escape(str(result.manifest))}")


def _make_command(name: str):
    info = EMBEDDERS[name]

    def command(
        ctx: typer.Context,
        workspace: WorkspaceOpt = None,
        config: ConfigOpt = None,
        survey: SurveyOpt = None,
        batch_size: BatchOpt = None,
        device: DeviceOpt = None,
        weights: WeightsOpt = None,
        start: StartOpt = 0,
        stop: StopOpt = None,
        shard_size: ShardOpt = DEFAULT_SHARD_SIZE,
        force: ForceOpt = False,
        fit_from: FitFromOpt = None,
        executor: ExecutorOpt = None,
        array: ArrayOpt = 1,
    ) -> None:
        refuse_ignored_options(ctx, executor, in_process_only=("start", "stop", "shard_size", "fit_from"),
                               submit_only=("array",),
                               why="the submitted array embeds every row of the survey in --shards tasks, "
                                   "with the default shard files and the model's own fit")
        _embed(name, workspace, config, survey, batch_size, device, weights, start, stop, shard_size, force, fit_from,
               executor=executor, array=array)

    command.__name__ = f"embed_{name}"
    command.__doc__ = (
        f"{info.summary} Modalities: {', '.join(info.modalities)}; aligned: {'yes' if info.aligned else 'no'}"
        f"{'; fitted on the train split first' if info.needs_fit else ''}. Resumes an interrupted run."
    )
    return command


for _name in EMBEDDERS:
    app.command(_name)(_make_command(_name))


@app.command("run")
def run_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Embedder name (see `fmb-engine models list`)."),
    shard: int = typer.Option(0, "--shard", min=0, help="This array task's index (SLURM_ARRAY_TASK_ID)."),
    shards: int = typer.Option(1, "--shards", min=1, help="Number of array tasks; rows are split evenly."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    survey: SurveyOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    shard_size: ShardOpt = DEFAULT_SHARD_SIZE,
    fit_from: FitFromOpt = None,
) -> None:
    """Array-task form: embed rows of task --shard of --shards with --model (the task completing the survey merges)."""
    from fmb_engine.embed import base

    base.get(model)  # ConfigError naming the embedders for an unknown name
    _embed(model, workspace, config, survey, batch_size, device, weights, 0, None, shard_size, False, fit_from,
           shard=shard, shards=shards)


@app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Reference .pt file (list of per-object dicts)."),
    model: str = typer.Option(..., "--model", "-m", help="Embedder that produced it (picks keys and 'aligned')."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output .h5 (default: embeddings/<model>.h5)."),
    workspace: WorkspaceOpt = None,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Import a reference-system .pt embedding file (read safely, weights_only) into the FMB store."""
    from fmb_engine.embed.interop import import_reference_pt
    from fmb_engine.embed.shards import embeddings_path

    out = output if output is not None else embeddings_path(find_workspace(workspace), model)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it or --output to write elsewhere")
    path, info = import_reference_pt(file, out, model=model)
    console.print(f"[green]imported[/] {info['objects']} objects ({', '.join(info['modalities'])}; keys: {info['family']}) "
                  f"-> {escape(str(path))}")
    if info.get("not_valid"):
        console.print(f"[yellow]{info['not_valid']} objects have a missing or non-finite vector (flagged not valid)[/]")


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="Model name (embeddings/<model>.h5) or a path to an FMB embedding .h5.",
                                autocompletion=complete.embedding_runs),
    output: Path = typer.Option(..., "--output", "-o", help="Output .pt file."),
    fmt: str = typer.Option("fmb-pt", "--format", help="Output format: fmb-pt (the reference list-of-dicts .pt)."),
    family: str | None = typer.Option(None, "--family", help="Key family: aion, astropt, astroclip, generic (default: from the model)."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Export embeddings in the reference system's .pt format (for its analysis scripts)."""
    from fmb_engine.embed.interop import export_reference_pt
    from fmb_engine.embed.shards import embeddings_path

    if fmt != "fmb-pt":
        raise ConfigError(f"unknown export format {fmt!r}; supported: fmb-pt")
    src = Path(model) if model.endswith((".h5", ".hdf5")) else embeddings_path(find_workspace(workspace), model)
    path = export_reference_pt(src, output, family)
    console.print(f"[green]exported[/] {escape(str(src))} -> {escape(str(path))}")


@app.command("synthetic")
def synthetic_cmd(
    objects: int = typer.Option(..., "--objects", "-n", help="Number of objects N (any size: written in chunks)."),
    dims: str | None = typer.Option(None, "--dims", help="Modalities and their dimensions, MODALITY=D,... of image, "
                                    "spectrum, joint (default image=768,spectrum=768,joint=1536)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same file whatever --chunk is."),
    outlier_fraction: float = typer.Option(0.01, "--outlier-fraction",
                                           help="Share of injected outliers (exactly floor(N*F); kinds in docs/science.md)."),
    chunk: int | None = typer.Option(None, "--chunk", help="Rows generated and written at a time: sets the memory, "
                                     "not the content (default 8192, best a multiple of 1024)."),
    name: str = typer.Option("synthetic", "--name", help="Output embeddings/<name>.h5 (also the run's name in detect)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing embeddings/<name>.h5."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Synthetic embeddings of N objects with latent structure, injected outliers and their truth (no survey)."""
    from fmb_engine.embed.synthetic import DEFAULT_DIMS, SyntheticSpec, parse_dims
    from fmb_engine.embed.synthetic_file import DEFAULT_CHUNK, write_synthetic

    spec = SyntheticSpec(objects, parse_dims(dims) if dims is not None else dict(DEFAULT_DIMS), seed, outlier_fraction)
    result = write_synthetic(find_workspace(workspace), spec, name, chunk if chunk is not None else DEFAULT_CHUNK,
                             reporter(), force=force)
    s = result.summary
    outliers = ", ".join(f"{n:,} {kind}" for kind, n in s["outliers"].items())
    console.print(f"[green]done[/]: {escape(str(result.outputs['embeddings']))} ({s['objects']:,} objects; "
                  f"{', '.join(f'{m}: {d}' for m, d in s['dims'].items())}; outliers: {outliers})")
    console.print(f"manifest: {escape(str(result.manifest))}")
