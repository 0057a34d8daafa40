"""Shell completion of values that live in the workspace: embedding runs, surveys, systems, object ids.

Each function is a Typer ``autocompletion`` callback: it reads only names from disk (a folder
listing, a parquet footer, one HDF5 dataset), is fast, and never raises: a missing or broken
workspace gives no suggestions rather than an error in the user's shell. The workspace is the
command's ``--workspace`` when already typed, else found as every command finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer


def _workspace(ctx: typer.Context):
    from fmb_engine.workspace import Workspace

    return Workspace.find(ctx.params.get("workspace"))


def _quiet(names: Callable[[typer.Context], list[str]]) -> Callable[[typer.Context, str], list[str]]:
    """A completion callback from ``names``: the names starting with what is typed, and [] on any error."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            return [n for n in names(ctx) if n.startswith(incomplete)]
        except Exception:  # noqa: BLE001 - completion must never break the user's shell
            return []

    complete.__name__ = complete.__qualname__ = f"complete_{names.__name__}"
    complete.__doc__ = names.__doc__
    return complete


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.h5"))


@_quiet
def embedding_runs(ctx: typer.Context) -> list[str]:
    """Embedding runs of the workspace: embeddings/<run>.h5."""
    return _stems(_workspace(ctx).folder("embeddings"))


@_quiet
def surveys(ctx: typer.Context) -> list[str]:
    """Surveys of the workspace: survey/<name>.h5."""
    return _stems(_workspace(ctx).folder("survey"))


@_quiet
def systems(ctx: typer.Context) -> list[str]:
    """Ranked systems (model/modality/method): the rank columns of scores/systems.parquet, read from its footer."""
    import pyarrow.parquet as pq

    from fmb_engine.rankings import RANK_PREFIX, SYSTEMS_FILE

    schema = pq.read_schema(_workspace(ctx).folder("scores") / SYSTEMS_FILE)
    return [name[len(RANK_PREFIX):] for name in schema.names if name.startswith(RANK_PREFIX)]


@_quiet
def object_ids(ctx: typer.Context) -> list[str]:
    """Object ids of the command's survey (--survey, else general.survey), from its object_id column only."""
    import h5py

    from fmb_engine.cli.common import survey_file

    path = survey_file(_workspace(ctx), ctx.params.get("config"), ctx.params.get("survey"))
    with h5py.File(path, "r") as f:
        return [i.decode() for i in f["objects/object_id"][:]]
