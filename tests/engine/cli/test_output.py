"""`--format table|json|csv`: every listing's JSON parses and has its documented fields (docs/cli.md), its CSV
has a header row, stdout holds nothing else; off a terminal tables are whole and uncoloured, NO_COLOR is honoured."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmb_engine.cli.main import app
from fmb_engine.cli.output import Format, csv_text, json_text
from fmb_engine.jobs import selftest, submission
from fmb_engine.triage.labels import LabelStore

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> tuple[str, str]:
    """(stdout, stderr) of a command that must succeed."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.stdout, result.stderr


def as_json(*args: str):
    out, _ = run(*args, "--format", "json")
    return json.loads(out)


def as_csv(*args: str) -> list[dict[str, str]]:
    out, _ = run(*args, "--format", "csv")
    return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture(scope="module")
def scored(analysed, tmp_path_factory) -> Path:
    """A writable copy of the scored workspace (the stage commands write their outputs)."""
    ws, _ = analysed
    return Path(shutil.copytree(ws.root, tmp_path_factory.mktemp("scored") / "ws"))


def test_values_scripts_read_plainly():
    assert json.loads(json_text({"a": float("nan"), "b": [1, 2.5, None, float("inf")], "c": Path("/x")})) == \
        {"a": None, "b": [1, 2.5, None, None], "c": "/x"}
    rows = list(csv.DictReader(io.StringIO(csv_text([{"a": math.nan, "b": True, "c": {"k": 1}}, {"a": 2, "d": "x,y"}]))))
    assert rows == [{"a": "", "b": "true", "c": '{"k": 1}', "d": ""}, {"a": "2", "b": "", "c": "", "d": "x,y"}]


@pytest.fixture
def jobs_workspace(workspace, tmp_path):
    done = submission.submit(workspace, "selftest", selftest.write_shard, str(tmp_path / "c"), 0, 1, executor="debug")
    failed = submission.submit(workspace, "detect", selftest.fail, "json boom", executor="debug")
    return workspace, done, failed


def test_jobs_list_show_and_executors(jobs_workspace):
    ws, done, failed = jobs_workspace
    w = ("-w", ws.root, "--no-refresh")
    runs = as_json("jobs", "list", *w)
    assert [r["run"] for r in runs] == [failed.run_id, done.run_id]  # newest first
    assert runs[0]["state"] == "FAILED" and runs[0]["tasks"] == {"FAILED": 1} and runs[0]["job_ids"] == failed.job_ids
    assert isinstance(runs[1]["submitted"], float) and isinstance(runs[1]["elapsed_s"], int)
    rows = as_csv("jobs", "list", *w)
    assert [r["state"] for r in rows] == ["FAILED", "COMPLETED"] and json.loads(rows[0]["tasks"]) == {"FAILED": 1}

    shown = as_json("jobs", "show", failed.run_id, *w)
    assert shown["run"] == failed.run_id and shown["stage"] == "detect" and shown["executor"] == "debug"
    [task] = shown["tasks"]
    assert task["task"] == 0 and task["state"] == "FAILED" and "json boom" in task["detail"]
    [row] = as_csv("jobs", "show", failed.run_id, *w)
    assert row["run"] == failed.run_id and row["job_id"] == failed.job_ids[0] and row["state"] == "FAILED"

    found = as_json("jobs", "executors", "-w", ws.root)
    assert {e["executor"] for e in found["executors"]} == {"local", "debug", "slurm"}
    assert found["default"]["executor"] in ("local", "slurm") and found["default"]["error"] is None
    assert {r["executor"] for r in as_csv("jobs", "executors", "-w", ws.root)} == {"local", "debug", "slurm"}


def test_jobs_list_without_runs(workspace):
    assert as_json("jobs", "list", "-w", workspace.root) == []
    out, _ = run("jobs", "list", "-w", workspace.root, "--format", "csv")
    assert out.splitlines()[0] == "run,stage,executor,state,tasks,job_ids,submitted,elapsed_s"


def test_data_info_and_show(analysed, tmp_path):
    ws, survey = analysed
    info = as_json("data", "info", "-w", ws.root)
    assert info["objects"] == 120 and info["path"] == str(survey) and info["splits"]["train"] > 0
    assert info["bands"] and isinstance(info["wavelength"]["bins"], int)
    [row] = as_csv("data", "info", "-w", ws.root)
    assert row["objects"] == "120" and json.loads(row["bands"]) == info["bands"]

    png = tmp_path / "o.png"
    out, err = run("data", "show", "mock42-0000007", "-w", ws.root, "-o", png, "--format", "json")
    obj = json.loads(out)  # the "quick look: PATH" note went to stderr
    assert obj["object_id"] == "mock42-0000007" and obj["row"] == 7 and isinstance(obj["redshift"], float)
    assert str(png) in err and png.is_file()
    [row] = as_csv("data", "show", "mock42-0000007", "-w", ws.root, "-o", png)
    assert row["object_id"] == "mock42-0000007"


def test_models_list_and_check():
    models = {m["name"]: m for m in as_json("models", "list")}
    assert {"pca", "cca"} <= set(models)
    assert models["cca"]["aligned"] is True and models["pca"]["weights"] == "not needed"
    assert models["pca"]["modalities"] == ["image", "spectrum", "joint"]
    assert {r["name"] for r in as_csv("models", "list")} == set(models)

    report = as_json("models", "check", "pca", "--no-load")
    assert report["environment"]["torch"] and [m["name"] for m in report["models"]] == ["pca"]
    assert report["models"][0]["runnable"] is True
    [row] = as_csv("models", "check", "pca", "--no-load")
    assert row["name"] == "pca" and row["runnable"] == "true"


def test_triage_summary(workspace):
    with LabelStore.for_workspace(workspace, user="ana") as store:
        store.set_label("a", "lens")
        store.set_label("b", "lens")
        store.set_label("c", "merger")
    summary = as_json("triage", "summary", "-w", workspace.root)
    assert {r["label"]: r["objects"] for r in summary["labels"]} == {"lens": 2, "merger": 1}
    assert summary["changes"] == 3 and summary["users"] == ["ana"] and summary["sessions"] == 1
    assert {r["label"]: r["objects"] for r in as_csv("triage", "summary", "-w", workspace.root)} == {"lens": "2", "merger": "1"}


def test_config_show(workspace):
    (workspace.root / "fmb.yaml").write_text("mock:\n  objects: 321\n")
    rows = as_json("config", "show", "mock", "-w", workspace.root)
    objects = next(r for r in rows if r["key"] == "objects")
    assert objects == {"section": "mock", "key": "objects", "value": 321, "from": str(workspace.root / "fmb.yaml")}
    assert {r["section"] for r in as_json("config", "show", "-w", workspace.root)} >= {"general", "mock", "detect"}
    table = as_csv("config", "show", "mock", "-w", workspace.root)
    assert {"section", "key", "value", "from"} == set(table[0]) and {"objects", "seed"} <= {r["key"] for r in table}


def test_evaluate(scored):
    report = as_json("evaluate", "-w", scored)
    systems = report["systems"]
    assert systems and {"system", "auroc", "ap", "p@100"} <= set(systems[0])
    assert all(s["auroc"] is None or 0 <= s["auroc"] <= 1 for s in systems)
    assert report["report"].endswith(".md") and isinstance(report["warnings"], list)
    rows = as_csv("evaluate", "-w", scored)
    assert [r["system"] for r in rows] == [s["system"] for s in systems]


def test_analyze_rankings_regression_neighbor_ranks(scored):
    w = ("-w", scored)
    systems = ("--system", "cca/image/flow", "--system", "pca/image/flow", "--system", "cca/fused/fisher")
    result = as_json("analyze", "rankings", *w, *systems)
    assert result["systems"] == ["cca/image/flow", "pca/image/flow", "cca/fused/fisher"] and result["objects"] == 120
    assert len(result["pairs"]) == 3 and all(-1 <= p["spearman"] <= 1 for p in result["pairs"])
    assert Path(result["outputs"]["spearman"]).is_file() and Path(result["manifest"]).is_file()
    pairs = as_csv("analyze", "rankings", *w, *systems)
    assert [(p["system_a"], p["system_b"]) for p in pairs] == [(p["system_a"], p["system_b"]) for p in result["pairs"]]

    probe = ("analyze", "regression", *w, "--linear-only", "--bootstrap", "5", "-m", "pca", "--target", "redshift")
    res = as_json(*probe)
    assert res["results"] and {"target", "model", "modality", "r2_ridge"} <= set(res["results"][0])
    assert {r["model"] for r in res["results"]} == {"pca"} and isinstance(res["results"][0]["r2_ridge"], float)
    assert {r["target"] for r in as_csv(*probe)} == {"redshift"}

    run("analyze", "similarity", *w, "-m", "pca")
    ranks = as_json("analyze", "neighbor-ranks", *w)
    assert ranks["summary"] and Path(ranks["manifest"]).is_file()
    assert len(as_csv("analyze", "neighbor-ranks", *w)) == len(ranks["summary"])


def test_detect_result_and_submission(scored):
    """`detect` prints its result (systems, skipped ones with the reason, files) and a submission its run."""
    result = as_json("detect", "fuse", "-w", scored)
    assert "cca/fused/fisher" in result["systems"] and result["objects"] == 120
    assert isinstance(result["skipped"], list) and isinstance(result["warnings"], list)
    assert Path(result["outputs"]["systems"]).is_file() and Path(result["manifest"]).is_file()
    rows = as_csv("detect", "fuse", "-w", scored)
    assert [r["system"] for r in rows if r["scored"] == "true"] == result["systems"]
    assert {"system", "scored", "reason"} == set(rows[0])
    sub = as_json("detect", "fuse", "-w", scored, "--executor", "debug")
    assert sub["stage"].startswith("detect") and sub["executor"] == "debug" and sub["job_ids"]
    assert sub["run"] in run("jobs", "list", "-w", scored)[0]


def test_demo_summary(tmp_path, capsys):
    from fmb_engine.cli.demo import print_summary

    outputs = [("workspace", tmp_path), ("mock survey", tmp_path / "survey" / "mock.h5")]
    best = [{"system": "cca/fused/fisher", "auroc": 0.91}, {"system": "pca/image/flow", "auroc": float("nan")}]
    print_summary(Format.json, tmp_path, outputs, best)
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"workspace": str(tmp_path), "best": [best[0], {"system": "pca/image/flow", "auroc": None}],
                     "outputs": [{"what": "workspace", "where": str(tmp_path)},
                                 {"what": "mock survey", "where": str(tmp_path / "survey" / "mock.h5")}]}
    print_summary(Format.csv, tmp_path, outputs, best)
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out))) == [
        {"what": "workspace", "where": str(tmp_path)}, {"what": "mock survey", "where": str(tmp_path / "survey" / "mock.h5")}]
    print_summary(Format.table, tmp_path, outputs, best)
    shown = capsys.readouterr().out
    assert "demo outputs" in shown and str(tmp_path / "survey" / "mock.h5") in shown
    assert "(AUROC): cca/fused/fisher 0.910, pca/image/flow nan" in shown


# -- off a terminal: whole and uncoloured; NO_COLOR -----------------------------------------------------------------

#: SGR parameters that set a colour (foreground, background, bright, 256/true colour).
_COLOUR = re.compile(r"\x1b\[([0-9;]*)m")


def _colours(text: str) -> set[str]:
    found = set()
    for params in _COLOUR.findall(text):
        for p in filter(None, params.split(";")):
            if 30 <= int(p) <= 49 or 90 <= int(p) <= 107:
                found.add(p)
    return found


def _jobs_list(ws: Path, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("FMB_WORKSPACE", "NO_COLOR", "FORCE_COLOR")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", "jobs", "list", "--no-refresh", "-w", str(ws)],
                          capture_output=True, text=True, env=base | env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_piped_tables_are_whole_and_uncoloured_and_no_color_is_honoured(jobs_workspace):
    ws, done, failed = jobs_workspace
    piped = _jobs_list(ws.root, COLUMNS="40")  # a narrow terminal setting must not cut a piped table
    assert "COMPLETED" in piped and "FAILED" in piped and done.run_id in piped and "…" not in piped
    assert "\x1b[" not in piped
    forced = _jobs_list(ws.root, FORCE_COLOR="1")
    assert _colours(forced), "FORCE_COLOR should colour the states (else the NO_COLOR check proves nothing)"
    assert not _colours(_jobs_list(ws.root, FORCE_COLOR="1", NO_COLOR="1"))
