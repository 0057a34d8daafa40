"""The HDF5 survey store: one file per survey, written in chunks, read at random.

Layout (documented field by field in ``docs/formats.md``)::

    /                     attrs: format, format_version, state, n_objects, bands,
                                 image_size, digest, created, generator, params (JSON)
    /objects/<column>     1-D per-object columns (object_id, targetid, ra, dec, redshift,
                          split, logM, logSFR, anomaly_class, has_spectrum) and has_bands (N, 4)
    /images/bands         (N, 4, H, W) float32, VIS / NISP_Y / NISP_J / NISP_H
    /images/rgb           (N, H, W, 3) uint8 (optional)
    /spectra/wavelength   (L,) float64 shared observed-frame grid (Angstrom)
    /spectra/flux|ivar    (N, L) float32
    /spectra/mask         (N, L) bool, True = bad pixel

The writer works on ``<name>.partial`` next to the final file and renames it on
:meth:`SurveyWriter.close`; the ``state`` attribute is ``"writing"`` until then,
so a half-written file (a crash, a kill) is recognised by the reader. A writer
re-opened on a partial file with the same parameters resumes after the last
complete chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from fmb_engine.errors import DataError
from fmb_engine.hdf5 import open_checked
from fmb_engine.survey.bands import BANDS
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.workspace import file_mode_for, make_dirs

FORMAT = "fmb-survey"
FORMAT_VERSION = 1
ID_LENGTH = 64  # bytes; object ids are stored fixed-length for O(1)-cheap index building
SPLIT_LENGTH = 16
CLASS_LENGTH = 32

#: Per-object columns: name -> (numpy dtype, fill value for "unknown").
COLUMNS: dict[str, tuple[Any, Any]] = {
    "object_id": (f"S{ID_LENGTH}", b""),
    "targetid": (np.int64, -1),
    "ra": (np.float64, np.nan),
    "dec": (np.float64, np.nan),
    "redshift": (np.float32, np.nan),
    "split": (f"S{SPLIT_LENGTH}", b""),
    "logM": (np.float32, np.nan),
    "logSFR": (np.float32, np.nan),
    "anomaly_class": (f"S{CLASS_LENGTH}", b""),
    "has_spectrum": (np.bool_, True),
}
STRING_COLUMNS = ("object_id", "split", "anomaly_class")

#: HDF5 filters. lzf without shuffle: noisy float pixels gain little from shuffling
#: (61 vs 65 MB per 512 objects) while it doubles the write time.
_COMPRESSION = {
    "lzf": {"compression": "lzf"},
    "gzip": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "none": {},
}


def _rows_per_chunk(bytes_per_row: int, target: int = 1 << 20) -> int:
    return max(1, min(1024, target // max(1, bytes_per_row)))


def _finite_range(values: np.ndarray) -> dict[str, float]:
    """Min and max of the finite values; NaN for both when there are none (e.g. no redshifts imported)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"min": float("nan"), "max": float("nan")}
    return {"min": float(finite.min()), "max": float(finite.max())}


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


class SurveyWriter:
    """Append objects in chunks; finalise atomically with :meth:`close`.

    ``params`` describe how the content is produced (generator settings); a
    partial file is only resumed when they match exactly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_size: int,
        wavelength: np.ndarray,
        rgb: bool,
        generator: str,
        params: dict[str, Any],
        compression: str = "lzf",
        expected_objects: int | None = None,
        resume: bool = True,
    ):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.image_size = int(image_size)
        self.params_json = json.dumps(params, sort_keys=True, default=str)
        self._chain = b""  # digest chain: chain_k = H(chain_{k-1} + H(chunk_k)), resumable
        self.n_written = 0
        self.resumed_from = 0
        #: Caller-defined progress saved with every chunk (e.g. source rows consumed).
        self.resume_state: dict[str, Any] = {}
        make_dirs(self.path.parent)
        if resume and self.partial.exists() and self._try_resume(generator):
            return
        self.partial.unlink(missing_ok=True)
        self._file = h5py.File(self.partial, "w")
        os.chmod(self.partial, file_mode_for(self.partial.parent))
        self._create(wavelength, rgb, generator, compression, expected_objects)

    # -- creation / resume -------------------------------------------------------------------
    def _create(self, wavelength, rgb, generator, compression, expected_objects) -> None:
        f = self._file
        comp = _COMPRESSION[compression]
        size = self.image_size
        n_wave = int(len(wavelength))
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            state="writing",
            n_objects=0,
            bands=list(BANDS),
            image_size=size,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            generator=generator,
            params=self.params_json,
            expected_objects=-1 if expected_objects is None else int(expected_objects),
            digest="",
            digest_state="",
        )
        objects = f.create_group("objects")
        for name, (dtype, _fill) in COLUMNS.items():
            objects.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(65536,))
        objects.create_dataset("has_bands", shape=(0, len(BANDS)), maxshape=(None, len(BANDS)), dtype=bool, chunks=(65536, len(BANDS)))
        images = f.create_group("images")
        img_rows = _rows_per_chunk(4 * len(BANDS) * size * size)
        images.create_dataset(
            "bands", shape=(0, len(BANDS), size, size), maxshape=(None, len(BANDS), size, size),
            dtype=np.float32, chunks=(img_rows, len(BANDS), size, size), **comp,
        )
        if rgb:
            images.create_dataset(
                "rgb", shape=(0, size, size, 3), maxshape=(None, size, size, 3), dtype=np.uint8,
                chunks=(_rows_per_chunk(3 * size * size), size, size, 3), **comp,
            )
        spectra = f.create_group("spectra")
        spectra.create_dataset("wavelength", data=np.asarray(wavelength, dtype=np.float64))
        spec_rows = _rows_per_chunk(4 * n_wave, target=1 << 19)
        for name, dtype in (("flux", np.float32), ("ivar", np.float32), ("mask", bool)):
            spectra.create_dataset(name, shape=(0, n_wave), maxshape=(None, n_wave), dtype=dtype, chunks=(spec_rows, n_wave), **comp)
        f.flush()

    def _try_resume(self, generator: str) -> bool:
        try:
            f = h5py.File(self.partial, "r+")
        except OSError:
            return False  # unreadable partial (crash during a flush): start over
        same = (
            f.attrs.get("state") == "writing"
            and f.attrs.get("generator") == generator
            and f.attrs.get("params") == self.params_json
            and int(f.attrs.get("image_size", -1)) == self.image_size
        )
        if not same:
            f.close()
            return False
        n = int(f.attrs["n_objects"])
        # Drop anything appended after the last committed count (a chunk cut short).
        for ds in _row_datasets(f):
            if ds.shape[0] != n:
                ds.resize(n, axis=0)
        self._file = f
        self.n_written = self.resumed_from = n
        self._chain = bytes.fromhex(f.attrs.get("digest_state", ""))
        self.resume_state = json.loads(f.attrs.get("resume_state", "{}"))
        return True

    # -- appending ---------------------------------------------------------------------------
    @property
    def has_rgb(self) -> bool:
        return "rgb" in self._file["images"]

    def append(
        self,
        columns: dict[str, np.ndarray],
        images: np.ndarray,
        flux: np.ndarray,
        ivar: np.ndarray,
        mask: np.ndarray,
        rgb: np.ndarray | None = None,
        has_bands: np.ndarray | None = None,
        resume_state: dict[str, Any] | None = None,
    ) -> None:
        """Append one chunk; commits the new object count only after every dataset is written.

        ``resume_state`` is stored in the same commit, so a resumed writer knows
        exactly how far its source had been consumed.
        """
        n = int(images.shape[0])
        if resume_state is not None:
            self.resume_state = dict(resume_state)
        if n == 0:
            if resume_state is not None:
                self._file.attrs["resume_state"] = json.dumps(self.resume_state)
                self._file.flush()
            return
        size = self.image_size
        if images.shape[1:] != (len(BANDS), size, size):
            raise DataError(f"images must be (N, {len(BANDS)}, {size}, {size}), got {images.shape}")
        n_wave = self._file["spectra/wavelength"].shape[0]
        for name, arr in (("flux", flux), ("ivar", ivar), ("mask", mask)):
            if arr.shape != (n, n_wave):
                raise DataError(f"spectra/{name} must be ({n}, {n_wave}), got {arr.shape}")
        ids = np.asarray(columns["object_id"]).astype(str)
        too_long = [i for i in ids if len(i.encode()) > ID_LENGTH]
        if too_long:
            raise DataError(f"object_id {too_long[0]!r} is longer than {ID_LENGTH} bytes")
        start, stop = self.n_written, self.n_written + n
        f = self._file
        for name, (dtype, fill) in COLUMNS.items():
            value = columns.get(name)
            arr = np.full(n, fill, dtype=dtype) if value is None else np.asarray(value)
            if name in STRING_COLUMNS:
                arr = np.char.encode(arr.astype(str), "utf-8").astype(dtype)
            _put(f[f"objects/{name}"], start, stop, arr.astype(dtype, copy=False))
        hb = np.ones((n, len(BANDS)), dtype=bool) if has_bands is None else np.asarray(has_bands, dtype=bool)
        _put(f["objects/has_bands"], start, stop, hb)
        images = np.ascontiguousarray(images, dtype=np.float32)
        flux = np.ascontiguousarray(flux, dtype=np.float32)
        ivar = np.ascontiguousarray(ivar, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=bool)
        _put(f["images/bands"], start, stop, images)
        if self.has_rgb:
            if rgb is None:
                rgb = np.zeros((n, size, size, 3), dtype=np.uint8)
            _put(f["images/rgb"], start, stop, np.ascontiguousarray(rgb, dtype=np.uint8))
        _put(f["spectra/flux"], start, stop, flux)
        _put(f["spectra/ivar"], start, stop, ivar)
        _put(f["spectra/mask"], start, stop, mask)
        chunk = hashlib.blake2b(digest_size=16)
        for arr in (ids.astype("U"), images, flux, ivar, mask):
            chunk.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
        self._chain = hashlib.blake2b(self._chain + chunk.digest(), digest_size=16).digest()
        self.n_written = stop
        f.attrs["n_objects"] = stop
        f.attrs["digest_state"] = self._chain.hex()
        f.attrs["resume_state"] = json.dumps(self.resume_state)
        f.flush()

    def written_ids(self) -> set[str]:
        """Object ids already in the file (a resumed importer skips them)."""
        return set(np.char.decode(self._file["objects/object_id"][: self.n_written], "utf-8").tolist())

    def close(self) -> Path:
        """Mark the file complete and rename it to its final name (atomic)."""
        f = self._file
        ids = f["objects/object_id"][:]
        if len(np.unique(ids)) != len(ids):
            uniq, counts = np.unique(ids, return_counts=True)
            dup = uniq[counts > 1][0].decode()
            f.close()
            raise DataError(f"{self.partial}: object_id {dup!r} occurs more than once; ids must be unique")
        f.attrs["digest"] = self._chain.hex()
        f.attrs["state"] = "complete"
        f.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close without finalising; the partial file stays for a later resume."""
        if self._file:
            self._file.close()

    def discard(self) -> None:
        """Close and delete the partial file (a failed write with nothing worth resuming)."""
        self.abort()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> SurveyWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _put(ds: h5py.Dataset, start: int, stop: int, data: np.ndarray) -> None:
    if ds.shape[0] < stop:
        ds.resize(stop, axis=0)
    ds[start:stop] = data


def _row_datasets(f: h5py.File) -> list[h5py.Dataset]:
    out = []
    for group in ("objects", "images", "spectra"):
        for ds in f[group].values():
            if ds.name != "/spectra/wavelength":
                out.append(ds)
    return out


@dataclass(frozen=True)
class SurveyObject:
    """One object with all of its data (random access)."""

    index: int
    meta: dict[str, Any]
    images: np.ndarray  # (4, H, W)
    rgb: np.ndarray | None
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    wavelength: np.ndarray
    has_bands: np.ndarray

    @property
    def object_id(self) -> str:
        return str(self.meta["object_id"])


class SurveyReader:
    """Random access by row or object_id, and bounded-memory streaming of batches."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            partial = partial_path(self.path)
            hint = f" (an interrupted write left {partial.name}; rerun the command to resume it)" if partial.exists() else ""
            raise DataError(f"survey file not found: {self.path}{hint}")
        self._file = open_checked(self.path, FORMAT, FORMAT_VERSION, "survey")
        attrs = self._file.attrs
        if attrs.get("state") != "complete":
            n = int(attrs.get("n_objects", 0))
            expected = int(attrs.get("expected_objects", -1))
            of = f" of {expected}" if expected > 0 else ""
            self._file.close()
            raise DataError(
                f"{self.path}: incomplete survey file: writing was interrupted after {n}{of} objects. "
                "Rerun the command that wrote it to resume, or delete the file."
            )
        try:
            self._read_header()
        except (KeyError, ValueError, TypeError, OSError) as exc:
            self._file.close()
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"{self.path}: damaged survey file ({detail}); re-create it with the command that wrote it") from None
        self._index: dict[str, int] | None = None
        self._table: pd.DataFrame | None = None

    def _read_header(self) -> None:
        """Attributes and the shape/dtype of every dataset (metadata only): a damaged or foreign
        file fails here, with the name of what is wrong, instead of in the middle of a stage."""
        attrs = self._file.attrs
        self.n_objects = int(attrs["n_objects"])
        self.image_size = int(attrs["image_size"])
        self.bands = tuple(str(b) for b in attrs["bands"])
        self.digest = str(attrs["digest"])
        self.generator = str(attrs["generator"])
        self.params = json.loads(attrs["params"])
        self.wavelength = self._file["spectra/wavelength"][:]
        self.has_rgb = "rgb" in self._file["images"]
        n, size, n_wave = self.n_objects, self.image_size, self.wavelength.shape[0]
        expected = {f"objects/{name}": ((n,), np.dtype(dtype).kind) for name, (dtype, _) in COLUMNS.items()}
        expected |= {
            "objects/has_bands": ((n, len(BANDS)), "b"),
            "images/bands": ((n, len(BANDS), size, size), "f"),
            "spectra/flux": ((n, n_wave), "f"), "spectra/ivar": ((n, n_wave), "f"), "spectra/mask": ((n, n_wave), "b"),
        }
        if self.has_rgb:
            expected["images/rgb"] = ((n, size, size, 3), "u")
        for name, (shape, kind) in expected.items():
            ds = self._file[name]
            if ds.shape != shape or ds.dtype.kind != kind:
                raise ValueError(f"/{name} is {ds.shape} {ds.dtype}, expected {shape} of kind {kind!r}")

    # -- metadata ---------------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        if name not in self._file["objects"]:
            raise DataError(f"{self.path}: no column {name!r}; columns: {', '.join(self._file['objects'])}")
        data = self._file[f"objects/{name}"][:]
        if name in STRING_COLUMNS:
            return np.char.decode(data, "utf-8").astype(object)
        return data

    @property
    def object_ids(self) -> np.ndarray:
        return self.table()["object_id"].to_numpy()

    def table(self) -> pd.DataFrame:
        """The object table (no pixels), cached; row i = store row i."""
        if self._table is None:
            self._table = pd.DataFrame({name: self.column(name) for name in COLUMNS})
        return self._table

    def index_of(self, object_id: str) -> int:
        """Row of ``object_id`` in O(1) after a one-time id->row map (no pixel decoding)."""
        if self._index is None:
            self._index = {oid: i for i, oid in enumerate(self.object_ids)}
        try:
            return self._index[str(object_id)]
        except KeyError:
            raise DataError(f"{self.path}: no object with object_id {object_id!r}") from None

    def splits(self) -> dict[str, int]:
        values, counts = np.unique(self.table()["split"].to_numpy(dtype=str), return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))

    def rows_of_split(self, split: str | None) -> np.ndarray:
        if split in (None, "all"):
            return np.arange(self.n_objects)
        rows = np.flatnonzero(self.table()["split"].to_numpy() == split)
        if rows.size == 0:
            raise DataError(f"{self.path}: split {split!r} has no objects; splits: {self.splits()}")
        return rows

    # -- pixels -----------------------------------------------------------------------------
    def get(self, key: int | str) -> SurveyObject:
        """One object by row number (int) or object_id (str)."""
        i = self.index_of(key) if isinstance(key, str) else int(key)
        if not 0 <= i < self.n_objects:
            raise DataError(f"{self.path}: row {i} out of range 0..{self.n_objects - 1}")
        row = self.table().iloc[i].to_dict()
        f = self._file
        return SurveyObject(
            index=i,
            meta=row,
            images=f["images/bands"][i],
            rgb=f["images/rgb"][i] if self.has_rgb else None,
            flux=f["spectra/flux"][i],
            ivar=f["spectra/ivar"][i],
            mask=f["spectra/mask"][i],
            wavelength=self.wavelength,
            has_bands=f["objects/has_bands"][i],
        )

    def read_rows(self, rows: Sequence[int] | np.ndarray, fields: Sequence[str] = ("images", "spectra", "rgb")) -> SurveyBatch:
        """Read arbitrary rows as one batch (sorted internally, returned in the given order)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_objects):
            raise DataError(f"{self.path}: rows out of range 0..{self.n_objects - 1}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        lo, hi = (int(sorted_rows[0]), int(sorted_rows[-1]) + 1) if rows.size else (0, 0)
        dense = rows.size and (hi - lo) <= 2 * rows.size + 64
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)

        def take(name: str) -> np.ndarray:
            ds = self._file[name]
            if not rows.size:
                return np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
            if dense:
                block = ds[lo:hi]
                return block[rows - lo]
            uniq, uinv = np.unique(sorted_rows, return_inverse=True)
            return ds[uniq][uinv][inverse]

        table = self.table()
        return SurveyBatch(
            indices=rows,
            object_ids=table["object_id"].to_numpy()[rows],
            redshift=table["redshift"].to_numpy()[rows].astype(np.float32),
            images=take("images/bands") if "images" in fields else None,
            rgb=take("images/rgb") if ("rgb" in fields and self.has_rgb) else None,
            flux=take("spectra/flux") if "spectra" in fields else None,
            ivar=take("spectra/ivar") if "spectra" in fields else None,
            mask=take("spectra/mask") if "spectra" in fields else None,
            wavelength=self.wavelength,
            has_bands=take("objects/has_bands"),
            has_spectrum=table["has_spectrum"].to_numpy()[rows].astype(bool),
        )

    def iter_batches(
        self,
        batch_size: int = 256,
        split: str | None = None,
        start: int = 0,
        stop: int | None = None,
        fields: Sequence[str] = ("images", "spectra", "rgb"),
    ) -> Iterator[SurveyBatch]:
        """Stream batches of a split (or ``all``) within rows ``[start, stop)``; memory ~ one batch."""
        rows = self.rows_of_split(split)
        stop = self.n_objects if stop is None else min(stop, self.n_objects)
        rows = rows[(rows >= start) & (rows < stop)]
        for i in range(0, rows.size, batch_size):
            yield self.read_rows(rows[i : i + batch_size], fields)

    def summary(self) -> dict[str, Any]:
        table = self.table()
        classes = table["anomaly_class"].to_numpy(dtype=str)
        labelled = classes[classes != ""]
        values, counts = np.unique(labelled, return_counts=True)
        return {
            "path": str(self.path),
            "objects": self.n_objects,
            "splits": self.splits(),
            "bands": list(self.bands),
            "image_size": self.image_size,
            "rgb": self.has_rgb,
            "wavelength": {"min": float(self.wavelength[0]), "max": float(self.wavelength[-1]), "bins": int(self.wavelength.size),
                           "step": float(np.median(np.diff(self.wavelength))) if self.wavelength.size > 1 else 0.0},
            "anomaly_classes": dict(zip(values.tolist(), counts.tolist(), strict=True)),
            "missing_spectrum": int((~table["has_spectrum"].to_numpy(dtype=bool)).sum()),
            "redshift": _finite_range(table["redshift"].to_numpy(dtype=np.float64)),
            "generator": self.generator,
            "digest": self.digest,
        }

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SurveyReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
