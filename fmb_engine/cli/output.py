"""What a command shows: its records once, rendered as a table for eyes or as JSON or CSV for scripts.

Every command that prints a listing or a summary builds plain records (str, int, float,
bool, None, lists, dicts) and hands them to :func:`emit` with the ``--format`` it was given.
``table`` is the rich rendering; ``json`` is one document (an object or an array; NaN and
infinities become null); ``csv`` is a header row plus one row per record (nested values as
JSON text, None and NaN as empty cells). JSON and CSV go to stdout and nothing else does:
a command's notes then go to :func:`notes` (stderr), so ``| jq`` and ``| csv`` readers work.
The fields of each command's JSON are documented in docs/cli.md.

Light on purpose (stdlib, rich, typer): every command imports it before it parses arguments.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text


class Format(str, enum.Enum):
    """``--format`` values."""

    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = Annotated[
    Format,
    typer.Option("--format", case_sensitive=False,
                 help="table (for eyes), json (one document) or csv (header row): json and csv print only the "
                      "result on stdout; fields in docs/cli.md."),
]


@dataclass(frozen=True)
class Column:
    """One column of the table rendering: the record's ``key``, its header and how a value is shown."""

    key: str
    header: str | None = None
    cell: Callable[[Any], str | Text] | None = None  # a value as table text; default: escaped str, "-" for None
    whole: bool = False  # ``cell`` reads the whole record (a table cell made of several fields)
    style: str | None = None
    justify: str = "left"
    no_wrap: bool = False
    overflow: str = "ellipsis"  # on a terminal; off one the console is wide enough for every cell


def plain(value: Any) -> Any:
    """``value`` as JSON data: paths and enums as strings, numpy-like scalars as numbers, NaN/inf as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar; no numpy import needed
        return plain(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # a numpy array
        return plain(value.tolist())
    if hasattr(value, "isoformat"):  # datetime, date, pandas Timestamp
        return value.isoformat()
    return str(value)


def _csv_cell(value: Any) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def json_text(data: Any) -> str:
    return json.dumps(plain(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """A header row (``fields``, else every key in first-seen order) and one line per row."""
    if fields is None:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([_csv_cell(row.get(f)) for f in fields])
    return buffer.getvalue()


def _cell(column: Column, value: Any) -> str | Text:
    if column.cell is not None:
        return column.cell(value)
    return "-" if value is None else escape(str(value))


def _value(column: Column, record: Mapping[str, Any]) -> Any:
    return record if column.whole else record.get(column.key)


def table(records: Sequence[Mapping[str, Any]], columns: Sequence[Column], **options: Any) -> Table:
    """The rich table of ``records`` (``options``: title, show_edge, box ... of rich's Table)."""
    if "title" in options:
        options.setdefault("title_justify", "left")
    grid = Table(**options)
    for c in columns:
        grid.add_column(c.header if c.header is not None else c.key, style=c.style, justify=c.justify,  # type: ignore[arg-type]
                        no_wrap=c.no_wrap, overflow=c.overflow)  # type: ignore[arg-type]
    for record in records:
        grid.add_row(*(_cell(c, _value(c, record)) for c in columns))
    return grid


def pairs(rows: Sequence[tuple[str, Any]], key_style: str = "cyan") -> Table:
    """A two-column key/value table without header (one object's fields)."""
    grid = Table(show_header=False, show_edge=False, box=None)
    grid.add_column(style=key_style)
    grid.add_column()
    for key, value in rows:
        grid.add_row(escape(key), value if isinstance(value, Text) else escape(str(value)))
    return grid


def emit(fmt: Format, data: Any, shown: Callable[[], Sequence[RenderableType]], *,
         rows: Sequence[Mapping[str, Any]] | None = None, fields: Sequence[str] | None = None) -> None:
    """Print a command's result in ``fmt``.

    ``data`` is the JSON document; ``rows`` the CSV rows (default: ``data`` itself when it is a
    list, else ``[data]``); ``shown`` builds the table rendering's renderables (only called for
    ``table``).
    """
    from fmb_engine.cli.common import console

    if fmt is Format.json:
        typer.echo(json_text(data), nl=False)
    elif fmt is Format.csv:
        if rows is None:
            rows = data if isinstance(data, list) else [data]
        typer.echo(csv_text(rows, fields), nl=False)
    else:
        for renderable in shown():
            console.print(renderable)


def emit_records(fmt: Format, records: Sequence[Mapping[str, Any]], columns: Sequence[Column], *,
                 empty: str | None = None, **options: Any) -> None:
    """A plain listing: JSON array, CSV rows, or one table (``empty``: the line a table shows for no records)."""
    fields = list(dict.fromkeys([*(c.key for c in columns), *(k for r in records for k in r)]))

    def shown() -> list[RenderableType]:
        if not records and empty is not None:
            return [empty]
        return [table(records, columns, **options)]

    emit(fmt, list(records), shown, fields=fields)


def notes(fmt: Format) -> Console:
    """Where a command's notes, warnings and "written: PATH" lines go: stdout beside a table, else stderr."""
    from fmb_engine.cli.common import console, err_console

    return console if fmt is Format.table else err_console
