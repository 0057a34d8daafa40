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
    """Collects a run's facts; :meth:`write` saves them atomically under ``runs/``."""

    def __init__(self, workspace: Workspace | None, stage: str, config: dict[str, Any], seed: int | None = None):
        self.workspace = workspace
        self.started = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.started))
        self.run_id = f"{stamp}-{stage}-{secrets.token_hex(3)}"
        self.data: dict[str, Any] = {
            "run_id": self.run_id,
            "stage": stage,
            "status": "running",
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

    def input(self, name: str, path: str | Path, digest: str | None = None) -> None:
        path = Path(path)
        self.data["inputs"][name] = {"path": str(path), "digest": digest or file_digest(path), "bytes": path.stat().st_size}

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

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.data["timings_s"][name] = round(self.data["timings_s"].get(name, 0.0) + time.perf_counter() - t0, 4)

    @property
    def path(self) -> Path | None:
        return None if self.workspace is None else self.workspace.folder("runs") / f"{self.run_id}.json"

    def write(self, status: str = "completed") -> Path | None:
        self.data["status"] = status
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["timings_s"]["total"] = round(time.time() - self.started, 4)
        if self.path is None:
            return None
        return atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def read_manifests(workspace: Workspace) -> list[dict[str, Any]]:
    """All manifests of a workspace, newest first.

    A file that is not a JSON object (truncated, hand-edited, another tool's) is kept in
    the list as ``{"status": "unreadable", "error": ..., "path": ...}`` so that readers
    show it instead of hiding it or failing on it.
    """
    out = []
    for path in sorted(workspace.folder("runs").glob("*.json"), reverse=True):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # JSON or UTF-8 errors, unreadable file
            record = {"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(record, dict):
            record = {"status": "unreadable", "error": f"expected a JSON object, found {type(record).__name__}"}
        out.append(record | {"path": str(path)})
    return out
