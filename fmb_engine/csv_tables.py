"""Per-object CSV tables, written with exactly the bytes of ``DataFrame.to_csv(path, index=False)``, faster.

Why: the score tables (``scores/*.csv``, 10⁶–10⁷ rows) are the reference system's format and other
stages, the explorer and users read them, so their bytes must not change; pandas formats every float
with numpy's Dragon4 (about 1 µs a value) and writes the rows one by one through ``csv.writer``, most
of the one-node merge of a detect run at 10⁷ objects (docs/benchmarks.md, "CSV tables").

How: each column of a chunk of rows becomes an Arrow string array holding pandas' text of each
cell, Arrow's C++ kernels join them into lines, and the lines are written as one buffer per chunk:

* ``float64``: pandas writes ``numpy.ndarray.astype(str)`` of the column (shortest round-trip digits,
  Python's ``repr`` layout) and ``""`` for NaN. Arrow's cast to string gives the same shortest digits;
  where its layout is the same too — finite values with ``|x| >= 1e-4`` (or 0) that Arrow writes
  without an exponent, an integral value getting pandas' ``.0`` — its text is used. Every other value
  (NaN, ±inf, ``|x| < 1e-4``, an exponent) is formatted by numpy as pandas does.
* integers: their decimal digits; ``bool``: ``True`` / ``False`` (pandas: ``str`` of the value).
* strings (the ``str`` dtype, or ``object`` holding only strings): as they are, missing ones ``""``.

Anything else goes to ``DataFrame.to_csv`` itself: another dtype, an index, fewer than two columns
(``csv.writer`` quotes a lone empty field), column names that are not strings, and any string that
``csv.writer`` might quote (it holds ``,`` ``"`` ``\\r`` or ``\\n``). The float rule rests on Arrow's
formatter, so it is checked at first use against numpy on boundary values (:func:`_arrow_floats_agree`);
if a pyarrow version ever formats differently, floats go through numpy (same bytes, slower).
``tests/engine/test_csv_tables.py`` compares the bytes with ``to_csv`` on real and hostile tables.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.workspace import atomic_path

#: Rows formatted and written at a time: bounds the memory of the text of a chunk (~10 MB).
CHUNK_ROWS = 131_072
#: Characters for which ``csv.writer`` (QUOTE_MINIMAL, pandas' dialect) may quote a field.
_QUOTED = r'[,"\r\n]'

Column = Callable[[int, int], object]  # rows [start, stop) of one column -> an Arrow string array


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str], index: bool = False) -> Path:
    """``df.to_csv(path, index=index)``, byte for byte, written atomically (temporary file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        columns = None if index else _columns(df)
        if columns is None:
            df.to_csv(tmp, index=index)
        else:
            _write_rows(tmp, df, columns)
    return path


def _write_rows(tmp: Path, df: pd.DataFrame, columns: list[Column]) -> None:
    import pyarrow.compute as pc

    header = io.StringIO()  # pandas writes the header through csv.writer with these settings
    csv.writer(header, lineterminator=os.linesep, quoting=csv.QUOTE_MINIMAL).writerow(list(df.columns))
    with open(tmp, "wb") as fh:
        fh.write(header.getvalue().encode("utf-8"))
        for start in range(0, len(df), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(df))
            cells = [column(start, stop) for column in columns]
            cells[-1] = pc.binary_join_element_wise(cells[-1], os.linesep, "")
            lines = pc.binary_join_element_wise(*cells, ",")
            for part in getattr(lines, "chunks", [lines]):
                fh.write(_text(part))


def _text(lines) -> memoryview:
    """The bytes of a string array's values, one after the other (its data buffer, sliced: no copy)."""
    import pyarrow as pa

    _, offsets, data = lines.buffers()
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    bounds = np.frombuffer(offsets, dtype=width)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(data)[int(bounds[0]):int(bounds[-1])] if len(lines) else memoryview(b"")


def _columns(df: pd.DataFrame) -> list[Column] | None:
    """One text maker per column, or None when any column (or the frame) is left to pandas."""
    if df.shape[1] < 2 or len(df) == 0 or not all(isinstance(c, str) for c in df.columns):
        return None
    columns = []
    for j in range(df.shape[1]):
        column = _column(df.iloc[:, j])
        if column is None:
            return None
        columns.append(column)
    return columns


def _column(series: pd.Series) -> Column | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype == np.float64:
        values = series.to_numpy()
        fmt = format_floats if _arrow_floats_agree() else _numpy_floats
        return lambda start, stop: fmt(values[start:stop])
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        values = series.to_numpy()
        return lambda start, stop: pc.cast(pa.array(values[start:stop]), pa.string())
    if isinstance(dtype, np.dtype) and dtype == np.bool_:
        values = series.to_numpy()
        return lambda start, stop: pc.if_else(pa.array(values[start:stop]), "True", "False")
    if isinstance(dtype, pd.StringDtype) or (dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "string"):
        text = pa.array(series, type=pa.string(), from_pandas=True)  # an Array or a ChunkedArray
        if pc.any(pc.match_substring_regex(text, _QUOTED)).as_py():
            return None
        text = pc.fill_null(text, "")
        return lambda start, stop: text.slice(start, stop - start)
    return None


def format_floats(values: np.ndarray):
    """pandas' text of float64 ``values`` as an Arrow string array (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(values), pa.string())
    finite = np.isfinite(values)
    same = finite & ((np.abs(values) >= 1e-4) | (values == 0))
    same &= ~pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    if (integral := same & (values == np.trunc(values, where=finite, out=np.zeros_like(values)))).any():
        text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)  # Arrow "3", pandas "3.0"
    if (nan := np.isnan(values)).any():
        text = pc.if_else(nan, "", text)
    if (other := ~same & ~nan).any():
        text = pc.replace_with_mask(text, other, _arrow_text(values[other].astype(str)))
    return text


def _numpy_floats(values: np.ndarray):
    """pandas' text of float64 ``values`` made by numpy for every value (the fallback of :func:`format_floats`)."""
    return _arrow_text(_numpy_text(values))


def _arrow_text(text: np.ndarray):
    """``text`` as one Arrow string array (pyarrow splits a large numpy string array into chunks)."""
    import pyarrow as pa

    array = pa.array(text, pa.string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _numpy_text(values: np.ndarray) -> np.ndarray:
    """What pandas writes for float64 ``values``: ``astype(str)``, NaN as the empty string."""
    text = values.astype(str).astype(object)
    text[np.isnan(values)] = ""
    return text


def probe_floats() -> np.ndarray:
    """Values at every edge of :func:`format_floats`' rule: the 1e-4 bound, Arrow's switch to an
    exponent, integral values, zeros, subnormals, the largest double, non-finite values."""
    tens = 10.0 ** np.arange(-8, 18)
    edges = np.concatenate([tens, np.nextafter(tens, 0), np.nextafter(tens, np.inf), tens * 1.5, tens + 0.5,
                            [0.0, -0.0, 3.0, 100.0, 0.1, 0.30000000000000004, 1 / 3, 2.0 ** 53, 2.0 ** 60,
                             5e-324, 2.2250738585072014e-308, 1e-300, 1.7976931348623157e308,
                             np.nan, np.inf, -np.inf]])
    return np.concatenate([edges, -edges])


@functools.cache
def _arrow_floats_agree() -> bool:
    """Whether this pyarrow's float text, through :func:`format_floats`' rule, is numpy's on :func:`probe_floats`."""
    values = probe_floats()
    return format_floats(values).to_pylist() == _numpy_text(values).tolist()
