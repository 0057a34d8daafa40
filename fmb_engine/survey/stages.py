"""Stage doors of the survey room: make a mock survey, write the index CSV.

Each door takes a workspace and a validated config section, writes artifacts
atomically plus a run manifest, and returns what it wrote.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from fmb_engine import locks
from fmb_engine.config import Resolved
from fmb_engine.config.schemas import MockConfig
from fmb_engine.csv_tables import write_csv
from fmb_engine.manifest import RunManifest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.stage_run import StageResult, config_record, stage_run
from fmb_engine.survey import interrupts, mock
from fmb_engine.survey.bands import wavelength_grid
from fmb_engine.survey.store import SurveyReader, SurveyWriter
from fmb_engine.workspace import Workspace


def mock_params(cfg: MockConfig) -> dict:
    """The settings that decide the mock survey's content (stored in the file; equal settings, equal survey)."""
    return cfg.model_dump(exclude={"name", "batch_size", "compression"}) | {"batch_size": cfg.batch_size}


def store_lock(ws: Workspace, name: str) -> contextlib.AbstractContextManager:
    """The write lock of ``survey/<name>.h5`` (one writer per store; a second gets BusyError)."""
    return locks.hold(ws.survey_path(name), f"survey store survey/{name}.h5")


def report_resume(writer: SurveyWriter, reporter: Reporter, manifest: RunManifest) -> None:
    """Say what a writer found in the partial file: damaged chunks dropped, a restart, a resume."""
    for note in writer.notes:
        reporter.log(note)
        manifest.warn(note)
    if writer.resumed_from:
        reporter.log(f"resuming {writer.partial.name} after {writer.resumed_from} objects (verified)")
        manifest.count("resumed_from", writer.resumed_from)


def make_mock(ws: Workspace, resolved: Resolved, reporter: Reporter | None = None) -> StageResult:
    """Simulate the mock survey into ``survey/<name>.h5`` (resumes an interrupted run)."""
    cfg: MockConfig = resolved.values  # type: ignore[assignment]
    with store_lock(ws, cfg.name), stage_run(ws, "data.mock", config_record(resolved), seed=cfg.seed) as manifest:
        return _make_mock(ws, manifest, cfg, reporter or Silent())


def _make_mock(ws: Workspace, manifest: RunManifest, cfg: MockConfig, reporter: Reporter) -> StageResult:
    out = ws.survey_path(cfg.name)
    params = mock_params(cfg)
    with manifest.phase("population"):
        pop = mock.draw_population(cfg.objects, cfg.seed, cfg.anomaly_fraction, cfg.train_fraction)
    writer = SurveyWriter(
        out, image_size=cfg.image_size, wavelength=wavelength_grid(), rgb=cfg.rgb, generator="fmb.mock",
        params=params, compression=cfg.compression, expected_objects=cfg.objects, reserve_objects=cfg.objects,
    )
    report_resume(writer, reporter, manifest)
    chunks = [
        (chunk, np.arange(start, min(start + cfg.batch_size, cfg.objects)))
        for chunk, start in enumerate(range(0, cfg.objects, cfg.batch_size))
        if start >= writer.resumed_from
    ]
    rendered = mock.render_chunks(pop, cfg.image_size, cfg.seed, chunks, cfg.rgb, cfg.workers)
    try:
        with interrupts.deferred() as check:
            with contextlib.closing(rendered), reporter.task(f"mock survey -> {out.name}", cfg.objects) as task:
                task.advance(writer.resumed_from)
                with manifest.phase("render+write"):
                    for rows, data in rendered:
                        writer.append(mock.catalogue_columns(pop, rows, cfg.seed), data["images"], data["flux"],
                                      data["ivar"], data["mask"], rgb=data.get("rgb"))
                        task.advance(len(rows))
                        check()
            with manifest.phase("finalise"):
                writer.close()
    except BaseException:
        writer.abort()
        raise
    with SurveyReader(out) as reader:
        summary = reader.summary()
    manifest.count("objects", summary["objects"])
    manifest.count("splits", summary["splits"])
    manifest.count("anomaly_classes", summary["anomaly_classes"])
    requested = int(round(cfg.anomaly_fraction * cfg.objects))
    injected = mock.anomaly_count(cfg.objects, cfg.anomaly_fraction)
    if injected != requested:
        manifest.warn(f"anomaly count raised from {requested} to {injected} so that every class appears")
    manifest.input_digest("survey_digest", summary["digest"])
    manifest.output("survey", out)
    return StageResult({"survey": out}, manifest.path, summary)


def write_index(ws: Workspace, survey: Path, output: Path | None = None) -> Path:
    """``object_id,split,index`` CSV like the reference system's (index = row within its split)."""
    with SurveyReader(survey) as reader:
        table = reader.table()[["object_id", "split"]].copy()
    table["index"] = table.groupby("split").cumcount()
    table["row"] = np.arange(len(table))
    output = output or survey.with_suffix(".index.csv")
    return write_csv(table, output)
