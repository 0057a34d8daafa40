"""Each class of error of the exit-code table (errors.EXIT_CODES, README "Exit codes") through the console entry
point: its code, its message on stderr, and nothing on stdout (a script reading stdout never mistakes an error for
a result).

130 (Ctrl-C) and 143 (SIGTERM) need a command caught while it writes: they are tested on `data mock` as a real
process group in tests/engine/integrity/test_survey_processes.py
(test_ctrl_c_and_sigterm_end_with_one_line_and_the_partial_resumes), stdout included.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fmb_engine.cli.main import main
from fmb_engine.errors import EXIT_CODES
from fmb_engine.workspace import Workspace
from tests.engine.integrity.test_core import _holder_script
from tests.faults import harness

MOCK = ("data", "mock", "-n", "60", "--image-size", "16")


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``fmb-engine ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # main() installs its own; put them back
    previous = signal.getsignal(signal.SIGTERM)

    def run(*args) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            signal.signal(signal.SIGTERM, previous)
        out, err = capsys.readouterr()
        return code, out, " ".join(err.split())

    return run


def test_success_is_0_with_the_result_on_stdout(cli, workspace):
    code, out, err = cli("config", "show", "mock", "-w", workspace.root, "--format", "json")
    assert code == 0 and '"objects"' in out and err == ""


@pytest.mark.parametrize("args, said", [
    (("data", "info", "--no-such-option"), "No such option: --no-such-option"),
    (("data", "nope"), "No such command 'nope'"),
    (("jobs", "list", "--format", "xml"), "'xml' is not one of"),
])
def test_usage_error_is_2(cli, workspace, args, said):
    code, out, err = cli(*args, "-w", workspace.root)
    assert (code, out) == (2, "") and said in err and "Traceback" not in err


def test_user_error_is_1(cli, workspace):
    code, out, err = cli("data", "info", "-w", workspace.root)
    assert (code, out) == (1, "") and err.startswith("error: survey file not found")


def test_busy_is_3(cli, workspace):
    target, ready = workspace.survey_path("mock"), workspace.root / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _holder_script(target, ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        code, out, err = cli(*MOCK, "-w", workspace.root)
    finally:
        holder.kill()
        holder.wait()
    assert (code, out) == (3, "") and f"busy: survey store survey/mock.h5 is being written by PID {holder.pid}" in err


def test_stale_input_is_4(cli, analysed, tmp_path):
    ws, _ = analysed
    copy = Path(shutil.copytree(ws.root, tmp_path / "ws"))
    table = copy / "scores" / "anomaly_scores_cca.csv"
    frame = pd.read_csv(table, dtype={"object_id": str})
    frame["neg_log_prob"] = frame["neg_log_prob"][::-1].to_numpy()  # another run's scores under the same name
    frame.to_csv(table, index=False)
    code, out, err = cli("evaluate", "-w", copy)
    assert (code, out) == (4, "") and "scores/anomaly_scores_cca.csv was rewritten" in err


def test_environment_is_5(cli, tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    if why := harness.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)):
        pytest.skip(f"cannot mount a tmpfs (needs root): {why}")
    try:
        ws = Workspace.init(point / "ws")
        if why := harness.mount("-o", "remount,ro", str(point)):
            pytest.skip(f"cannot remount the tmpfs read-only: {why}")
        code, out, err = cli(*MOCK, "-w", ws.root)
    finally:
        harness.unmount(point)
    assert (code, out) == (5, "") and err.startswith("error: cannot") and "read-only" in err


def test_every_code_of_the_table_is_tested():
    tested = {0, 1, 2, 3, 4, 5} | {130, 143}  # 130, 143: see this module's docstring
    assert set(EXIT_CODES) == tested
