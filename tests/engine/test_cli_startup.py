"""Commands that do not compute start without the heavy stacks (issue 13).

Each batch runs in a FRESH interpreter: it calls ``fmb_engine.cli.main.main`` for each
command in turn and, after each one, reports which of the forbidden modules are in
``sys.modules``. A batch shares one forbidden list, so a module is blamed on the first
command that imported it. What a command genuinely needs is allowed and said here:
``data info|index`` read the HDF5 survey (h5py, and pandas for its table); ``evaluate``
computes AUROC/AP with scikit-learn (and so scipy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmb_engine.jobs.registry import JobRecord, RunRecord, open_registry
from fmb_engine.jobs.states import State
from fmb_engine.triage.labels import LabelStore
from fmb_engine.workspace import Workspace

#: Never imported by a command that does not compute.
HEAVY = ("torch", "sklearn", "nflows", "umap", "matplotlib", "shap", "scipy")
#: Also not needed by the commands that read no survey or score table.
HEAVY_AND_TABLES = (*HEAVY, "pandas", "h5py")

PROBE = r"""
import json, sys
from fmb_engine.cli.main import main

def walk(command, path):
    yield [*path, "--help"]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, [*path, name])

batch, forbidden = json.loads(sys.argv[1])
if batch == "help":
    import typer.main
    from fmb_engine.cli.main import app
    batch = list(walk(typer.main.get_command(app), []))
report = []
for argv in batch:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    report.append({"argv": argv, "code": code, "loaded": sorted(m for m in forbidden if m in sys.modules)})
print("\n" + json.dumps(report))
"""


def _probe(batch: list[list[str]] | str, forbidden: tuple[str, ...], cwd: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([batch, forbidden])], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_light(report: list[dict], codes: dict[str, int] | None = None) -> None:
    for entry in report:
        command = " ".join(entry["argv"])
        assert not entry["loaded"], f"`fmb-engine {command}` imported {', '.join(entry['loaded'])}"
        expected = (codes or {}).get(command, 0)
        assert entry["code"] == expected, f"`fmb-engine {command}` exited {entry['code']}, expected {expected}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, small_survey) -> Path:
    """A workspace with the small mock survey, one finished run in the job registry and a few labels."""
    ws = Workspace.init(tmp_path_factory.mktemp("startup") / "ws")
    shutil.copy(small_survey, ws.folder("survey") / "mock.h5")
    now = time.time()
    with open_registry(ws) as reg:
        run = RunRecord("20260101T000000-embed.pca-abc123", "embed.pca", "local", str(ws.folder("jobs") / "r1"),
                        created=now, n_tasks=1)
        reg.add_run(run, [JobRecord("", "1234", State.COMPLETED, now, None, 0, started=now, ended=now + 5)])
    with LabelStore.for_workspace(ws, user="ana") as store:
        store.set_label("a", "lens")
    return ws.root


def test_help_of_every_group_and_command_is_light(tiny):
    report = _probe("help", HEAVY_AND_TABLES, tiny)
    assert len(report) > 40  # the whole tree: top level, every group, every command
    _assert_light(report)


def test_commands_that_read_no_table_are_light(tiny, tmp_path):
    batch = [
        ["init", str(tmp_path / "other")],
        ["config", "show"],
        ["config", "show", "detect"],
        ["config", "template", "embed.astroclip"],
        ["config", "validate", "fmb.yaml"],
        ["jobs", "list"],
        ["jobs", "list", "--stage", "embed.pca"],
        ["jobs", "show", "20260101T000000-embed.pca-abc123"],
        ["models", "list"],
        ["triage", "summary"],
        ["triage", "export", str(tmp_path / "labels.csv")],
    ]
    _assert_light(_probe(batch, HEAVY_AND_TABLES, tiny))


def test_survey_readers_are_light(tiny, tmp_path):
    _assert_light(_probe([["data", "info"], ["data", "index", "--output", str(tmp_path / "index.csv")]], HEAVY, tiny))


def test_evaluate_imports_no_model_stack(tiny):
    """Without scores it stops at reading the systems table: the same imports as a full run's start."""
    forbidden = tuple(m for m in HEAVY if m not in ("sklearn", "scipy"))
    _assert_light(_probe([["evaluate"]], forbidden, tiny), codes={"evaluate": 1})


def test_the_light_tables_agree_with_the_implementations():
    """The CLI reads embedder and retrain-task help from tables; they must say what the classes say."""
    from fmb_engine.embed import base
    from fmb_engine.embed.catalog import EMBEDDERS
    from fmb_engine.retrain.config import config_model
    from fmb_engine.retrain.tasks import TASKS

    for name, info in EMBEDDERS.items():
        cls = base.get(name)
        assert cls.name == name and info.summary == (cls.__doc__ or "").strip().splitlines()[0]
    for task, task_info in TASKS.items():
        assert task_info.summary == (config_model(task).__doc__ or "").strip().splitlines()[0]
