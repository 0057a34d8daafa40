"""Importer for a local copy of the published Euclid Q1 x DESI DR1 dataset.

The reference system reads the Hugging Face dataset
``msiudek/astroPT_euclid_Q1_desi_dr1_dataset``. We read a local copy, offline:

* ``save_to_disk`` folders (Arrow IPC stream files + ``state.json``), either one
  split per folder, a ``DatasetDict`` folder (``dataset_dict.json`` + one folder
  per split), or the reference layout ``<dir>/msiudek__..._{train,test}``;
* parquet files (a file, or a folder searched recursively; the split is the file
  name's prefix, ``train-00000-of-00003.parquet``).

Columns: object_id, targetid, redshift, RGB_image ({bytes, path}), VIS_image,
NISP_Y/J/H_image (2-D float lists), spectrum {flux, wavelength, error}; sed_data
is not used. Rows are converted batch by batch (bounded memory). A bad row never
stops the run: it is counted per reason in the manifest; rows with a missing band
or spectrum are kept and flagged (``missing: keep``) or dropped (``missing: drop``).

Spectra go onto the store's grid; ivar = 1/error^2 where the error is finite and
positive, else the pixel is masked with ivar 0 (the reference system produced
inf there, its bug L18).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmb_engine.config import Resolved
from fmb_engine.config.schemas import ImportConfig
from fmb_engine.errors import DataError
from fmb_engine.manifest import RunManifest, file_digest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.survey.bands import BANDS, DATASET_BAND_COLUMNS, wavelength_grid
from fmb_engine.survey.composite import asinh_rgb
from fmb_engine.survey.store import SurveyReader, SurveyWriter
from fmb_engine.workspace import Workspace

REQUIRED_COLUMNS = ("object_id",)


@dataclass(frozen=True)
class SourceFile:
    path: Path
    split: str
    kind: str  # "arrow" | "parquet"


# ----------------------------------------------------------------------------------- discovery
def _split_from_name(name: str) -> str:
    for candidate in ("train", "test", "validation"):
        if name == candidate or name.startswith(candidate + "-") or name.endswith("_" + candidate) or name.endswith("__" + candidate):
            return candidate
    return name.split("-")[0]


def _arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.is_file():
        files = json.loads(state.read_text()).get("_data_files", [])
        if files:
            return [folder / f["filename"] for f in files]
    return sorted(folder.glob("*.arrow"))


def discover(source: Path) -> list[SourceFile]:
    """Every data file under ``source`` with its split, in a stable order."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"dataset source not found: {source}")
    if source.is_file():
        if source.suffix == ".parquet":
            return [SourceFile(source, _split_from_name(source.stem), "parquet")]
        if source.suffix == ".arrow":
            return [SourceFile(source, _split_from_name(source.parent.name), "arrow")]
        raise DataError(f"{source}: expected a parquet or arrow file, or a dataset folder")
    if (source / "state.json").is_file() or list(source.glob("*.arrow")):
        return [SourceFile(p, _split_from_name(source.name), "arrow") for p in _arrow_files(source)]
    found: list[SourceFile] = []
    dict_file = source / "dataset_dict.json"
    split_dirs = json.loads(dict_file.read_text())["splits"] if dict_file.is_file() else None
    for child in sorted(p for p in source.iterdir() if p.is_dir()):
        if split_dirs is not None and child.name not in split_dirs:
            continue
        if (child / "state.json").is_file() or list(child.glob("*.arrow")):
            found += [SourceFile(p, _split_from_name(child.name), "arrow") for p in _arrow_files(child)]
    if not found:
        found = [SourceFile(p, _split_from_name(p.stem), "parquet") for p in sorted(source.rglob("*.parquet"))]
    if not found:
        raise DataError(
            f"{source}: no dataset found (looked for save_to_disk folders with state.json/*.arrow, "
            "a dataset_dict.json, or *.parquet files)"
        )
    return found


def _batches(src: SourceFile, batch_size: int) -> Iterator[pa.RecordBatch]:
    if src.kind == "parquet":
        yield from pq.ParquetFile(src.path).iter_batches(batch_size=batch_size)
        return
    with pa.memory_map(str(src.path)) as mm:
        try:
            reader = pa.ipc.open_stream(mm)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(mm)
            for i in range(reader.num_record_batches):
                yield from reader.get_batch(i).to_batches(max_chunksize=batch_size)
            return
        for batch in reader:
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_size)


def _count_rows(src: SourceFile) -> int | None:
    if src.kind == "parquet":
        return pq.ParquetFile(src.path).metadata.num_rows
    info = src.path.parent / "dataset_info.json"
    if info.is_file():
        splits = json.loads(info.read_text()).get("splits") or {}
        if src.split in splits and len(_arrow_files(src.path.parent)) == 1:
            return int(splits[src.split].get("num_examples", 0)) or None
    return None


# ----------------------------------------------------------------------------------- row conversion
def _storage(col: pa.Array) -> pa.Array:
    return col.storage if isinstance(col, pa.ExtensionArray) else col


def _as_image(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 3 and 1 in arr.shape:
        arr = arr.squeeze()
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"band image has shape {arr.shape}, expected 2-D")
    return arr


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resample of a 2-D image to ``size`` x ``size`` (NaN-safe: NaN -> 0)."""
    if img.shape == (size, size):
        return img
    from scipy.ndimage import zoom

    return zoom(np.nan_to_num(img), (size / img.shape[0], size / img.shape[1]), order=1).astype(np.float32)[:size, :size]


def _decode_rgb(value: Any, base: Path, size: int) -> np.ndarray | None:
    if value is None:
        return None
    from PIL import Image

    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
    if data is None and path:
        data = (base / path).read_bytes()
    if data is None:
        return None
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def spectrum_to_grid(flux: np.ndarray, wave: np.ndarray, error: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Put one spectrum on the store grid; returns flux, ivar, mask, number of bad input pixels.

    ivar = 1/error^2 for finite, positive errors and finite flux; other pixels are
    masked (ivar 0, flux 0). A different input grid is linearly interpolated
    (variance likewise); grid pixels outside the input coverage are masked.
    """
    good = np.isfinite(flux) & np.isfinite(error) & (error > 0) & np.isfinite(wave)
    n_bad = int((~good).sum())
    var = np.where(good, error.astype(np.float64) ** 2, np.inf)
    f = np.where(good, flux, 0.0)
    if wave.shape == grid.shape and np.allclose(wave, grid, atol=1e-3):
        out_f, out_var = f, var
        covered = np.ones(grid.shape, dtype=bool)
    else:
        order = np.argsort(wave)
        wave, f, var, good_s = wave[order], f[order], var[order], good[order]
        out_f = np.interp(grid, wave, f)
        bad_frac = np.interp(grid, wave, (~good_s).astype(float))
        out_var = np.interp(grid, wave, np.where(good_s, var, 0.0))
        out_var = np.where(bad_frac > 0, np.inf, out_var)
        covered = (grid >= wave[0]) & (grid <= wave[-1])
    mask = ~covered | ~np.isfinite(out_var) | (out_var <= 0)
    ivar = np.where(mask, 0.0, 1.0 / np.where(mask, 1.0, out_var))
    return np.where(mask, 0.0, out_f).astype(np.float32), ivar.astype(np.float32), mask, n_bad


class _Catalogue:
    """FITS catalogue joined on TARGETID for Z, LOGM, LOGSFR (case-insensitive columns)."""

    ID_COLUMNS = ("TARGETID", "targetid", "TargetID", "object_id", "objid")

    def __init__(self, path: Path):
        from astropy.table import Table

        try:
            table = Table.read(path, hdu=1)
        except Exception as exc:  # astropy raises many types for unreadable files
            raise DataError(f"{path}: cannot read FITS catalogue ({exc})") from None
        names = {n.upper(): n for n in table.colnames}
        id_col = next((c for c in self.ID_COLUMNS if c in table.colnames), None)
        if id_col is None:
            raise DataError(f"{path}: no id column; expected one of {', '.join(self.ID_COLUMNS)}; columns: {', '.join(table.colnames)}")
        self.values: dict[str, dict[str, float]] = {}
        wanted = {"redshift": "Z", "logM": "LOGM", "logSFR": "LOGSFR"}
        cols = {ours: np.asarray(table[names[theirs]], dtype=np.float64) for ours, theirs in wanted.items() if theirs in names}
        if not cols:
            raise DataError(f"{path}: none of the columns Z, LOGM, LOGSFR found; columns: {', '.join(table.colnames)}")
        ids = [str(v).strip() for v in table[id_col]]
        for i, key in enumerate(ids):
            self.values[key] = {ours: float(col[i]) for ours, col in cols.items()}
        self.columns = sorted(cols)

    def lookup(self, targetid: Any) -> dict[str, float] | None:
        return self.values.get(str(targetid).strip())


@dataclass
class _Chunk:
    columns: dict[str, list]
    images: list[np.ndarray]
    has_bands: list[np.ndarray]
    rgb: list[np.ndarray]
    flux: list[np.ndarray]
    ivar: list[np.ndarray]
    mask: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Chunk:
        cols = {k: [] for k in ("object_id", "targetid", "redshift", "split", "logM", "logSFR", "has_spectrum")}
        return cls(cols, [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.images)


def _convert_batch(batch: pa.RecordBatch, src: SourceFile, cfg: ImportConfig, grid: np.ndarray, catalogue: _Catalogue | None,
                   seen: set[str], manifest: RunManifest) -> _Chunk:
    names = set(batch.schema.names)
    missing_required = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing_required:
        raise DataError(f"{src.path}: missing column(s) {', '.join(missing_required)}; columns: {', '.join(sorted(names))}")
    rows = batch.num_rows
    pylists: dict[str, list] = {}
    for name in ("object_id", "targetid", "redshift", "RGB_image", *DATASET_BAND_COLUMNS.values()):
        pylists[name] = _storage(batch.column(name)).to_pylist() if name in names else [None] * rows
    spec = _storage(batch.column("spectrum")) if "spectrum" in names else None
    spec_parts = {k: spec.field(k).to_pylist() for k in ("flux", "wavelength", "error")} if spec is not None else None
    spec_null = spec.is_null().to_pylist() if spec is not None else [True] * rows
    out = _Chunk.empty()
    size = cfg.image_size
    for i in range(rows):
        try:
            raw_id = pylists["object_id"][i]
            if raw_id is None or str(raw_id).strip() == "":
                if pylists["targetid"][i] is None:
                    manifest.dropped("missing_object_id")
                    continue
                raw_id = pylists["targetid"][i]
                manifest.count("object_id_from_targetid", manifest.data["counts"].get("object_id_from_targetid", 0) + 1)
            oid = str(raw_id).strip()
            if oid in seen:
                manifest.dropped("duplicate_object_id")
                continue
            problems: list[str] = []
            bands = np.full((len(BANDS), size, size), np.nan, dtype=np.float32)
            has = np.zeros(len(BANDS), dtype=bool)
            for k, band in enumerate(BANDS):
                img = _as_image(pylists[DATASET_BAND_COLUMNS[band]][i])
                if img is None:
                    problems.append(f"missing_band:{band}")
                    continue
                bands[k] = resize_image(img, size)
                has[k] = True
            has_spectrum = False
            flux = np.zeros(grid.size, np.float32)
            ivar = np.zeros(grid.size, np.float32)
            mask = np.ones(grid.size, dtype=bool)
            if spec_parts is not None and not spec_null[i] and spec_parts["flux"][i]:
                f = np.asarray(spec_parts["flux"][i], dtype=np.float64)
                w = np.asarray(spec_parts["wavelength"][i] or [], dtype=np.float64)
                e = np.asarray(spec_parts["error"][i] or [], dtype=np.float64)
                if not (f.shape == w.shape == e.shape):
                    problems.append("bad_spectrum_shape")
                else:
                    flux, ivar, mask, n_bad = spectrum_to_grid(f, w, e, grid)
                    has_spectrum = bool((~mask).any())
                    if n_bad:
                        manifest.count("masked_input_pixels", manifest.data["counts"].get("masked_input_pixels", 0) + n_bad)
                    if not has_spectrum:
                        problems.append("spectrum_all_masked")
            else:
                problems.append("missing_spectrum")
            if problems and cfg.missing == "drop":
                for p in problems:
                    manifest.dropped(p)
                continue
            for p in problems:
                manifest.count(f"kept_with:{p}", manifest.data["counts"].get(f"kept_with:{p}", 0) + 1)
            rgb = _decode_rgb(pylists["RGB_image"][i], src.path.parent, size)
            if rgb is None:
                rgb = asinh_rgb(bands)
            z = pylists["redshift"][i]
            z = float(z) if z is not None else np.nan
            logm = logsfr = np.nan
            tid = pylists["targetid"][i]
            if catalogue is not None:
                row = catalogue.lookup(tid) if tid is not None else None
                key = "catalogue_matched" if row else "catalogue_unmatched"
                manifest.count(key, manifest.data["counts"].get(key, 0) + 1)
                if row:
                    if not np.isfinite(z):
                        z = row.get("redshift", np.nan)
                    logm, logsfr = row.get("logM", np.nan), row.get("logSFR", np.nan)
        except Exception as exc:  # one bad row must never stop an import
            manifest.dropped(f"unreadable_row:{type(exc).__name__}")
            continue
        seen.add(oid)
        c = out.columns
        c["object_id"].append(oid)
        c["targetid"].append(int(tid) if tid is not None else -1)
        c["redshift"].append(z)
        c["split"].append(src.split)
        c["logM"].append(logm)
        c["logSFR"].append(logsfr)
        c["has_spectrum"].append(has_spectrum)
        out.images.append(bands)
        out.has_bands.append(has)
        out.rgb.append(rgb)
        out.flux.append(flux)
        out.ivar.append(ivar)
        out.mask.append(mask)
    return out


def _write(writer: SurveyWriter, chunk: _Chunk, state: dict[str, Any]) -> None:
    if not len(chunk):
        writer.append({}, np.empty((0, len(BANDS), writer.image_size, writer.image_size), np.float32),
                      np.empty((0, 0)), np.empty((0, 0)), np.empty((0, 0)), resume_state=state)
        return
    writer.append(
        {k: np.asarray(v) for k, v in chunk.columns.items()},
        np.stack(chunk.images), np.stack(chunk.flux), np.stack(chunk.ivar), np.stack(chunk.mask),
        rgb=np.stack(chunk.rgb), has_bands=np.stack(chunk.has_bands), resume_state=state,
    )


def import_dataset(ws: Workspace, source: str | Path, resolved: Resolved, reporter: Reporter | None = None) -> Any:
    """Convert a local Euclid x DESI copy into ``survey/<name>.h5`` (resumable, streaming)."""
    from fmb_engine.survey.stages import StageResult, config_record

    cfg: ImportConfig = resolved.values  # type: ignore[assignment]
    reporter = reporter or Silent()
    source = Path(source).expanduser().resolve()
    files = [f for f in discover(source) if f.split in cfg.splits]
    if not files:
        raise DataError(f"{source}: no files for splits {cfg.splits} (found splits: {sorted({f.split for f in discover(source)})})")
    manifest = RunManifest(ws, "data.import", config_record(resolved) | {"source": str(source)})
    catalogue = None
    params: dict[str, Any] = {"source": str(source), "files": [str(f.path) for f in files], "splits": cfg.splits,
                              "image_size": cfg.image_size, "missing": cfg.missing, "limit": cfg.limit}
    if cfg.catalog:
        cat_path = Path(cfg.catalog).expanduser()
        if not cat_path.is_file():
            raise DataError(f"catalogue not found: {cat_path}")
        catalogue = _Catalogue(cat_path)
        manifest.input("catalog", cat_path)
        params["catalog_digest"] = file_digest(cat_path)
    for f in files:
        manifest.input(f"source:{f.path.name}", f.path, digest=f"size={f.path.stat().st_size}")
    out = ws.survey_path(cfg.name)
    grid = wavelength_grid()
    writer = SurveyWriter(out, image_size=cfg.image_size, wavelength=grid, rgb=True, generator="fmb.import.euclid_desi",
                          params=params, compression=cfg.compression)
    state = dict(writer.resume_state) or {"file": 0, "row": 0, "dropped": {}, "counts": {}}
    manifest.data["dropped"] = dict(state.get("dropped", {}))
    manifest.data["counts"] = dict(state.get("counts", {}))
    seen: set[str] = set()
    if writer.resumed_from:
        reporter.log(f"resuming {writer.partial.name} after {writer.resumed_from} objects")
        seen = writer.written_ids()
    totals = [_count_rows(f) for f in files]
    total = sum(totals) if all(t is not None for t in totals) else None
    if total is not None and cfg.limit:
        total = min(total, cfg.limit)
    consumed = sum((totals[i] or 0) for i in range(state["file"])) + state["row"]
    try:
        with reporter.task(f"import -> {out.name}", total) as task, manifest.phase("convert+write"):
            task.advance(consumed)
            for fi, src in enumerate(files):
                if fi < state["file"]:
                    continue
                row = 0
                for batch in _batches(src, cfg.batch_size):
                    if fi == state["file"] and row + batch.num_rows <= state["row"]:
                        row += batch.num_rows
                        continue
                    if fi == state["file"] and row < state["row"]:
                        batch = batch.slice(state["row"] - row)
                        row = state["row"]
                    if cfg.limit is not None and consumed >= cfg.limit:
                        break
                    if cfg.limit is not None:
                        batch = batch.slice(0, cfg.limit - consumed)
                    chunk = _convert_batch(batch, src, cfg, grid, catalogue, seen, manifest)
                    row += batch.num_rows
                    consumed += batch.num_rows
                    state = {"file": fi, "row": row, "dropped": manifest.data["dropped"], "counts": manifest.data["counts"]}
                    _write(writer, chunk, state)
                    task.advance(batch.num_rows)
                state = {"file": fi + 1, "row": 0, "dropped": manifest.data["dropped"], "counts": manifest.data["counts"]}
        if writer.n_written == 0:
            raise DataError(f"{source}: no row could be imported; dropped per reason: {manifest.data['dropped']}")
        writer.close()
    except BaseException:
        writer.abort()
        manifest.write(status="interrupted")
        raise
    with SurveyReader(out) as reader:
        summary = reader.summary()
    manifest.count("rows_read", consumed)
    manifest.count("objects", summary["objects"])
    manifest.count("dropped_total", int(sum(Counter(manifest.data["dropped"]).values())))
    manifest.data["inputs"]["survey_digest"] = summary["digest"]
    manifest.output("survey", out)
    summary["dropped"] = manifest.data["dropped"]
    summary["kept_with"] = {k.split(":", 1)[1]: v for k, v in manifest.data["counts"].items() if k.startswith("kept_with:")}
    return StageResult({"survey": out}, manifest.write(), summary)
