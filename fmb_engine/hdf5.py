"""Opening FMB's own HDF5 files with one set of checks and error messages."""

from __future__ import annotations

from pathlib import Path

import h5py

from fmb_engine.errors import DataError


def open_checked(path: Path, fmt: str, version: int, what: str) -> h5py.File:
    """Open ``path`` read-only; DataError unless it is readable HDF5 of ``fmt`` at most ``version``."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    attrs = f.attrs
    if attrs.get("format") != fmt:
        f.close()
        raise DataError(f"{path}: not an FMB {what} file (format attribute {attrs.get('format')!r})")
    if int(attrs.get("format_version", 0)) > version:
        found = attrs["format_version"]
        f.close()
        raise DataError(f"{path}: format version {found} is newer than this FMB ({version})")
    return f
