"""Row conversion of the Euclid x DESI dataset, with a reason for every row not taken as is.

Why: a bad row never stops an import, but it must not vanish silently either. Every
row that is dropped, kept with a flag (missing band or spectrum) or repaired
(masked pixels, resampled image, id taken from targetid) is logged under a reason
that names the column and the cause -- ``VIS_image: shape (50, 80), expected
square`` -- with a count and the first example object ids, so a user can find the
rows in their copy of the data.

Spectra go onto the store's grid; ivar = 1/error^2 where the error is finite and
positive, else the pixel is masked with ivar 0 (the reference system produced inf
there, its bug L18).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fmb_engine.survey.bands import BANDS, DATASET_BAND_COLUMNS
from fmb_engine.survey.composite import asinh_rgb
from fmb_engine.survey.importers.layout import SourceFile
from fmb_engine.survey.importers.tables import SPECTRUM_FIELDS
from fmb_engine.survey.store import ID_LENGTH

ACTIONS = ("dropped", "kept", "repaired")
EXAMPLES = 20


class RowLog:
    """Per action and reason: a count and the first :data:`EXAMPLES` object ids.

    Its state is plain JSON, saved with every chunk so a resumed import continues the counts.
    """

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.reasons: dict[str, dict[str, dict[str, Any]]] = {a: dict(state.get(a, {})) for a in ACTIONS}
        self.counts: Counter[str] = Counter(state.get("counts", {}))

    def add(self, action: str, reason: str, example: str) -> None:
        entry = self.reasons[action].setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(example)

    def totals(self, action: str) -> dict[str, int]:
        return {reason: entry["count"] for reason, entry in self.reasons[action].items()}

    def state(self) -> dict[str, Any]:
        return {**self.reasons, "counts": dict(self.counts)}


class RowProblem(Exception):
    """A row cannot be imported; the message is the reason (``<column>: <cause>``)."""


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resample of a 2-D image to ``size`` x ``size`` (NaN-safe: NaN -> 0)."""
    if img.shape == (size, size):
        return img
    from scipy.ndimage import zoom

    return zoom(np.nan_to_num(img), (size / img.shape[0], size / img.shape[1]), order=1).astype(np.float32)[:size, :size]


def band_image(value: Any, column: str, size: int, resample: bool) -> tuple[np.ndarray | None, str | None]:
    """The stamp at the store's size (None when missing) and a repair note when it was resampled.

    Square stamps of another size are resized (``image_size``); a stamp that is not square
    is a :class:`RowProblem` unless ``resample`` asks to resample it too.
    """
    if value is None:
        return None, None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise RowProblem(f"{column}: ragged or non-numeric rows") from None
    if arr.ndim == 3 and 1 in arr.shape:
        arr = arr.squeeze()
    if arr.size == 0:
        raise RowProblem(f"{column}: empty image")
    if arr.ndim != 2:
        raise RowProblem(f"{column}: shape {arr.shape}, expected a 2-D stamp")
    if arr.shape[0] == arr.shape[1]:
        return resize_image(arr, size), None
    if not resample:
        raise RowProblem(f"{column}: shape {arr.shape}, expected square")
    return resize_image(arr, size), f"{column}: shape {arr.shape} resampled to {size}x{size}"


def decode_rgb(value: Any, base: Path, size: int) -> np.ndarray | None:
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
        keep = np.isfinite(wave)
        order = np.argsort(wave[keep])
        wave, f, var, good_s = wave[keep][order], f[keep][order], var[keep][order], good[keep][order]
        if wave.size == 0:
            return np.zeros(grid.size, np.float32), np.zeros(grid.size, np.float32), np.ones(grid.size, bool), n_bad
        out_f = np.interp(grid, wave, f)
        bad_frac = np.interp(grid, wave, (~good_s).astype(float))
        out_var = np.interp(grid, wave, np.where(good_s, var, 0.0))
        out_var = np.where(bad_frac > 0, np.inf, out_var)
        covered = (grid >= wave[0]) & (grid <= wave[-1])
    mask = ~covered | ~np.isfinite(out_var) | (out_var <= 0)
    ivar = np.where(mask, 0.0, 1.0 / np.where(mask, 1.0, out_var))
    return np.where(mask, 0.0, out_f).astype(np.float32), ivar.astype(np.float32), mask, n_bad


@dataclass
class Chunk:
    """Converted rows of one batch, ready for :meth:`SurveyWriter.append`."""

    columns: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "object_id", "targetid", "redshift", "split", "logM", "logSFR", "has_spectrum")})
    images: list[np.ndarray] = field(default_factory=list)
    has_bands: list[np.ndarray] = field(default_factory=list)
    rgb: list[np.ndarray] = field(default_factory=list)
    flux: list[np.ndarray] = field(default_factory=list)
    ivar: list[np.ndarray] = field(default_factory=list)
    mask: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _storage(col: pa.Array) -> pa.Array:
    return col.storage if isinstance(col, pa.ExtensionArray) else col


def _short(exc: BaseException, limit: int = 80) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


@dataclass(frozen=True)
class RowRules:
    """What the importer does with imperfect rows (from the import config)."""

    image_size: int
    missing: str  # "keep" | "drop"
    resample: bool
    grid: np.ndarray


def convert_batch(batch: pa.RecordBatch, first_row: int, src: SourceFile, rules: RowRules, catalogue: Any,
                  seen: set[str], log: RowLog) -> Chunk:
    """Convert one batch (columns already checked by :func:`tables.check_schema`); log every imperfect row."""
    names = set(batch.schema.names)
    rows = batch.num_rows
    lists = {name: _storage(batch.column(name)).to_pylist() if name in names else [None] * rows
             for name in ("object_id", "targetid", "redshift", "RGB_image", *DATASET_BAND_COLUMNS.values())}
    spec = _storage(batch.column("spectrum"))
    spec_parts = {k: spec.field(k).to_pylist() for k in SPECTRUM_FIELDS}
    spec_null = spec.is_null().to_pylist()
    out = Chunk()
    size, grid = rules.image_size, rules.grid
    for i in range(rows):
        ident = f"row {first_row + i} of {src.path.parent.name}/{src.path.name}"
        column = "object_id"
        try:
            raw_id, tid = lists["object_id"][i], lists["targetid"][i]
            repairs: list[str] = []
            if raw_id is None or str(raw_id).strip() == "":
                if tid is None:
                    log.add("dropped", "object_id: missing (and no targetid)", ident)
                    continue
                raw_id = tid
                repairs.append("object_id: missing, taken from targetid")
            oid = str(raw_id).strip()
            ident = oid
            if oid in seen:
                log.add("dropped", "object_id: duplicate of an earlier row", oid)
                continue
            if len(oid.encode()) > ID_LENGTH:
                log.add("dropped", f"object_id: longer than {ID_LENGTH} bytes", oid[:ID_LENGTH] + "...")
                continue
            problems: list[str] = []
            bands = np.full((len(BANDS), size, size), np.nan, dtype=np.float32)
            has = np.zeros(len(BANDS), dtype=bool)
            for k, band in enumerate(BANDS):
                column = DATASET_BAND_COLUMNS[band]
                img, note = band_image(lists[column][i], column, size, rules.resample)
                if img is None:
                    problems.append(f"{column}: missing")
                    continue
                if note:
                    repairs.append(note)
                    log.counts["resampled_images"] += 1
                bands[k], has[k] = img, True
            column = "spectrum"
            has_spectrum = False
            flux = np.zeros(grid.size, np.float32)
            ivar = np.zeros(grid.size, np.float32)
            mask = np.ones(grid.size, dtype=bool)
            n_bad = 0
            absent = next((k for k in SPECTRUM_FIELDS if not spec_parts[k][i]), None)
            if spec_null[i]:
                problems.append("spectrum: missing")
            elif absent:
                problems.append(f"spectrum.{absent}: missing or empty")
            else:
                f = np.asarray(spec_parts["flux"][i], dtype=np.float64)
                w = np.asarray(spec_parts["wavelength"][i], dtype=np.float64)
                e = np.asarray(spec_parts["error"][i], dtype=np.float64)
                if not (f.shape == w.shape == e.shape):
                    problems.append("spectrum: flux, wavelength and error lengths differ")
                else:
                    if not np.isfinite(f).all():
                        repairs.append("spectrum.flux: non-finite values, masked")
                    if not (np.isfinite(e) & (e > 0)).all():
                        repairs.append("spectrum.error: zero, negative or non-finite values, masked")
                    if not np.isfinite(w).all():
                        repairs.append("spectrum.wavelength: non-finite values, masked")
                    flux, ivar, mask, n_bad = spectrum_to_grid(f, w, e, grid)
                    has_spectrum = bool((~mask).any())
                    if not has_spectrum:
                        problems.append("spectrum: every pixel masked")
            if problems and rules.missing == "drop":
                for p in problems:
                    log.add("dropped", p, oid)
                continue
            try:  # the RGB is a thumbnail the bands can replace: an unreadable one never costs the object
                rgb = decode_rgb(lists["RGB_image"][i], src.path.parent, size)
            except Exception as exc:  # noqa: BLE001 - PIL and file access raise many types
                rgb = None
                repairs.append(f"RGB_image: unreadable ({type(exc).__name__}), composite made from the bands")
            if rgb is None:
                rgb = asinh_rgb(bands)
            column = "redshift"
            z = lists["redshift"][i]
            z = float(z) if z is not None else np.nan
            column = "targetid"
            logm = logsfr = np.nan
            targetid = int(tid) if tid is not None else -1
            matched = None
            if catalogue is not None:
                row = catalogue.lookup(tid) if tid is not None else None
                matched = bool(row)
                if row:
                    if not np.isfinite(z):
                        z = row.get("redshift", np.nan)
                    logm, logsfr = row.get("logM", np.nan), row.get("logSFR", np.nan)
        except RowProblem as exc:
            log.add("dropped", str(exc), ident)
            continue
        except Exception as exc:  # one bad row must never stop an import; its reason names the column
            log.add("dropped", f"{column}: unreadable ({_short(exc)})", ident)
            continue
        for p in problems:
            log.add("kept", p, oid)
        for r in repairs:
            log.add("repaired", r, oid)
        if "spectrum.flux: non-finite values, masked" in repairs:
            log.counts["objects_with_nonfinite_flux"] += 1
        log.counts["masked_input_pixels"] += n_bad
        if matched is not None:
            log.counts["catalogue_matched" if matched else "catalogue_unmatched"] += 1
        seen.add(oid)
        c = out.columns
        c["object_id"].append(oid)
        c["targetid"].append(targetid)
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
