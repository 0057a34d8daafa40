"""Opening the dataset's parquet/arrow files: schema checks and batch streaming.

Why: a truncated download, a corrupt file or a table with renamed columns must
stop with one sentence naming the file (and the column, or the row where the
read failed), never with a pyarrow traceback -- and a file without, say, a
``spectrum`` column is a schema error, not an import in which every row is
flagged. Every failure here is a :class:`BadFile`, so the importer can list the
bad files together or skip them (``--skip-bad-files``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fmb_engine.errors import DataError
from fmb_engine.survey.bands import DATASET_BAND_COLUMNS
from fmb_engine.survey.importers.layout import SourceFile

SPECTRUM_FIELDS = ("flux", "wavelength", "error")
BAND_COLUMNS = tuple(DATASET_BAND_COLUMNS.values())


class BadFile(DataError):
    """One input file cannot be imported; the message names it and says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _plain(t: pa.DataType) -> pa.DataType:
    return t.storage_type if isinstance(t, pa.ExtensionType) else t


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _list_depth(t: pa.DataType) -> tuple[int, pa.DataType]:
    depth = 0
    t = _plain(t)
    while _is_list(t):
        depth, t = depth + 1, _plain(t.value_type)
    return depth, t


def _column_problem(name: str, t: pa.DataType) -> str | None:
    """Why column ``name`` of type ``t`` cannot be read, or None."""
    t = _plain(t)
    if pa.types.is_null(t):
        return f"column {name!r} holds only nulls (type null)"
    if name in ("object_id", "targetid"):
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            return f"column {name!r} has type {t}, expected integers or strings"
    elif name == "redshift":
        if not _numeric(t):
            return f"column 'redshift' has type {t}, expected numbers"
    elif name in BAND_COLUMNS:
        depth, leaf = _list_depth(t)
        if depth not in (2, 3) or not _numeric(leaf):
            return f"column {name!r} has type {t}, expected a 2-D image: a list of lists of numbers"
    elif name == "spectrum":
        if not pa.types.is_struct(t):
            return f"column 'spectrum' has type {t}, expected a struct of {', '.join(SPECTRUM_FIELDS)}"
        fields = [t.field(i).name for i in range(t.num_fields)]
        for sub in SPECTRUM_FIELDS:
            if sub not in fields:
                return f"column 'spectrum' has no sub-field {sub!r} (sub-fields found: {', '.join(fields) or 'none'})"
            depth, leaf = _list_depth(t.field(sub).type)
            if depth != 1 or not _numeric(leaf):
                return f"column 'spectrum.{sub}' has type {t.field(sub).type}, expected a list of numbers"
    elif name == "RGB_image":
        if not (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0) and not pa.types.is_binary(t):
            return f"column 'RGB_image' has type {t}, expected an image struct {{bytes, path}} or binary"
    return None


def check_schema(path: Path, schema: pa.Schema, need_targetid: bool) -> None:
    """BadFile unless every required column is there with a readable type."""
    names = list(schema.names)
    required = ["object_id", "spectrum", *BAND_COLUMNS] + (["targetid"] if need_targetid else [])
    missing = [c for c in required if c not in names]
    if missing:
        hints = [f"{c!r} (a renamed {close[0]!r}?)" if (close := difflib.get_close_matches(c, names, n=1, cutoff=0.6))
                 else repr(c) for c in missing]
        why = " (needed to join --catalog)" if "targetid" in missing else ""
        raise BadFile(path, f"missing required column(s) {', '.join(hints)}{why}; columns found: {', '.join(names)}")
    for name in names:
        problem = _column_problem(name, schema.field(name).type)
        if problem:
            raise BadFile(path, problem)


def _arrow_reader(src: SourceFile) -> pa.RecordBatchStreamReader | pa.RecordBatchFileReader:
    source = pa.memory_map(str(src.path))
    try:
        return pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError):
        source.seek(0)
        return pa.ipc.open_file(source)


def inspect(src: SourceFile, need_targetid: bool) -> int:
    """Check that ``src`` opens and has the dataset's columns; returns its row count when known."""
    try:
        if src.kind == "parquet":
            meta = pq.ParquetFile(src.path).metadata
            schema, rows = meta.schema.to_arrow_schema(), meta.num_rows
        else:
            reader = _arrow_reader(src)
            schema, rows = reader.schema, _arrow_rows(reader)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadFile(src.path, f"not a readable {src.kind} file ({_short(exc)}); is it truncated or corrupt?") from None
    check_schema(src.path, schema, need_targetid)
    return rows


def _arrow_rows(reader: pa.RecordBatchStreamReader | pa.RecordBatchFileReader) -> int:
    """Rows of a memory-mapped Arrow file: walks the batch headers only (no data is copied),
    so a truncated stream is found here, before anything is written."""
    if isinstance(reader, pa.RecordBatchFileReader):
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return sum(batch.num_rows for batch in reader)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def batches(src: SourceFile, batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, batch) of ``src`` in order; a read failure is a BadFile naming the row reached."""
    row = 0
    try:
        if src.kind == "parquet":
            stream: Iterator[pa.RecordBatch] = pq.ParquetFile(src.path).iter_batches(batch_size=batch_size)
        else:
            reader = _arrow_reader(src)
            read = (reader.get_batch(i) for i in range(reader.num_record_batches)) \
                if isinstance(reader, pa.RecordBatchFileReader) else iter(reader)
            stream = (b for batch in read for b in pa.Table.from_batches([batch]).to_batches(batch_size))
        for batch in stream:
            yield row, batch
            row += batch.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadFile(src.path, f"unreadable after row {row} ({_short(exc)}); is it truncated or corrupt?") from None
