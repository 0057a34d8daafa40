"""The run of a stage: its manifest from start to end state, and what every stage returns.

Every stage (data mock/import, embed, retrain, detect, evaluate, analyze, figures) runs its
body inside :func:`stage_run`, which opens the run's :class:`~fmb_engine.manifest.RunManifest`
and writes it once, when the body ends, with one of three end states (docs/formats.md, run
manifest): ``completed``; ``failed`` with the exception's type and message; ``interrupted``
(Ctrl-C, SIGTERM — the CLI turns it into KeyboardInterrupt — or a job's SystemExit). The
rule is written here once so that no stage records failure its own way.

A top-level module rather than a package: three small things (the life cycle, the result
type, the config record) that every stage package imports, and that import nothing heavy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmb_engine.errors import BusyError
from fmb_engine.manifest import RunManifest

if TYPE_CHECKING:
    from fmb_engine.config import Resolved
    from fmb_engine.workspace import Workspace

#: Exceptions that stop a run from outside rather than fail it.
INTERRUPTIONS = (KeyboardInterrupt, SystemExit)


@dataclass
class StageResult:
    """What a stage wrote (name -> path), its manifest (None without a workspace) and a summary for the CLI."""

    outputs: dict[str, Path]
    manifest: Path | None
    summary: dict


def config_record(resolved: Resolved) -> dict[str, Any]:
    """The manifest's ``config``: the effective values and the layer each came from."""
    return {"values": resolved.values.model_dump(mode="json"), "sources": resolved.sources}


def end_state(exc: BaseException | None) -> str:
    """The manifest status of a run that ended with ``exc`` (None: it ended normally)."""
    if exc is None:
        return "completed"
    return "interrupted" if isinstance(exc, INTERRUPTIONS) else "failed"


@contextlib.contextmanager
def stage_run(ws: Workspace | None, stage: str, config: dict[str, Any], seed: int | None = None) -> Iterator[RunManifest]:
    """Open the manifest of one run of ``stage``; write it with the run's end state when the block ends.

    A BusyError leaves no manifest: another run holds the outputs, and this one wrote nothing.
    When the run already failed, a manifest that cannot be written (a full disk) must not hide
    the error that ended it, so that OSError is dropped; on success it is raised.
    """
    manifest = RunManifest(ws, stage, config, seed=seed)
    try:
        yield manifest
    except BusyError:
        raise
    except BaseException as exc:
        with contextlib.suppress(OSError):
            manifest.finish(end_state(exc), exc)
        raise
    manifest.finish(end_state(None))
