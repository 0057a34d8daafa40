"""Run manifests: what a stage ran with and what it wrote.

Every stage writes one JSON file to the workspace's ``runs/`` folder: the config
actually used (with the layer of each value), package versions, seed, input
digests, counts (including dropped rows per reason), timings and outputs. Same
inputs + seed -> same outputs, and the manifest is how one checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import secrets
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from fmb_engine import __version__
from fmb_engine.workspace import Workspace, atomic_write_text

#: Distributions whose versions go into every manifest (when installed).
TRACKED = ("numpy", "pandas", "h5py", "scikit-learn", "torch", "nflows", "pydantic", "pyarrow", "umap-learn", "astropt", "polymathic-aion")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "fmb": __version__}
    for dist in TRACKED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in ``chunk``-byte blocks (any size: configs, surveys, embedding files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class RunManifest:
    """Collects a run's facts; :meth:`finish` saves them atomically under ``runs/``.

    Stages get one from :func:`fmb_engine.stage_run.stage_run`, which finishes it with the
    run's end state; they record through the methods below, never into :attr:`data`.
    """

    def __init__(self, workspace: Workspace | None, stage: str, config: dict[str, Any], seed: int | None = None):
        self.workspace = workspace
        self.started = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.started))
        self.run_id = f"{stamp}-{stage}-{secrets.token_hex(3)}"
        self.data: dict[str, Any] = {
            "run_id": self.run_id,
            "stage": stage,
            "status": "running",
            "error": None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "command": sys.argv,
            "seed": seed,
            "config": config,
            "versions": versions(),
            "inputs": {},
            "counts": {},
            "dropped": {},
            "timings_s": {},
            "outputs": {},
            "warnings": [],
        }

    def input(self, name: str, path: str | Path, digest: str | None = None) -> str:
        """An input file: path, digest (sha256 unless the caller has a cheaper identity) and size; returns the digest."""
        path = Path(path)
        digest = digest or file_digest(path)
        self.data["inputs"][name] = {"path": str(path), "digest": digest, "bytes": path.stat().st_size}
        return digest

    def input_digest(self, name: str, digest: str) -> None:
        """An input known by its digest alone (``survey_digest``, ``weights_digest``)."""
        self.data["inputs"][name] = digest

    def count(self, name: str, value: Any) -> None:
        self.data["counts"][name] = value

    def dropped(self, reason: str, n: int = 1) -> None:
        self.data["dropped"][reason] = self.data["dropped"].get(reason, 0) + n

    def output(self, name: str, path: str | Path) -> None:
        self.data["outputs"][name] = str(path)

    def warn(self, message: str) -> None:
        self.data["warnings"].append(message)

    def skip(self, system: str, reason: str) -> None:
        """A system the stage could not compute (the rest of the run went on)."""
        self.data.setdefault("skipped_systems", []).append({"system": system, "reason": reason})

    def record(self, key: str, value: Any) -> None:
        """A stage's own top-level field (``run_key``, ``bad_files``, ``stopped_early``; docs/formats.md).

        The fields every manifest has are written by their own methods; naming one here is a bug."""
        if key in COMMON_FIELDS:
            raise ValueError(f"{key!r} is a field every manifest has; record it with its own method")
        self.data[key] = value

    def setting(self, name: str, value: Any) -> None:
        """A config value the stage settled while it ran (a default that depends on the data)."""
        self.data["config"].setdefault("values", {})[name] = value

    def timing(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the timing ``name`` (what :meth:`phase` measures around a block)."""
        self.data["timings_s"][name] = round(self.data["timings_s"].get(name, 0.0) + seconds, 4)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, time.perf_counter() - t0)

    @property
    def started_at(self) -> str:
        """The start time as the manifest writes it (local time with offset)."""
        return self.data["started"]

    @property
    def warnings(self) -> list[str]:
        return list(self.data["warnings"])

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list(self.data.get("skipped_systems", []))

    @property
    def path(self) -> Path | None:
        return None if self.workspace is None else self.workspace.folder("runs") / f"{self.run_id}.json"

    def finish(self, status: str, error: BaseException | None = None) -> Path | None:
        """Write the manifest with its end state (``completed``, ``failed``, ``interrupted``) and the
        exception that ended the run, if any; returns its path (None without a workspace)."""
        self.data["status"] = status
        self.data["error"] = None if error is None else {"type": type(error).__name__, "message": str(error)}
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["timings_s"]["total"] = round(time.time() - self.started, 4)
        if self.path is None:
            return None
        return atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


#: Fields every manifest has, each written by its own method of RunManifest.
COMMON_FIELDS = frozenset({"run_id", "stage", "status", "error", "started", "finished", "command", "seed", "config",
                           "versions", "inputs", "counts", "dropped", "timings_s", "outputs", "warnings",
                           "skipped_systems"})


def _started_then_written(path: Path) -> tuple[str, int]:
    """A manifest's order: its name's start time (to the second), then when it was last written, so two
    runs started in the same second are not ordered by their names' random suffixes."""
    try:
        written = path.stat().st_mtime_ns
    except OSError:  # removed meanwhile: read_manifests reports it as unreadable
        written = 0
    return path.name[:15], written


def read_manifests(workspace: Workspace) -> list[dict[str, Any]]:
    """All manifests of a workspace, newest first.

    A file that is not a JSON object (truncated, hand-edited, another tool's) is kept in
    the list as ``{"status": "unreadable", "error": ..., "path": ...}`` so that readers
    show it instead of hiding it or failing on it.
    """
    out = []
    for path in sorted(workspace.folder("runs").glob("*.json"), key=_started_then_written, reverse=True):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # JSON or UTF-8 errors, unreadable file
            record = {"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(record, dict):
            record = {"status": "unreadable", "error": f"expected a JSON object, found {type(record).__name__}"}
        out.append(record | {"path": str(path)})
    return out
