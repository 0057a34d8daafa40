"""Which data files an import reads, and which split each one belongs to.

Why a module of its own: users point the importer at whatever copy of the dataset
they have -- the published ``save_to_disk`` folders, Hub-style parquet shards, one
renamed file, a folder of unnamed files -- and the split of every row must be
decided before anything is written, with an error that says what was found and
which flag settles it when the layout is ambiguous.

Rules (docs/formats.md, "Importing the Euclid x DESI dataset"):

* a split is *named* by a ``dataset_dict.json`` (its folder names), a
  ``state.json`` ``_split``, or a file/folder name that starts with ``train``,
  ``test`` or ``validation`` followed by ``-``, ``_`` or ``.`` (or ends with
  ``_train`` ...), e.g. ``train-00000-of-00003.parquet``;
* a source with one split (a file, or a folder whose files carry no split name)
  is imported whole, under ``--split NAME`` or its own name, else ``train``;
* a source with several splits imports the ones selected by ``--split NAME``
  (default ``train`` and ``test``) and reports the others as ignored;
* ``--split NAME=PATH`` assigns a file or folder to a split explicitly.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fmb_engine.errors import DataError

KNOWN_SPLITS = ("train", "test", "validation")
#: Name of a source's only split when nothing names it (the split later stages fit on).
UNNAMED_SPLIT = "train"
DATA_SUFFIXES = (".parquet", ".arrow")


class LayoutError(DataError):
    """The files under a source do not say which split they belong to, or there are none."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    split: str
    kind: str  # "arrow" | "parquet"


@dataclass
class Layout:
    """The files to import, in a stable order, and how their splits were decided."""

    files: list[SourceFile]
    naming: str  # one line for the summary: where the split names come from
    ignored: dict[str, int] = field(default_factory=dict)  # split -> files not imported


def split_from_name(name: str) -> str | None:
    """``train-00000-of-00003`` -> ``train``; ``..._test`` -> ``test``; other names -> None."""
    for split in KNOWN_SPLITS:
        if (name == split or re.match(rf"{split}[-_.]", name) or re.search(rf"[-_]{split}$", name)
                or re.search(rf"-{split}-\d+-of-\d+$", name)):  # the `datasets` cache: <builder>-train-00000-of-00003
            return split
    return None


def arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.is_file():
        try:
            listed = json.loads(state.read_text()).get("_data_files", [])
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as exc:
            raise LayoutError(f"{state}: not a readable save_to_disk state file ({exc})") from None
        if listed:
            files = [folder / str(f.get("filename", "")) for f in listed if isinstance(f, dict)]
            absent = [p.name for p in files if not p.is_file()]
            if absent:
                raise LayoutError(f"{state} lists data files that are not there: {', '.join(absent)}")
            return files
    return sorted(folder.glob("*.arrow"))


def _state_split(folder: Path) -> str | None:
    try:
        value = json.loads((folder / "state.json").read_text()).get("_split")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _is_save_to_disk(folder: Path) -> bool:
    return (folder / "state.json").is_file() or any(folder.glob("*.arrow"))


def _arrow_folder(folder: Path) -> list[tuple[Path, str, str | None]]:
    """The .arrow files of one folder and their splits.

    A ``save_to_disk`` folder (``state.json``) holds one split: its ``_split``, else the
    folder's name. A folder of .arrow files without ``state.json`` is what ``load_dataset``
    leaves in the ``datasets`` cache (``parquet-train.arrow``, ``parquet-test.arrow``): each
    file is named by its own name first, so the splits are not merged into one.
    """
    if (folder / "state.json").is_file():
        named = _state_split(folder) or split_from_name(folder.name)
        return [(p, "arrow", named) for p in arrow_files(folder)]
    return [(p, "arrow", split_from_name(p.stem) or split_from_name(folder.name)) for p in arrow_files(folder)]


def _hub_snapshot(repo: Path) -> Path:
    """The snapshot of a Hugging Face hub cache folder (``datasets--owner--name``) to read.

    Every revision downloaded is a folder under ``snapshots/``; reading them all would import
    each object once per revision. ``refs/main`` names the current one.
    """
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted(p for p in (repo / "snapshots").iterdir() if p.is_dir())
    if len(snapshots) == 1:
        return snapshots[0]
    raise LayoutError(
        f"{repo}: a Hugging Face hub cache folder with {len(snapshots)} snapshots "
        f"({', '.join(p.name for p in snapshots) or 'none'}) and no usable refs/main; "
        "point SOURCE at one of them (snapshots/<revision>)"
    )


def _found(folder: Path, limit: int = 12) -> str:
    entries = sorted(folder.iterdir())
    if not entries:
        return "the folder is empty"
    suffixes = Counter(p.suffix or ("<folder>" if p.is_dir() else "<no suffix>") for p in entries)
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:limit])
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    kinds = ", ".join(f"{n} {s}" for s, n in suffixes.most_common())
    return f"found {names}{more} ({kinds})"


def _scan(path: Path) -> list[tuple[Path, str, str | None]]:
    """(file, kind, split named by the layout or None) for every data file under ``path``."""
    if not path.exists():
        raise LayoutError(f"dataset source not found: {path}")
    if path.is_file():
        if path.suffix == ".parquet":
            return [(path, "parquet", split_from_name(path.stem))]
        if path.suffix == ".arrow":
            in_save_to_disk = (path.parent / "state.json").is_file()
            named = (_state_split(path.parent) or split_from_name(path.parent.name)) if in_save_to_disk else None
            named = named or split_from_name(path.stem)
            return [(path, "arrow", named)]
        raise LayoutError(
            f"{path}: a {path.suffix or 'suffix-less'} file; expected a .parquet or .arrow file, or a dataset folder"
        )
    if _is_save_to_disk(path):
        return _arrow_folder(path)
    if (path / "snapshots").is_dir():
        return _scan(_hub_snapshot(path))
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        try:
            declared = [str(s) for s in json.loads(dict_file.read_text())["splits"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise LayoutError(f"{dict_file}: not a readable dataset_dict.json ({type(exc).__name__}: {exc})") from None
        absent = [s for s in declared if not _is_save_to_disk(path / s)]
        if absent:
            raise LayoutError(f"{dict_file} declares split(s) {', '.join(absent)} but {path} has no such save_to_disk folder")
        return [(p, "arrow", s) for s in declared for p in arrow_files(path / s)]
    found: list[tuple[Path, str, str | None]] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and _is_save_to_disk(p)):
        found += _arrow_folder(child)
    if found:
        return found
    for p in sorted(path.rglob("*.parquet")):
        named = split_from_name(p.stem) or next(
            (s for part in reversed(p.relative_to(path).parts[:-1]) if (s := split_from_name(part))), None
        )
        found.append((p, "parquet", named))
    if not found:
        raise LayoutError(
            f"{path}: no dataset found (looked for save_to_disk folders with state.json/*.arrow, a "
            f"dataset_dict.json, or *.parquet files); {_found(path)}. Point SOURCE at a .parquet/.arrow file or "
            "a dataset folder, or assign files with --split NAME=PATH"
        )
    return found


def absolute(path: str | Path) -> Path:
    """``path`` made absolute *without* following symlinks: in the Hugging Face hub cache
    ``train-00000-of-00003.parquet`` is a link to ``blobs/<hash>``, whose name says neither
    the file type nor the split."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _resolve_path(text: str, source: Path | None) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and source is not None and source.is_dir():
        path = source / path
    return absolute(path)


def plan(source: str | Path | None, splits: list[str], splits_given: bool) -> Layout:
    """The files to import and their splits.

    ``splits`` are the ``--split`` values (``NAME`` or ``NAME=PATH``); ``splits_given``
    says whether the user set them (the default selects ``train`` and ``test``).
    """
    source_path = absolute(source) if source is not None else None
    assigned = [s for s in splits if "=" in s]
    names = [s for s in splits if "=" not in s]
    if assigned:
        if names and splits_given:
            raise LayoutError(
                f"--split takes either split names ({', '.join(names)}) or NAME=PATH assignments "
                f"({', '.join(assigned)}), not both; give every split as NAME=PATH"
            )
        files: list[SourceFile] = []
        for entry in assigned:
            name, _, text = entry.partition("=")
            if not name.strip() or not text.strip():
                raise LayoutError(f"--split {entry!r}: expected NAME=PATH, e.g. --split train=data/part1.parquet")
            files += [SourceFile(p, name.strip(), kind) for p, kind, _ in _scan(_resolve_path(text.strip(), source_path))]
        return Layout(files, "set by --split NAME=PATH")
    if source_path is None:
        raise LayoutError("no dataset given: pass SOURCE (a file or folder) or --split NAME=PATH")
    scanned = _scan(source_path)
    named = {s for _, _, s in scanned if s is not None}
    unnamed = [p for p, _, s in scanned if s is None]
    if named and unnamed:
        shown = ", ".join(str(p.relative_to(source_path)) if p.is_relative_to(source_path) else str(p) for p in unnamed[:6])
        counts = Counter(s for _, _, s in scanned if s is not None)
        raise LayoutError(
            f"{source_path}: cannot tell the split of every file: "
            f"{', '.join(f'{n} file(s) of split {s!r}' for s, n in sorted(counts.items()))}, but {len(unnamed)} "
            f"file(s) without a split name ({shown}{' ...' if len(unnamed) > 6 else ''}). "
            "Assign them with --split NAME=PATH (e.g. --split train=FILE), or import them separately"
        )
    if len(named) <= 1:  # one split: import it whole under the name asked for, its own, or the default
        own = next(iter(named), None)
        if splits_given and len(names) > 1:
            if own in names:
                names = [own]
            else:
                raise LayoutError(
                    f"{source_path} holds one {'unnamed split' if own is None else f'split, {own!r},'}; --split gives "
                    f"{len(names)} names ({', '.join(names)}): give one --split NAME to name it"
                )
        if splits_given:
            split, how = names[0], f"{names[0]!r}, set by --split"
        elif own is not None:
            split, how = own, f"{own!r}, from the file names"
        else:
            split, how = UNNAMED_SPLIT, f"one unnamed split, imported as {UNNAMED_SPLIT!r} (name it with --split NAME)"
        return Layout([SourceFile(p, split, kind) for p, kind, _ in scanned], how)
    selected = [SourceFile(p, s, kind) for p, kind, s in scanned if s in names]  # type: ignore[arg-type]
    ignored = Counter(s for _, _, s in scanned if s not in names)
    if not selected:
        raise LayoutError(
            f"{source_path}: none of the splits {', '.join(names)} found; the dataset has "
            f"{', '.join(f'{s} ({n} file(s))' for s, n in sorted(Counter(s for _, _, s in scanned).items()))}. "
            "Choose with --split NAME (repeatable)"
        )
    how = f"{', '.join(sorted({f.split for f in selected}))}, from the dataset layout"
    return Layout(selected, how, dict(sorted(ignored.items())))  # type: ignore[arg-type]
