"""Importer for a local copy of the published Euclid Q1 x DESI DR1 dataset.

The reference system reads the Hugging Face dataset
``msiudek/astroPT_euclid_Q1_desi_dr1_dataset``. We read a local copy, offline:
``save_to_disk`` folders (Arrow IPC files + ``state.json``), a ``DatasetDict``
folder, the reference layout ``<dir>/msiudek__..._{train,test}``, parquet files,
or any one file or folder of tables in the dataset's column layout
(:mod:`.layout` decides the split of every file).

Columns: object_id, targetid, redshift, RGB_image ({bytes, path}), VIS_image,
NISP_Y/J/H_image (2-D float lists), spectrum {flux, wavelength, error}; sed_data
is not used. Before anything is written, every file is opened and its columns
checked (:mod:`.tables`): a bad file stops the import with its name -- or, with
``skip_bad_files``, is left out and recorded in the manifest. Rows are then
converted batch by batch (bounded memory) by :mod:`.rows`, which logs every row
that is dropped, kept flagged or repaired under a reason naming the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.config import Resolved
from fmb_engine.config.loader import DEFAULT_ORIGIN
from fmb_engine.config.schemas import ImportConfig
from fmb_engine.errors import DataError
from fmb_engine.manifest import RunManifest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.stage_run import StageResult, config_record, stage_run
from fmb_engine.survey import interrupts
from fmb_engine.survey.bands import BANDS, wavelength_grid
from fmb_engine.survey.importers.layout import Layout, SourceFile, absolute, plan
from fmb_engine.survey.importers.rows import Chunk, RowLog, RowRules, convert_batch
from fmb_engine.survey.importers.tables import BadFile, batches, inspect
from fmb_engine.survey.store import SurveyReader, SurveyWriter
from fmb_engine.workspace import Workspace


class Catalogue:
    """FITS catalogue joined on TARGETID for Z, LOGM, LOGSFR (case-insensitive columns)."""

    ID_COLUMNS = ("TARGETID", "targetid", "TargetID", "object_id", "objid")
    WANTED = {"redshift": "Z", "logM": "LOGM", "logSFR": "LOGSFR"}

    def __init__(self, path: Path):
        from astropy.table import Table

        if not path.is_file():
            raise DataError(f"catalogue not found: {path}")
        try:
            table = Table.read(path, hdu=1)
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for unreadable files
            raise DataError(f"{path}: cannot read FITS catalogue ({type(exc).__name__}: {exc})") from None
        names = {n.upper(): n for n in table.colnames}
        id_col = next((c for c in self.ID_COLUMNS if c in table.colnames), None)
        if id_col is None:
            raise DataError(f"{path}: no id column; expected one of {', '.join(self.ID_COLUMNS)}; columns: {', '.join(table.colnames)}")
        cols: dict[str, np.ndarray] = {}
        for ours, theirs in self.WANTED.items():
            if theirs not in names:
                continue
            column = table[names[theirs]]
            try:
                data = column.filled(np.nan) if hasattr(column, "filled") else column
                cols[ours] = np.asarray(data, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{path}: column {names[theirs]} has type {column.dtype}, expected numbers") from None
        if not cols:
            raise DataError(f"{path}: none of the columns Z, LOGM, LOGSFR found; columns: {', '.join(table.colnames)}")
        ids = [str(v).strip() for v in table[id_col]]
        self.values = {key: {ours: float(col[i]) for ours, col in cols.items()} for i, key in enumerate(ids)}
        self.columns = sorted(cols)

    def lookup(self, targetid: Any) -> dict[str, float] | None:
        return self.values.get(str(targetid).strip())


def _write(writer: SurveyWriter, chunk: Chunk, state: dict[str, Any]) -> None:
    if not len(chunk):
        writer.append({}, np.empty((0, len(BANDS), writer.image_size, writer.image_size), np.float32),
                      np.empty((0, 0)), np.empty((0, 0)), np.empty((0, 0)), resume_state=state)
        return
    writer.append(
        {k: np.asarray(v) for k, v in chunk.columns.items()},
        np.stack(chunk.images), np.stack(chunk.flux), np.stack(chunk.ivar), np.stack(chunk.mask),
        rgb=np.stack(chunk.rgb), has_bands=np.stack(chunk.has_bands), resume_state=state,
    )


def _check_files(files: list[SourceFile], need_targetid: bool, skip_bad: bool) -> tuple[list[SourceFile], list[int], list[dict]]:
    """Open every file before anything is written: the readable ones, their row counts, the bad ones."""
    good, rows, bad = [], [], []
    for src in files:
        try:
            rows.append(inspect(src, need_targetid))
            good.append(src)
        except BadFile as exc:
            bad.append({"path": str(src.path), "split": src.split, "reason": exc.reason, "rows_imported": 0})
    if bad and (not skip_bad or not good):
        listed = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad)
        if len(files) == 1:
            raise DataError(f"{bad[0]['path']}: {bad[0]['reason']}")
        hint = "" if good else " (none of them can be imported)"
        advice = "fix or remove them, or pass --skip-bad-files to import the others" if good else "fix them"
        raise DataError(f"{len(bad)} of {len(files)} input files cannot be imported{hint}; {advice}:\n{listed}")
    return good, rows, bad


def import_dataset(ws: Workspace, source: str | Path | None, resolved: Resolved, reporter: Reporter | None = None) -> Any:
    """Convert a local Euclid x DESI copy into ``survey/<name>.h5`` (resumable, streaming, one writer at a time)."""
    from fmb_engine.survey.stages import store_lock

    cfg: ImportConfig = resolved.values  # type: ignore[assignment]
    where = str(absolute(source)) if source is not None else "the --split NAME=PATH files"
    with store_lock(ws, cfg.name), stage_run(ws, "data.import", config_record(resolved) | {"source": where}) as manifest:
        return _import_dataset(manifest, ws, source, where, resolved, cfg, reporter or Silent())


def _import_dataset(manifest: RunManifest, ws: Workspace, source: str | Path | None, where: str, resolved: Resolved,
                    cfg: ImportConfig, reporter: Reporter) -> Any:
    from fmb_engine.survey.stages import report_resume

    layout = plan(source, cfg.splits, resolved.sources.get("splits", DEFAULT_ORIGIN) != DEFAULT_ORIGIN)
    catalogue = Catalogue(Path(cfg.catalog).expanduser()) if cfg.catalog else None
    files, totals, bad_files = _check_files(layout.files, catalogue is not None, cfg.skip_bad_files)
    for bad in bad_files:
        reporter.log(f"skipping bad file {bad['path']}: {bad['reason']}")
    params: dict[str, Any] = {"source": where, "files": [f"{f.split}={f.path}" for f in files], "image_size": cfg.image_size,
                              "missing": cfg.missing, "resample": cfg.resample, "limit": cfg.limit}
    if catalogue is not None:
        params["catalog_digest"] = manifest.input("catalog", Path(cfg.catalog).expanduser())
    base = absolute(source) if source is not None and Path(source).expanduser().is_dir() else None
    for f in files:  # keyed by the path under SOURCE: every split of save_to_disk has a data-00000-of-00001.arrow
        key = f.path.relative_to(base) if base is not None and f.path.is_relative_to(base) else f.path
        manifest.input(f"source:{key}", f.path, digest=f"size={f.path.stat().st_size}")
    out = ws.survey_path(cfg.name)
    rules = RowRules(cfg.image_size, cfg.missing, cfg.resample, wavelength_grid())
    total = min(sum(totals), cfg.limit) if cfg.limit else sum(totals)
    writer = SurveyWriter(out, image_size=cfg.image_size, wavelength=rules.grid, rgb=True, generator="fmb.import.euclid_desi",
                          params=params, compression=cfg.compression, reserve_objects=total)
    report_resume(writer, reporter, manifest)
    state = dict(writer.resume_state) or {"file": 0, "row": 0, "rows": {}, "bad_files": bad_files}
    log = RowLog(state.get("rows"))
    bad_files = list(state.get("bad_files", bad_files))
    seen: set[str] = set()
    if writer.resumed_from:
        seen = writer.written_ids()
    consumed = sum(totals[: state["file"]]) + state["row"]

    def checkpoint(file_index: int, row: int) -> dict[str, Any]:
        return {"file": file_index, "row": row, "rows": log.state(), "bad_files": bad_files}

    written_before = writer.n_written
    try:
        with interrupts.deferred() as check:
            with reporter.task(f"import -> {out.name}", total) as task, manifest.phase("convert+write"):
                task.advance(consumed)
                for fi, src in enumerate(files):
                    if fi < state["file"] or (cfg.limit is not None and consumed >= cfg.limit):
                        continue
                    skip_to = state["row"] if fi == state["file"] else 0
                    written_before = writer.n_written
                    try:
                        for first, batch in batches(src, cfg.batch_size):
                            end = first + batch.num_rows
                            if end <= skip_to:
                                continue
                            if first < skip_to:
                                batch, first = batch.slice(skip_to - first), skip_to
                            if cfg.limit is not None:
                                if consumed >= cfg.limit:
                                    break
                                batch = batch.slice(0, cfg.limit - consumed)
                            chunk = convert_batch(batch, first, src, rules, catalogue, seen, log)
                            consumed += batch.num_rows
                            _write(writer, chunk, checkpoint(fi, first + batch.num_rows))
                            task.advance(batch.num_rows)
                            check()
                    except BadFile as exc:
                        if not cfg.skip_bad_files:
                            raise
                        imported = writer.n_written - written_before
                        bad_files.append({"path": str(src.path), "split": src.split, "reason": exc.reason, "rows_imported": imported})
                        reporter.log(f"skipping the rest of bad file {src.path}: {exc.reason} ({imported} objects imported before)")
                    _write(writer, Chunk(), checkpoint(fi + 1, 0))
            if writer.n_written == 0:
                raise DataError(f"no row could be imported from {where}; dropped per reason: {log.totals('dropped')}")
            writer.close()
    except BaseException as exc:
        if writer.n_written == 0:
            writer.discard()  # nothing worth resuming: leave no empty .partial behind
        else:
            writer.abort()  # the .partial resumes when the command is run again
        if isinstance(exc, BadFile):
            bad_files.append({"path": str(exc.path), "reason": exc.reason, "rows_imported": writer.n_written - written_before})
        manifest.record("bad_files", bad_files)
        manifest.record("rows", log.reasons)
        raise
    with SurveyReader(out) as reader:
        summary = reader.summary()
    _record(manifest, log, bad_files, layout, consumed, summary)
    manifest.output("survey", out)
    summary |= {
        "split_naming": layout.naming, "ignored_splits": layout.ignored, "bad_files": bad_files,
        "dropped": log.totals("dropped"), "kept_with": log.totals("kept"), "repaired": log.totals("repaired"),
    }
    return StageResult({"survey": out}, manifest.path, summary)


def _record(manifest: RunManifest, log: RowLog, bad_files: list[dict], layout: Layout, consumed: int, summary: dict) -> None:
    """Counts, per-reason row log and bad files into the manifest (docs/formats.md, run manifest)."""
    for reason, n in log.totals("dropped").items():
        manifest.dropped(reason, n)
    manifest.record("rows", {action: log.reasons[action] for action in ("dropped", "kept", "repaired")})
    manifest.record("bad_files", bad_files)
    for reason, n in log.totals("kept").items():
        manifest.count(f"kept_with:{reason}", n)
    for key in ("masked_input_pixels", "objects_with_nonfinite_flux", "resampled_images"):
        log.counts.setdefault(key, 0)
    for key, n in sorted(log.counts.items()):
        manifest.count(key, int(n))
    manifest.count("rows_read", consumed)
    manifest.count("objects", summary["objects"])
    manifest.count("splits", summary["splits"])
    manifest.count("dropped_total", sum(log.totals("dropped").values()))
    manifest.count("bad_files", len(bad_files))
    manifest.record("split_naming", layout.naming)
    if layout.ignored:
        manifest.record("ignored_splits", layout.ignored)
    manifest.input_digest("survey_digest", summary["digest"])
