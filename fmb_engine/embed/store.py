"""The embedding store: one HDF5 file per model run, one (N, D) array per modality.

Why: the reference system kept a pickled list of per-object dicts of small
tensors, and every consumer re-stacked it in Python (parity notes §9.5). Here a
modality is one contiguous float32 dataset, so loading it is a single read.

Layout (``format = "fmb-embeddings"``)::

    /                   attrs: format, format_version, embedder, aligned, modalities (JSON),
                               dims (JSON), n_objects, config (JSON), weights_digest,
                               survey_digest, survey_path, created, versions (JSON), extra (JSON)
    /object_id          (N,) S64  fixed-length UTF-8 ids
    /row                (N,) int64  row of the object in the survey (-1: unknown, e.g. imported)
    /vectors/<modality> (N, D) float32, contiguous
    /valid/<modality>   (N,) bool  False: the vector was computed from imputed input
    /reason             (N,) S128  why an object is not (fully) embeddable, "" when it is
    /columns/<name>     optional per-object values carried along (e.g. targetid, redshift of an import)
    /state/<key>        fitted state of the embedder (plain arrays), when it has one

The writer builds the file under a temporary name and renames it (atomic): a
file under its final name is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmb_engine.errors import DataError
from fmb_engine.hdf5 import open_checked
from fmb_engine.survey.store import ID_LENGTH
from fmb_engine.workspace import atomic_path

FORMAT = "fmb-embeddings"
FORMAT_VERSION = 1
REASON_LENGTH = 128


@dataclass
class EmbeddingMeta:
    """What produced a set of vectors (file attributes)."""

    embedder: str
    aligned: bool
    modalities: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    weights_digest: str = ""
    survey_digest: str = ""
    survey_path: str = ""
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def encode_ids(object_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Object ids as fixed-length UTF-8 bytes (DataError when one is too long)."""
    ids = np.asarray(object_ids).astype(str)
    enc = np.char.encode(ids, "utf-8") if ids.size else np.zeros(0, dtype=f"S{ID_LENGTH}")
    if enc.size and enc.dtype.itemsize > ID_LENGTH:
        lengths = np.char.str_len(enc)
        bad = ids[int(np.argmax(lengths))]
        raise DataError(f"object_id {bad!r} is longer than {ID_LENGTH} bytes")
    return enc.astype(f"S{ID_LENGTH}")


def _encode_reasons(reasons: Sequence[str] | np.ndarray) -> np.ndarray:
    arr = np.asarray(reasons).astype(str)
    if not arr.size:
        return np.zeros(0, f"S{REASON_LENGTH}")
    return np.char.encode(arr, "utf-8").astype(f"S{REASON_LENGTH}")


class EmbeddingWriter:
    """Build an embedding file of ``n`` objects piece by piece; rename it into place on :meth:`close`.

    Memory stays at one piece (a merge of shards never holds the whole survey; nothing is
    allocated per object up front). Until :meth:`close` the file lives under a temporary
    name, so an interruption never leaves a partial file under the final name. ``columns``
    declares per-object columns (name -> dtype; bytes columns with their final width) that
    :meth:`write` fills piece by piece; :meth:`set_columns` adds whole ones instead.
    """

    def __init__(self, path: str | os.PathLike[str], n: int, dims: Mapping[str, int], meta: EmbeddingMeta,
                 columns: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.n = int(n)
        missing = [m for m in meta.modalities if m not in dims]
        if missing:
            raise DataError(f"{self.path.name}: modality {missing[0]!r} declared but no vectors given")
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._file = h5py.File(self._tmp, "w")
            f = self._file
            f.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                embedder=meta.embedder,
                aligned=bool(meta.aligned),
                modalities=json.dumps(list(meta.modalities)),
                dims=json.dumps({m: int(dims[m]) for m in meta.modalities}),
                n_objects=self.n,
                config=json.dumps(meta.config, sort_keys=True, default=str),
                weights_digest=meta.weights_digest,
                survey_digest=meta.survey_digest,
                survey_path=meta.survey_path,
                created=meta.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                versions=json.dumps(meta.versions, sort_keys=True),
                extra=json.dumps(meta.extra, sort_keys=True, default=str),
            )
            f.create_dataset("object_id", shape=(self.n,), dtype=f"S{ID_LENGTH}")
            f.create_dataset("row", shape=(self.n,), dtype=np.int64, fillvalue=-1)
            f.create_dataset("reason", shape=(self.n,), dtype=f"S{REASON_LENGTH}")
            vec, val = f.create_group("vectors"), f.create_group("valid")
            for mod in meta.modalities:
                vec.create_dataset(mod, shape=(self.n, int(dims[mod])), dtype=np.float32)  # contiguous: one read
                val.create_dataset(mod, shape=(self.n,), dtype=bool, fillvalue=True)
            for key, dtype in (columns or {}).items():
                f.require_group("columns").create_dataset(key, shape=(self.n,), dtype=np.dtype(dtype))
            self.columns = tuple(columns or ())
            self.modalities = tuple(meta.modalities)
            self.dims = {m: int(dims[m]) for m in meta.modalities}
        except BaseException:
            self.abort()
            raise

    def write(
        self,
        where: slice | np.ndarray,
        object_ids: Sequence[Any] | np.ndarray,
        vectors: Mapping[str, np.ndarray],
        *,
        rows: np.ndarray | None = None,
        valid: Mapping[str, np.ndarray] | None = None,
        reasons: Sequence[str] | np.ndarray | None = None,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Fill the objects at ``where`` (a slice, or increasing row positions of the file);
        ``columns``: values of columns declared at construction."""
        ids = encode_ids(object_ids)
        k = ids.shape[0]
        f = self._file
        for mod in self.modalities:
            if mod not in vectors:
                raise DataError(f"{self.path.name}: modality {mod!r} declared but no vectors given")
            arr = np.ascontiguousarray(vectors[mod], dtype=np.float32)
            if arr.shape != (k, self.dims[mod]):
                raise DataError(f"{self.path.name}: vectors[{mod!r}] must be ({k}, {self.dims[mod]}), got {arr.shape}")
            if k:
                f[f"vectors/{mod}"][where] = arr
            if valid is not None and mod in valid and k:
                f[f"valid/{mod}"][where] = np.asarray(valid[mod], dtype=bool)
        if k:
            f["object_id"][where] = ids
            if rows is not None:
                f["row"][where] = np.asarray(rows, dtype=np.int64)
            if reasons is not None:
                f["reason"][where] = _encode_reasons(reasons)
        for key, value in (columns or {}).items():
            if key not in self.columns:
                raise DataError(f"{self.path.name}: column {key!r} was not declared when the file was created")
            if k:
                f[f"columns/{key}"][where] = np.asarray(value)

    def set_columns(self, columns: Mapping[str, np.ndarray]) -> None:
        g = self._file.require_group("columns")
        for key, value in columns.items():
            arr = np.asarray(value)
            if arr.shape[:1] != (self.n,):
                raise DataError(f"{self.path.name}: column {key!r} must have {self.n} rows, got {arr.shape}")
            if arr.dtype.kind in "UO":
                arr = np.char.encode(arr.astype(str), "utf-8")
            g.create_dataset(key, data=arr)

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        g = self._file.require_group("state")
        for key, value in state.items():
            g.create_dataset(key, data=np.asarray(value))

    def close(self, check_unique: bool = True) -> Path:
        """Check the ids, then rename the file into place (atomic)."""
        try:
            if check_unique and self.n:
                ids = self._file["object_id"][...]
                uniq, counts = np.unique(ids, return_counts=True)
                if uniq.size != self.n:
                    raise DataError(f"{self.path.name}: object_id {uniq[counts > 1][0].decode()!r} occurs more than once")
            self._file.close()
        except BaseException:
            self.abort()
            raise
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the final path is untouched."""
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, RuntimeError("embedding write aborted"), None)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_embeddings(
    path: str | os.PathLike[str],
    object_ids: Sequence[Any] | np.ndarray,
    vectors: Mapping[str, np.ndarray],
    meta: EmbeddingMeta,
    *,
    rows: np.ndarray | None = None,
    valid: Mapping[str, np.ndarray] | None = None,
    reasons: Sequence[str] | np.ndarray | None = None,
    state: Mapping[str, np.ndarray] | None = None,
    columns: Mapping[str, np.ndarray] | None = None,
    check_unique: bool = True,
) -> Path:
    """Write one embedding file atomically from whole arrays (one row per id)."""
    n = len(object_ids)
    dims = {m: int(np.shape(vectors[m])[1]) if np.ndim(vectors[m]) == 2 else -1 for m in meta.modalities if m in vectors}
    for m, d in dims.items():
        if d < 0 or np.shape(vectors[m])[0] != n:
            raise DataError(f"{Path(path).name}: vectors[{m!r}] must be ({n}, D), got {np.shape(vectors[m])}")
    writer = EmbeddingWriter(path, n, dims, meta)
    try:
        writer.write(slice(0, n), object_ids, vectors, rows=rows, valid=valid, reasons=reasons)
        if columns:
            writer.set_columns(columns)
        if state:
            writer.set_state(state)
    except BaseException:
        writer.abort()
        raise
    return writer.close(check_unique)


class EmbeddingReader:
    """Whole-array or row-range loading, and lookup by object_id, of one embedding file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"embedding file not found: {self.path}")
        self._file = open_checked(self.path, FORMAT, FORMAT_VERSION, "embedding")
        try:
            self._read_header()
        except (KeyError, ValueError, TypeError, OSError) as exc:  # json.JSONDecodeError is a ValueError
            self._file.close()
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"{self.path}: damaged embedding file ({detail}); re-create it (embed again, or embed import)") from None
        self._ids: np.ndarray | None = None
        self._index: dict[str, int] | None = None

    def _read_header(self) -> None:
        """Attributes, and the shape/dtype of every dataset (metadata only), so a damaged file fails at open."""
        a = self._file.attrs
        self.embedder = str(a["embedder"])
        self.aligned = bool(a["aligned"])
        self.modalities: tuple[str, ...] = tuple(json.loads(a["modalities"]))
        self.dims: dict[str, int] = {str(m): int(d) for m, d in json.loads(a["dims"]).items()}
        self.n_objects = int(a["n_objects"])
        self.config: dict[str, Any] = json.loads(a["config"])
        self.weights_digest = str(a["weights_digest"])
        self.survey_digest = str(a["survey_digest"])
        self.survey_path = str(a["survey_path"])
        self.created = str(a["created"])
        self.versions: dict[str, str] = json.loads(a["versions"])
        self.extra: dict[str, Any] = json.loads(a["extra"])
        n = self.n_objects
        expected = {"object_id": ((n,), "S"), "row": ((n,), "i"), "reason": ((n,), "S")}
        for mod in self.modalities:
            expected[f"vectors/{mod}"] = ((n, self.dims[mod]), "f")
            expected[f"valid/{mod}"] = ((n,), "b")
        for name, (shape, kind) in expected.items():
            ds = self._file[name]
            if ds.shape != shape or ds.dtype.kind != kind:
                raise ValueError(f"/{name} is {ds.shape} {ds.dtype}, expected {shape} of kind {kind!r}")

    @property
    def meta(self) -> EmbeddingMeta:
        return EmbeddingMeta(
            self.embedder, self.aligned, self.modalities, self.config, self.weights_digest, self.survey_digest,
            self.survey_path, self.created, self.versions, self.extra,
        )

    # -- ids ----------------------------------------------------------------------------------
    @property
    def object_ids(self) -> np.ndarray:
        """Object ids as str (object array), row i = vector row i."""
        if self._ids is None:
            raw = self._file["object_id"][...]
            self._ids = np.char.decode(raw, "utf-8").astype(object) if raw.size else np.zeros(0, object)
        return self._ids

    def rows(self) -> np.ndarray:
        """Survey row of each object (-1 when unknown)."""
        return self._file["row"][...]

    def index_of(self, object_id: str) -> int:
        """Row of ``object_id`` (O(1) after a one-time id -> row map)."""
        if self._index is None:
            self._index = {oid: i for i, oid in enumerate(self.object_ids)}
        try:
            return self._index[str(object_id)]
        except KeyError:
            raise DataError(f"{self.path}: no object with object_id {object_id!r}") from None

    # -- vectors ------------------------------------------------------------------------------
    def _check(self, modality: str) -> h5py.Dataset:
        if modality not in self.modalities:
            raise DataError(f"{self.path}: no modality {modality!r}; modalities: {', '.join(self.modalities)}")
        return self._file[f"vectors/{modality}"]

    def load(self, modality: str, valid_only: bool = False) -> np.ndarray:
        """The (N, D) float32 array of one modality (rows with valid False dropped if ``valid_only``)."""
        ds = self._check(modality)
        out = np.empty(ds.shape, dtype=np.float32)
        if out.size:
            ds.read_direct(out)
        return out[self.valid(modality)] if valid_only else out

    def read(self, modality: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one modality as float32 (one contiguous read; streams a big file by row ranges)."""
        ds = self._check(modality)
        start, stop = max(0, int(start)), min(int(stop), ds.shape[0])
        return self.read_into(modality, start, np.empty((max(0, stop - start), ds.shape[1]), dtype=np.float32))

    def read_into(self, modality: str, start: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start:start + len(out)`` of one modality read straight into ``out`` (C-contiguous
        float32, e.g. a buffer reused chunk after chunk: no allocation, no conversion); returns ``out``.

        A failed read (damaged or truncated file) raises :class:`DataError` naming the file and rows.
        """
        ds = self._check(modality)
        stop = int(start) + out.shape[0]
        if out.ndim != 2 or out.shape[1] != ds.shape[1] or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"read_into: out must be a C-contiguous float32 array of {ds.shape[1]} columns, "
                             f"got {out.dtype} {out.shape}")
        if out.shape[0] and (start < 0 or stop > ds.shape[0]):
            raise ValueError(f"read_into: rows {start}:{stop} outside the {ds.shape[0]} rows of {modality!r}")
        if out.size:
            try:
                ds.read_direct(out, np.s_[start:stop])
            except OSError as exc:
                detail = " ".join(str(exc).split())
                raise DataError(f"{self.path}: reading rows {start}:{stop} of {modality!r} failed ({detail}); "
                                "the file is damaged, re-create it") from exc
        return out

    def take(self, modality: str, rows: np.ndarray) -> np.ndarray:
        """The rows at increasing positions ``rows`` of one modality as float32 (one selection read: a
        sample of a big file without reading the rest)."""
        ds = self._check(modality)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, ds.shape[1]), np.float32)
        return np.asarray(ds[rows], dtype=np.float32)

    def load_all(self, modalities: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return {m: self.load(m) for m in (modalities or self.modalities)}

    def get(self, object_ids: Sequence[str] | str, modality: str) -> np.ndarray:
        """Vectors of some objects, in the given order ((D,) for one id, (k, D) for a list)."""
        single = isinstance(object_ids, str)
        idx = np.array([self.index_of(o) for o in ([object_ids] if single else object_ids)], dtype=np.int64)
        ds = self._check(modality)
        if idx.size == 0:
            return np.zeros((0, ds.shape[1]), np.float32)
        order = np.argsort(idx)
        uniq, inv = np.unique(idx[order], return_inverse=True)
        data = ds[uniq][inv]
        out = np.empty_like(data)
        out[order] = data
        return out[0] if single else out

    def valid(self, modality: str) -> np.ndarray:
        self._check(modality)
        return self._file[f"valid/{modality}"][...]

    def reasons(self) -> np.ndarray:
        """Per object: why it is not (fully) embeddable, "" when it is."""
        raw = self._file["reason"][...]
        return np.char.decode(raw, "utf-8").astype(object) if raw.size else np.zeros(0, object)

    def columns(self) -> dict[str, np.ndarray]:
        """Optional per-object columns carried along (bytes columns decoded to str)."""
        if "columns" not in self._file:
            return {}
        out = {}
        for k, ds in self._file["columns"].items():
            v = ds[...]
            out[k] = np.char.decode(v, "utf-8").astype(object) if v.dtype.kind == "S" else v
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The embedder's fitted state ({} for pretrained models)."""
        if "state" not in self._file:
            return {}
        return {k: v[()] for k, v in self._file["state"].items()}

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EmbeddingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_meta(path: str | os.PathLike[str]) -> EmbeddingMeta:
    with EmbeddingReader(path) as r:
        return r.meta


def is_embedding_file(path: str | os.PathLike[str]) -> bool:
    """True for a readable, complete FMB embedding file."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False
