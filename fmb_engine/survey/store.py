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
    /digest/...           per-chunk hashes of every per-row dataset (:mod:`fmb_engine.survey.digest`)

The writer works on ``<name>.partial`` next to the final file and renames it on
:meth:`SurveyWriter.close`; the ``state`` attribute is ``"writing"`` until then,
so a half-written file (a crash, a kill) is recognised by the reader. A writer
re-opened on a partial file with the same parameters first recomputes the digest
of every chunk already written, keeps the chunks up to the first damaged one and
resumes after them (:attr:`SurveyWriter.notes` says what was dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from fmb_engine.errors import DataError, EnvironmentFault, environment_fault
from fmb_engine.hdf5 import open_checked
from fmb_engine.survey import digest
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


#: Bytes of one row of every /objects column (has_bands included).
_COLUMN_BYTES = sum(np.dtype(dtype).itemsize for dtype, _ in COLUMNS.values()) + len(BANDS)
#: A new file's fixed cost: the first 65536-row chunk of every /objects column, plus metadata.
_NEW_FILE_BYTES = 65536 * _COLUMN_BYTES + (1 << 20)


#: Room kept free beyond a chunk's own bytes: HDF5 metadata and the final flush on close.
_WRITE_MARGIN = 4 << 20


def estimate_bytes(objects: int, image_size: int, n_wave: int, rgb: bool) -> int:
    """Bytes ``objects`` more rows take on disk. Noisy float pixels barely compress (lzf or
    gzip: 0.96-1.0), so images and spectra count in full; the bad-pixel mask shrinks ~50-fold."""
    pixels = 4 * len(BANDS) * image_size**2 + (3 * image_size**2 if rgb else 0)
    return int(objects) * (pixels + 8 * n_wave + n_wave // 50 + _COLUMN_BYTES)


def require_free_space(path: Path, needed: int) -> None:
    """EnvironmentFault naming ``path`` when its file system has less than ``needed`` bytes free."""
    folder = path.parent
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    if free < needed:
        raise EnvironmentFault(
            f"cannot write {path}: about {_mb(needed)} needed, {_mb(free)} free on the file system of {folder}; "
            "free space or point the workspace elsewhere"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


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
        reserve_objects: int | None = None,
    ):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.image_size = int(image_size)
        self.params_json = json.dumps(params, sort_keys=True, default=str)
        self._chain = b""  # digest chain state (fmb_engine.survey.digest), resumable
        self.n_written = 0
        self.resumed_from = 0
        #: What the writer found in a partial file it did not take as is (a damaged chunk dropped, a restart).
        self.notes: list[str] = []
        #: Caller-defined progress saved with every chunk (e.g. source rows consumed).
        self.resume_state: dict[str, Any] = {}
        self._file: h5py.File | None = None
        make_dirs(self.path.parent)
        n_wave = int(len(wavelength))
        if resume and self.partial.exists() and self._try_resume(generator):
            if reserve_objects is not None:
                try:
                    require_free_space(self.partial, estimate_bytes(reserve_objects - self.n_written, self.image_size,
                                                                    n_wave, self.has_rgb))
                except EnvironmentFault:
                    self.abort()  # the partial file stays and resumes once there is room
                    raise
            return
        if reserve_objects is not None:  # before anything is written: an existing store and partial stay as they are
            require_free_space(self.partial, _NEW_FILE_BYTES + estimate_bytes(reserve_objects, self.image_size, n_wave, rgb))
        self.partial.unlink(missing_ok=True)
        with self._writing():
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
            digest_version=digest.DIGEST_VERSION,
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
        names = digest.row_dataset_names(f)
        digest.create_table(f, names)
        self._chain = digest.initial_chain(names, f["spectra/wavelength"][:])
        f.attrs["digest_state"] = self._chain.hex()
        f.flush()

    def _try_resume(self, generator: str) -> bool:
        """Reopen a partial file made with the same settings; verify its chunks, keep the good ones."""
        name = self.partial
        try:
            f = h5py.File(self.partial, "r+")
        except OSError as exc:
            self.notes.append(f"{name} cannot be opened ({_short(exc)}); starting over")
            return False
        try:
            same = (
                f.attrs.get("state") == "writing"
                and f.attrs.get("generator") == generator
                and f.attrs.get("params") == self.params_json
                and int(f.attrs.get("image_size", -1)) == self.image_size
            )
            if not same:
                self.notes.append(f"{name} was written with other settings; starting over")
                f.close()
                return False
            if int(f.attrs.get("digest_version", 1)) != digest.DIGEST_VERSION:
                self.notes.append(f"{name} was written by an older FMB whose chunks cannot be verified; starting over")
                f.close()
                return False
            check = digest.check_chunks(f)
            if check.resume_state is None:
                raise ValueError(f"the resume state of chunk {check.chunks - 1} is unreadable")
            if check.problem:
                self.notes.append(f"{name}: {check.problem}; dropped it and everything after it, "
                                  f"resuming after the last good chunk ({check.rows} objects in {check.chunks} chunks)")
            for ds in (f[n] for n in digest.row_dataset_names(f)):
                if ds.shape[0] != check.rows:
                    ds.resize(check.rows, axis=0)
            digest.truncate_table(f, check.chunks)
            f.attrs["n_objects"] = check.rows
            f.attrs["digest_state"] = check.chain.hex()
            f.attrs["resume_state"] = json.dumps(check.resume_state)
            f.flush()
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
            self.notes.append(f"{name} cannot be verified ({_short(exc)}); starting over")
            _drop(f, self.partial)
            return False
        self._file = f
        self.n_written = self.resumed_from = check.rows
        self._chain = check.chain
        self.resume_state = check.resume_state
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
                state = json.dumps(self.resume_state)
                digest.update_resume_state(self._file, state)
                self._file.attrs["resume_state"] = state
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
        rows: dict[str, np.ndarray] = {}
        for name, (dtype, fill) in COLUMNS.items():
            value = columns.get(name)
            arr = np.full(n, fill, dtype=dtype) if value is None else np.asarray(value)
            if name in STRING_COLUMNS:
                arr = np.char.encode(arr.astype(str), "utf-8").astype(dtype)
            rows[f"objects/{name}"] = arr.astype(dtype, copy=False)
        hb = np.ones((n, len(BANDS)), dtype=bool) if has_bands is None else np.asarray(has_bands, dtype=bool)
        rows["objects/has_bands"] = hb
        rows["images/bands"] = np.ascontiguousarray(images, dtype=np.float32)
        if self.has_rgb:
            rows["images/rgb"] = np.ascontiguousarray(
                np.zeros((n, size, size, 3), dtype=np.uint8) if rgb is None else rgb, dtype=np.uint8)
        rows["spectra/flux"] = np.ascontiguousarray(flux, dtype=np.float32)
        rows["spectra/ivar"] = np.ascontiguousarray(ivar, dtype=np.float32)
        rows["spectra/mask"] = np.ascontiguousarray(mask, dtype=bool)
        f = self._file
        names = digest.row_dataset_names(f)
        hashes = np.zeros((len(names), digest.HASH_SIZE), dtype=np.uint8)
        chain = self._chain
        # Refuse a chunk the disk cannot hold before HDF5 writes any of it: a write that fails
        # inside the library leaves it unable to close the file (see _writing).
        require_free_space(self.partial, sum(a.nbytes for a in rows.values()) + _WRITE_MARGIN)
        # Every dataset stays open until the flush: a dataset released mid-append would flush its
        # chunk cache in h5py's deallocator, where a failed write (a full disk) is only printed.
        datasets = [f[name] for name in names]
        with self._writing():
            for i, (name, ds) in enumerate(zip(names, datasets, strict=True)):
                _put(ds, start, stop, rows[name])
                hashes[i] = np.frombuffer(digest.hash_rows(rows[name]), dtype=np.uint8)
            chain = digest.next_chain(chain, hashes)
            state = json.dumps(self.resume_state)
            digest.record_chunk(f, stop, hashes, chain, state)
            f.attrs["n_objects"] = stop
            f.attrs["digest_state"] = chain.hex()
            f.attrs["resume_state"] = state
            f.flush()
        self._chain = chain
        self.n_written = stop

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
        with self._writing():
            f.attrs["digest"] = self._chain.hex()
            f.attrs["state"] = "complete"
            f.close()
        self._file = None
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close without finalising; the partial file stays for a later resume."""
        if self._file is not None:
            file, self._file = self._file, None
            with self._writing():
                file.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed HDF5 write (disk full, quota, I/O error) into an EnvironmentFault naming the file.

        After a failed write the HDF5 library's view of the file is inconsistent: closing
        it normally fails again and the library may crash at exit (a segfault, seen on a full
        disk). The half-written partial file is therefore emptied and removed before it is
        closed; what was written is lost and the next run starts over. (A full disk is
        normally caught before a chunk is written, see :meth:`append`, and the partial file
        then stays, intact and resumable.)
        """
        try:
            yield
        except (OSError, RuntimeError) as exc:
            written = self.n_written
            if self._file is not None:
                _drop(self._file, self.partial)
                self._file = None
            else:
                self.partial.unlink(missing_ok=True)
            code = getattr(exc, "errno", None) or _errno_in(str(exc))
            fault = environment_fault(OSError(code, os.strerror(code), str(self.partial)), "write") if code else None
            what = str(fault) if fault else f"cannot write {self.partial}: {_short(exc)}"
            raise EnvironmentFault(f"{what}; the partial file was removed ({written} objects had been written), "
                                   "the next run starts over") from None

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


def _errno_in(message: str) -> int | None:
    """The errno HDF5 quotes in a failed-write message ("errno = 28"), if any."""
    found = re.search(r"errno = (\d+)", message)
    return int(found.group(1)) if found else None


def _drop(f: h5py.File, path: Path) -> None:
    """Close a file HDF5 may no longer be able to flush, and delete it.

    Emptying it first gives the library room to write its last metadata (sparse, at
    the old offsets) so that neither this close nor the library's exit crashes.
    """
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        fd = f.id.get_vfd_handle()
        path.unlink(missing_ok=True)
        os.ftruncate(fd, 0)
    with contextlib.suppress(Exception):
        f.close()
    path.unlink(missing_ok=True)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


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
        self.digest_version = int(attrs.get("digest_version", 1))  # 1: files written before digest scheme 2
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

    # -- integrity --------------------------------------------------------------------------
    def verify(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Re-read every row and recompute the digest; DataError naming the chunk and dataset that differ.

        Scheme-2 files are checked chunk by chunk against ``/digest`` and the ``digest``
        attribute; older files (scheme 1, chunk bounds not recorded) can only be read
        through to the end, which catches undecodable chunks but not silently changed bytes.
        """
        f, n = self._file, self.n_objects
        ids = f["objects/object_id"][:]
        if len(np.unique(ids)) != len(ids):
            raise DataError(f"{self.path}: object ids are not unique")
        report: dict[str, Any] = {"path": str(self.path), "objects": n, "digest": self.digest,
                                  "digest_version": self.digest_version}
        if self.digest_version != digest.DIGEST_VERSION:
            for name in digest.row_dataset_names(f):
                ds = f[name]
                step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))))
                for start in range(0, n, step):
                    try:
                        ds[start : start + step]
                    except (OSError, ValueError) as exc:
                        raise DataError(f"{self.path}: /{name} rows {start}-{min(n, start + step) - 1} "
                                        f"cannot be read ({_short(exc)})") from None
            report |= {"chunks": None, "recomputed": False}
            return report
        try:
            check = digest.check_chunks(f, progress)
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise DataError(f"{self.path}: the digest table /{digest.GROUP} is damaged ({_short(exc)})") from None
        if check.problem:
            raise DataError(f"{self.path}: {check.problem}")
        if check.rows != n:
            raise DataError(f"{self.path}: the digest table covers {check.rows} rows, the file has {n}")
        if check.chain.hex() != self.digest:
            raise DataError(f"{self.path}: recomputed digest {check.chain.hex()} differs from the recorded {self.digest}")
        report |= {"chunks": check.chunks, "recomputed": True}
        return report

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SurveyReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
