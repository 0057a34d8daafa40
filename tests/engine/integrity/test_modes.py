"""Group workspaces: every file and folder any stage makes follows one rule (README "Group workspaces")."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _fmb(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], capture_output=True, text=True,
                          env=env, preexec_fn=lambda: os.umask(0o022))  # a usual umask must not decide
    assert proc.returncode == 0, f"fmb-engine {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def _modes(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    folders, files = {}, {}
    for here, dirs, names in os.walk(root):
        for d in dirs:
            folders[str(Path(here, d).relative_to(root))] = stat.S_IMODE(os.lstat(Path(here, d)).st_mode)
        for n in names:
            path = Path(here, n)
            if not path.is_symlink():
                files[str(path.relative_to(root))] = stat.S_IMODE(os.lstat(path).st_mode)
    return folders, files


def test_every_file_of_a_shared_workspace_follows_the_group_rule(tmp_path):
    """The private rule (0640/0750) is the same code with the other pair (tests/engine/integrity/test_core.py)."""
    from fmb_engine.triage.labels import open_labels
    from fmb_engine.workspace import Workspace

    ws = tmp_path / "ws"
    _fmb("init", str(ws), "--shared")
    task = tmp_path / "fast.yaml"
    task.write_text("detect:\n  epochs: 2\n  iforest_trees: 20\n  top_k: 20\n")
    w = ("-w", str(ws))
    _fmb("data", "mock", "-n", "200", "--image-size", "16", *w)
    _fmb("embed", "pca", *w)
    _fmb("detect", "all", "-c", str(task), *w)
    _fmb("analyze", "rankings", *w)
    _fmb("figures", "outlier-grid", "--system", "pca/fused/fisher", "--top-k", "4", *w)
    _fmb("jobs", "selftest", "-x", "local", "-w", str(ws))
    store = open_labels(Workspace(ws), user="ana")
    store.set_label("mock42-0000001", "interesting")
    store.close()
    folders, files = _modes(ws)
    dir_mode, file_mode = 0o2770, 0o660
    assert {k: oct(v) for k, v in folders.items() if v != dir_mode} == {}
    assert {k: oct(v) for k, v in files.items() if v != file_mode} == {}
    assert len(files) > 30  # stores, manifests, scores, analyses, job files, labels, figures
