"""The CLI end to end, as a user runs it (real processes, real exit codes)."""

import os
import subprocess
import sys

import pytest


def fmb(*args, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"fmb-engine {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_init_mock_info_show_index(tmp_path):
    fmb("init", "ws", cwd=tmp_path)
    ws = tmp_path / "ws"
    out = fmb("data", "mock", "--objects", "60", "--image-size", "16", cwd=ws).stdout
    assert "objects" in out and "60" in out and (ws / "survey" / "mock.h5").is_file()
    info = fmb("data", "info", cwd=ws / "runs").stdout  # found from a sub-folder
    assert "test: 12, train: 48" in info and "7781 bins" in info
    shown = fmb("data", "show", "mock42-0000007", cwd=ws).stdout
    assert "redshift" in shown and (ws / "figures" / "object_mock42-0000007.png").is_file()
    fmb("data", "index", cwd=ws)
    lines = (ws / "survey" / "mock.index.csv").read_text().splitlines()
    assert lines[0] == "object_id,split,index,row" and len(lines) == 61
    assert list((ws / "runs").glob("*-data.mock-*.json"))


def test_config_show_reports_the_layer_of_each_value(tmp_path):
    fmb("init", "ws", cwd=tmp_path)
    ws = tmp_path / "ws"
    (ws / "fmb.yaml").write_text("mock:\n  objects: 321\n")
    (tmp_path / "task.yaml").write_text("mock:\n  seed: 9\n")
    out = fmb("config", "show", "mock", "--config", str(tmp_path / "task.yaml"), cwd=ws).stdout
    assert "321" in out and str(ws / "fmb.yaml") in out
    assert "9" in out and str(tmp_path / "task.yaml") in out
    assert "default" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "mock", "--objects", "3"], "mock.objects = 3 is invalid"),
        (["data", "info"], "survey file not found"),
        (["data", "show", "x", "--survey", "nope"], "survey file not found"),
    ],
)
def test_user_errors_exit_nonzero_with_one_clear_line(tmp_path, args, message):
    fmb("init", "ws", cwd=tmp_path)
    proc = fmb(*args, cwd=tmp_path / "ws", check=False)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bad_workspace_config_is_named(tmp_path):
    fmb("init", "ws", cwd=tmp_path)
    (tmp_path / "ws" / "fmb.yaml").write_text("mock:\n  objets: 10\n")
    proc = fmb("data", "mock", cwd=tmp_path / "ws", check=False)
    assert proc.returncode == 1 and "fmb.yaml: unknown key mock.objets" in proc.stderr and "Did you mean 'objects'" in proc.stderr


def test_no_workspace_is_a_clear_error(tmp_path):
    proc = fmb("data", "info", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "no workspace found" in proc.stderr


def test_output_off_a_terminal_is_not_wrapped(tmp_path):
    """A script reads whole lines: a long path is never broken across lines, whatever COLUMNS says."""
    deep = tmp_path / ("a" * 120)
    env = {**os.environ, "COLUMNS": "40"}
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", "init", str(deep)],
                          capture_output=True, text=True, env=env, check=True)
    assert f"workspace ready: {deep}\n" in proc.stdout
