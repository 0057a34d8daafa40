"""The detect manifests of a test workspace, newest last.

By write time, not by name: a manifest's name starts with its start time to the second, so two quick
runs in the same second (a refused one, then a good one) would sort by their random suffix.
"""

import json

from fmb_engine.workspace import Workspace


def detect_manifests(ws: Workspace) -> list[dict]:
    paths = sorted(ws.root.glob("runs/*detect*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(p.read_text()) for p in paths]
