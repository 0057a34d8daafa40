"""Publishing a stage's outputs as one set: written aside, swapped in together.

Why: a stage writes several files that belong together (the score tables and the
systems table built from them; the matrices of one rankings analysis). Written in
place one by one, a run killed half-way leaves new files beside old ones, and a
reader then mixes two runs. Here a run writes every output into a hidden staging
folder beside the published files (``<root>/.staging-<name>-<pid>/``, same file
system). Nothing a reader sees changes until :meth:`StagedSet.publish`, which moves
each staged file over its published name with ``os.replace`` (atomic per file) and
publishes the files named ``last`` after every other one. A run that fails or is
killed before that leaves the published set untouched; its staging folder is
removed by the next run of the stage (:func:`clean`, under the stage's lock).

The short window inside ``publish`` itself (a kill between two renames) is covered
by the lineage records: the file published last records the digests of the others,
and readers check them before use (:mod:`fmb_engine.lineage`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from fmb_engine.workspace import make_dirs

STAGING_PREFIX = ".staging-"


def clean(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders that runs killed before publishing left in ``root``; returns them."""
    root = Path(root)
    left = sorted(p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir()) if root.is_dir() else []
    for folder in left:
        shutil.rmtree(folder, ignore_errors=True)
    return left


class StagedSet:
    """The outputs of one run under ``root``, staged until :meth:`publish`.

    ``path(final)`` is where to write the new version of ``final``; ``read_path(final)``
    is what a later step of the same run reads (its own new version when it wrote one,
    else the published file); ``remove(final)`` deletes a published file at publication.
    """

    def __init__(self, root: str | os.PathLike[str], name: str):
        self.root = Path(root)
        self.stage = self.root / f"{STAGING_PREFIX}{name}-{os.getpid()}"
        self._files: dict[Path, Path] = {}
        self._removed: set[Path] = set()

    def _staged(self, final: Path) -> Path:
        try:
            rel = Path(final).relative_to(self.root)
        except ValueError:
            raise ValueError(f"{final} is not under the staged folder {self.root}") from None
        return self.stage / rel

    def path(self, final: str | os.PathLike[str]) -> Path:
        """The staged path to write the new ``final`` to (its folder exists)."""
        final = Path(final)
        staged = self._staged(final)
        make_dirs(staged.parent)
        self._files[final] = staged
        self._removed.discard(final)
        return staged

    def read_path(self, final: str | os.PathLike[str]) -> Path:
        final = Path(final)
        return self._files.get(final, final)

    def exists(self, final: str | os.PathLike[str]) -> bool:
        final = Path(final)
        if final in self._files:
            return self._files[final].is_file()
        return final not in self._removed and final.is_file()

    def remove(self, final: str | os.PathLike[str]) -> None:
        final = Path(final)
        self._files.pop(final, None)
        self._removed.add(final)

    @property
    def written(self) -> list[Path]:
        return list(self._files)

    def publish(self, last: tuple[Path, ...] = ()) -> list[Path]:
        """Move every staged file over its published name, ``last`` after all others; returns them."""
        ends = [f for f in (Path(p) for p in last) if f in self._files]
        firsts = [f for f in self._files if f not in ends]
        for final in firsts:
            self._move(final)
        for final in sorted(self._removed):
            final.unlink(missing_ok=True)
        for final in ends:
            self._move(final)
        self.discard()
        return firsts + ends

    def _move(self, final: Path) -> None:
        make_dirs(final.parent)
        os.replace(self._files[final], final)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.stage)

    def __enter__(self) -> StagedSet:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()  # after publish the folder is empty; after a failure it holds the unpublished run
