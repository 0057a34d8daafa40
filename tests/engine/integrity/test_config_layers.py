"""Every config file layer is validated on its own, and an unreadable one is a clear error (issue 12).

A bad value in ``fmb.yaml`` or a ``--config`` file used to pass unnoticed when a
flag (or a higher file) overrode it; now the error names the file and the key.
A file that is not UTF-8 is refused with its name, exit code 1 and no traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmb_engine.config import layers_for, load
from fmb_engine.config.loader import CLI_ORIGIN, Layer, check_values, read_layer_file, resolve
from fmb_engine.errors import ConfigError
from fmb_engine.workspace import Workspace


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


def test_a_bad_fmb_yaml_value_hidden_by_a_flag_is_reported(ws):
    ws.config_file.write_text("mock:\n  objects: lots\n")
    with pytest.raises(ConfigError, match=r"fmb\.yaml: mock\.objects = 'lots' is invalid"):
        load("mock", ws, cli={"objects": 30})


def test_a_bad_config_file_value_hidden_by_a_flag_is_reported(ws, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("mock:\n  objects: 5\n  seed: 1\n")  # objects >= 20
    with pytest.raises(ConfigError, match=r"task\.yaml: mock\.objects = 5 is invalid: .*greater than or equal to 20"):
        load("mock", ws, task, cli={"objects": 30})


def test_a_bad_fmb_yaml_value_hidden_by_the_config_file_is_reported(ws, tmp_path):
    ws.config_file.write_text("mock:\n  anomaly_fraction: 2.0\n")
    task = tmp_path / "task.yaml"
    task.write_text("mock:\n  anomaly_fraction: 0.1\n")
    with pytest.raises(ConfigError, match=r"fmb\.yaml: mock\.anomaly_fraction = 2\.0 is invalid"):
        load("mock", ws, task)


def test_config_validate_and_show_check_every_section_of_the_file(ws):
    """Commands resolve only their own section; `config show` / `config validate` resolve every one."""
    ws.config_file.write_text("mock:\n  objects: lots\nimport:\n  batch_size: 8\n")
    assert load("import", ws).values.batch_size == 8
    proc = _cli("config", "show", cwd=ws.root)
    assert proc.returncode == 1 and "fmb.yaml: mock.objects = 'lots' is invalid" in " ".join((proc.stdout + proc.stderr).split())
    proc = _cli("config", "validate", "fmb.yaml", cwd=ws.root)
    assert proc.returncode == 1 and "fmb.yaml: mock.objects = 'lots' is invalid" in " ".join((proc.stdout + proc.stderr).split())


def test_reading_a_file_checks_its_structure_and_resolving_validates_its_values(ws):
    """Reading fmb.yaml checks names only; resolving a section validates that file's values,
    and says which layer overrides the bad one."""
    ws.config_file.write_text("mock:\n  objects: lots\n")
    layer = read_layer_file(ws.config_file)
    cli = Layer(CLI_ORIGIN, {"mock": {"objects": 30}})
    with pytest.raises(ConfigError, match=r"fmb\.yaml: mock\.objects = 'lots' is invalid.*overridden by command line"):
        resolve("mock", [layer, cli])


def test_valid_layers_and_cross_key_rules_are_unaffected(ws, tmp_path):
    ws.config_file.write_text("mock:\n  objects: 100\n  seed: 3\n")
    task = tmp_path / "task.yaml"
    task.write_text("mock:\n  objects: 200\n")
    resolved = load("mock", ws, task, cli={"objects": 300})
    assert resolved.values.objects == 300 and resolved.values.seed == 3
    assert resolved.sources["objects"] == CLI_ORIGIN and resolved.sources["seed"] == str(ws.config_file)
    check_values(Layer("x.yaml", {"mock": {}}), "mock")  # an empty section is fine
    assert len(layers_for(ws, task)) == 2


# ------------------------------------------------------------------------ through the CLI
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


@pytest.mark.parametrize("where, content, expected", [
    ("fmb.yaml", b"mock:\n  objects: lots\n", "fmb.yaml: mock.objects = 'lots' is invalid"),
    ("task.yaml", b"mock:\n  objects: 5\n", "task.yaml: mock.objects = 5 is invalid"),
    ("fmb.yaml", b"mock:\n  name: \"\xff\xfe\"\n", "fmb.yaml: not a UTF-8 text file"),
    ("task.yaml", b"\xff\xfe\x00m\x00o\x00c\x00k\x00:\n", "task.yaml: not a UTF-8 text file"),
])
def test_the_cli_refuses_a_bad_or_unreadable_file_even_when_a_flag_overrides_it(ws, where, content, expected):
    (ws.root / where).write_bytes(content)
    extra = ["--config", "task.yaml"] if where == "task.yaml" else []
    proc = _cli("data", "mock", "-n", "30", *extra, cwd=ws.root)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, output
    assert "Traceback" not in output and expected in output
    assert not list(ws.folder("survey").glob("*.h5"))  # nothing was written


def test_config_show_names_the_non_utf8_file(ws):
    ws.config_file.write_bytes(b"general:\n  survey: \xe9t\xe9\n")  # Latin-1
    proc = _cli("config", "show", "general", cwd=ws.root)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1 and "Traceback" not in output
    assert f"{ws.config_file}: not a UTF-8 text file" in output
