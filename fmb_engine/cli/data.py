"""`fmb-engine data ...`: make, import and inspect surveys."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from fmb_engine.cli import complete
from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, reporter, section, survey_file
from fmb_engine.cli.output import Format, FormatOpt, emit, notes, pairs

if TYPE_CHECKING:
    from fmb_engine.stage_run import StageResult

app = Typer(help="Survey data: mock survey, importer, info, index, quick look.", no_args_is_help=True)


def print_result(result: StageResult) -> None:
    for name, path in result.outputs.items():
        console.print(f"{name}: [bold]{escape(str(path))}[/]")
    if result.manifest:
        console.print(f"manifest: {escape(str(result.manifest))}")


@app.command()
def mock(
    objects: int = typer.Option(None, "--objects", "-n", help="Number of objects (config mock.objects)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (config mock.seed)."),
    anomaly_fraction: float = typer.Option(None, "--anomaly-fraction", help="Fraction of injected anomalies."),
    image_size: int = typer.Option(None, "--image-size", help="Cutout size in pixels."),
    name: str = typer.Option(None, "--name", help="Survey name (written to survey/<name>.h5)."),
    force: bool = typer.Option(False, "--force", help="Replace a survey that embeddings were made from (they become stale)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Simulate the mock survey (images + spectra, injected labelled anomalies); it becomes the active survey."""
    from fmb_engine.survey.active import check_replace
    from fmb_engine.survey.stages import make_mock, mock_params

    ws = find_workspace(workspace)
    resolved = section("mock", ws, config, objects=objects, seed=seed, anomaly_fraction=anomaly_fraction,
                       image_size=image_size, name=name)
    target = ws.survey_path(resolved.values.name)  # type: ignore[attr-defined]
    stale = check_replace(ws, target, force, same=_same_mock(target, mock_params(resolved.values)))  # type: ignore[arg-type]
    result = make_mock(ws, resolved, reporter())
    print_summary(result.summary)
    print_result(result)
    _report_active(ws, result.outputs["survey"], stale)


def _same_mock(path: Path, params: dict) -> bool:
    """True when ``path`` is a mock survey made with these settings (a rerun rewrites the same content)."""
    from fmb_engine.survey.store import SurveyReader

    if not path.is_file():
        return False
    with SurveyReader(path) as reader:
        return reader.generator == "fmb.mock" and reader.params == json.loads(json.dumps(params, default=str))


def _report_active(ws, survey: Path, stale: list[Path]) -> None:
    """Record ``survey`` as the workspace's active survey and say what a replacement made stale."""
    from fmb_engine.survey.active import record_active

    value = record_active(ws, survey)
    console.print(f"active survey: [bold]{escape(value)}[/] (general.survey in {escape(str(ws.config_file))})")
    if stale:
        console.print(f"[yellow]stale now ({len(stale)} files made from the replaced survey): rerun embed and detect[/]")
        for path in stale:
            console.print(f"  {escape(str(path))}")


@app.command("import")
def import_cmd(
    source: Path = typer.Argument(None, help="A parquet/arrow file or a dataset folder (save_to_disk, DatasetDict, parquet shards)."),
    split: list[str] = typer.Option(None, "--split", metavar="NAME|NAME=PATH", help="Split to import, or the name of a source's only split; "
                                    "NAME=PATH assigns a file or folder to a split. Repeatable."),
    catalog: str = typer.Option(None, "--catalog", help="FITS catalogue joined on TARGETID (Z, LOGM, LOGSFR)."),
    name: str = typer.Option(None, "--name", help="Survey name (written to survey/<name>.h5)."),
    image_size: int = typer.Option(None, "--image-size", help="Resample band images to this size."),
    missing: str = typer.Option(None, "--missing", help="keep (flag) or drop rows with a missing band/spectrum."),
    resample: bool = typer.Option(None, "--resample", help="Resample non-square band images (else those rows are dropped)."),
    skip_bad_files: bool = typer.Option(None, "--skip-bad-files", help="Import the readable files; record the bad ones in the manifest."),
    limit: int = typer.Option(None, "--limit", help="Import at most this many rows."),
    force: bool = typer.Option(False, "--force", help="Replace a survey that embeddings were made from (they become stale)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Convert a local copy of the published dataset into the survey store (offline, resumable)."""
    from fmb_engine.survey.active import check_replace
    from fmb_engine.survey.importers.euclid_desi import import_dataset

    ws = find_workspace(workspace)
    resolved = section("import", ws, config, catalog=catalog, name=name, image_size=image_size, missing=missing, limit=limit,
                       splits=split or None, resample=resample, skip_bad_files=skip_bad_files)
    stale = check_replace(ws, ws.survey_path(resolved.values.name), force)  # type: ignore[attr-defined]
    result = import_dataset(ws, source, resolved, reporter())
    print_summary(result.summary)
    print_import_report(result.summary)
    print_result(result)
    _report_active(ws, result.outputs["survey"], stale)


def print_import_report(summary: dict) -> None:
    """Split naming, bad files and the rows not taken as is (details in the manifest)."""
    console.print(f"split naming: {escape(summary['split_naming'])}")
    if summary["ignored_splits"]:
        ignored = ", ".join(f"{k} ({v} file(s))" for k, v in summary["ignored_splits"].items())
        console.print(f"ignored splits: {escape(ignored)} (import them with --split NAME)")
    for bad in summary["bad_files"]:
        console.print(f"skipped bad file: {escape(bad['path'])}: {escape(bad['reason'])}"
                      + (f" ({bad['rows_imported']} objects imported before)" if bad["rows_imported"] else ""))
    for title, key in (("dropped", "dropped"), ("kept, flagged", "kept_with"), ("repaired", "repaired")):
        for reason, n in summary[key].items():
            console.print(f"{title}: {n:,} x {escape(reason)}")
    if any(reason.endswith("expected square") for reason in summary["dropped"]):
        console.print("(--resample resamples stamps that are not square instead of dropping their rows)")
    if summary["dropped"] or summary["kept_with"] or summary["repaired"]:
        console.print("the first 20 object ids of every reason are in the manifest (rows)")


def _redshift_range(span: dict) -> str:
    if not (math.isfinite(span["min"]) and math.isfinite(span["max"])):
        return "none known"
    return f"{span['min']:.3f} - {span['max']:.3f}"


def print_summary(summary: dict, fmt: Format = Format.table) -> None:
    """A survey's summary (SurveyReader.summary(); fields in docs/cli.md): JSON object, one CSV row, or key/value lines."""
    emit(fmt, summary, lambda: [pairs(_summary_rows(summary))])


def _summary_rows(summary: dict) -> list[tuple[str, str]]:
    wl = summary["wavelength"]
    rows = [
        ("file", summary["path"]),
        ("objects", f"{summary['objects']:,}"),
        ("splits", ", ".join(f"{k}: {v:,}" for k, v in summary["splits"].items())),
        ("bands", ", ".join(summary["bands"]) + f"  ({summary['image_size']}x{summary['image_size']} px, RGB: {'yes' if summary['rgb'] else 'no'})"),
        ("spectra", f"{wl['min']:.1f}-{wl['max']:.1f} A, {wl['bins']} bins of {wl['step']:.2f} A"),
        ("redshift", _redshift_range(summary["redshift"])),
        ("missing spectra", str(summary["missing_spectrum"])),
        ("anomaly classes", ", ".join(f"{k}: {v}" for k, v in summary["anomaly_classes"].items()) or "none labelled"),
        ("digest", summary["digest"]),
    ]
    return rows


@app.command()
def info(survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None,
         fmt: FormatOpt = Format.table) -> None:
    """Counts, splits, bands, spectral grid and anomaly classes of a survey."""
    from fmb_engine.survey.store import SurveyReader

    ws = find_workspace(workspace)
    with SurveyReader(survey_file(ws, config, survey)) as reader:
        print_summary(reader.summary(), fmt)


@app.command()
def verify(survey: SurveyOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Re-read a survey and recompute its digest: exit 0 when intact, 1 (a data error naming the file,
    chunk and dataset) when anything differs, is unreadable or is incomplete."""
    from fmb_engine.survey.store import SurveyReader

    ws = find_workspace(workspace)
    path = survey_file(ws, config, survey)
    with SurveyReader(path) as r, reporter().task(f"verify {path.name}", r.n_objects) as task:
        done = [0]

        def progress(rows: int) -> None:
            task.advance(rows - done[0])
            done[0] = rows

        report = r.verify(progress)
    if report["recomputed"]:
        how = f"digest recomputed over {report['chunks']} chunk(s)"
    else:
        how = ("every row read; digest scheme 1 (written before FMB recorded chunk bounds) "
               "cannot be recomputed, rewrite the survey to get a verifiable one")
    console.print(f"OK: {escape(str(path))}: {report['objects']:,} objects, {how}; digest {report['digest']}")


@app.command()
def show(
    object_id: str = typer.Argument(..., help="The object's object_id.", autocompletion=complete.object_ids),
    output: Path = typer.Option(None, "--output", "-o", help="PNG path (default figures/object_<id>.png)."),
    survey: SurveyOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Metadata of one object plus a quick PNG of its bands and spectrum."""
    from fmb_engine.survey.quicklook import render_quicklook
    from fmb_engine.survey.store import SurveyReader

    ws = find_workspace(workspace)
    with SurveyReader(survey_file(ws, config, survey)) as reader:
        obj = reader.get(object_id)
    record = {"row": obj.index, **obj.meta}
    emit(fmt, record, lambda: [pairs(list(record.items()))])
    path = render_quicklook(obj, output or ws.folder("figures") / f"object_{object_id}.png")
    notes(fmt).print(f"quick look: [bold]{escape(str(path))}[/]")


@app.command()
def index(
    output: Path = typer.Option(None, "--output", "-o", help="CSV path (default next to the survey)."),
    survey: SurveyOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write object_id,split,index[,row] CSV like the reference system's index."""
    from fmb_engine.survey.stages import write_index

    ws = find_workspace(workspace)
    path = write_index(ws, survey_file(ws, config, survey), output)
    console.print(f"index: [bold]{escape(str(path))}[/]")
