"""The executor-kind interface itself: names, availability, parameters, ignored settings, cancel, poll.

The end-to-end behaviour of each kind is in test_executors.py (local, debug),
test_slurm_parse.py (SLURM through fakes) and test_slurm_integration.py (a real SLURM).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from fmb_engine.errors import ConfigError
from fmb_engine.jobs import JobsError, executors, registry
from fmb_engine.jobs.config import ExecutorName, JobsConfig
from fmb_engine.jobs.executors import DEBUG, KINDS, LOCAL, SLURM
from fmb_engine.jobs.outcome import outcome_path, write_outcome
from fmb_engine.jobs.registry import JobRecord, borrow_or_open, open_registry
from fmb_engine.jobs.states import State

#: One valid non-default value for every ``jobs`` setting an executor may ignore.
SAMPLE = {
    "partition": "gpu", "account": "a1", "qos": "high", "constraint": "a100", "cpus_per_task": 4, "mem_gb": 8.0,
    "array_parallelism": 2, "setup": ["module load cuda"], "signal_delay_s": 30, "sbatch_extra": {"mail-type": "END"},
    "timeout_min": 5, "gpus_per_node": 1, "python": "/usr/bin/python3", "max_num_timeout": 1,
}


def _path_with(tmp_path: Path, monkeypatch, commands: dict[str, str]) -> None:
    """PATH = python's folder plus fake commands (name -> shell body); no real SLURM."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name, body in commands.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}")


ALL_SLURM = ("sbatch", "srun", "squeue", "sacct", "scancel", "sinfo")


# --- names -------------------------------------------------------------------------------------


def test_kinds_are_the_names_the_config_accepts():
    assert executors.EXECUTORS == ("local", "slurm", "debug") == tuple(KINDS)
    assert set(KINDS) == set(get_args(ExecutorName))
    assert set(get_args(JobsConfig.model_fields["executor"].annotation)) == {*KINDS, "auto"}
    assert all(kind.name == name for name, kind in KINDS.items())
    (checked,) = re.findall(r"executor\s+TEXT NOT NULL CHECK \(executor IN \(([^)]*)\)\)", registry._SCHEMA)
    assert tuple(name.strip(" '") for name in checked.split(",")) == tuple(KINDS)  # the registry accepts each kind
    assert [executors.executor_kind(n) for n in ("local", "slurm", "debug")] == [LOCAL, SLURM, DEBUG]
    with pytest.raises(JobsError, match=r"unknown executor 'lsf'; choose one of local, slurm, debug$"):
        executors.executor_kind("lsf")


# --- availability and why ----------------------------------------------------------------------


def test_without_slurm_only_slurm_is_refused_and_says_why(tmp_path, monkeypatch):
    _path_with(tmp_path, monkeypatch, {})
    assert LOCAL.refusal("x") is None and DEBUG.refusal("x") is None
    why = SLURM.refusal("task.yaml")
    assert why and "executor slurm was requested (from task.yaml)" in why and "sbatch and srun are not on PATH" in why
    assert SLURM.availability() == executors.Availability("unavailable",
                                                          "sbatch, srun, squeue, sacct, scancel not on PATH")
    assert LOCAL.availability() == executors.Availability("available", "subprocesses on this machine")
    assert DEBUG.availability() == executors.Availability("available", "in this process, now")
    with pytest.raises(JobsError, match="not a SLURM submit host"):
        executors.choose_executor("slurm", JobsConfig())


def test_slurm_commands_present_but_the_controller_silent_is_doubtful(tmp_path, monkeypatch):
    commands = {name: "exit 0" for name in ALL_SLURM}
    commands["sinfo"] = "echo 'slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1"
    _path_with(tmp_path, monkeypatch, commands)
    said = SLURM.availability()
    assert said.state == "doubtful" and said.detail.startswith("commands found but sinfo failed (exit 1)")
    assert "Unable to contact" in said.detail
    assert SLURM.refusal("x") is None  # submitting needs only sbatch and srun


def test_auto_picks_slurm_where_it_can_submit(tmp_path, monkeypatch):
    _path_with(tmp_path, monkeypatch, {name: "exit 0" for name in ALL_SLURM})
    choice = executors.choose_executor(None, JobsConfig(executor="auto"), "fmb.yaml")
    assert choice.kind is SLURM and choice.requested == "auto"
    assert choice.note == f"executor: slurm (auto from fmb.yaml: sbatch at {tmp_path / 'fake-bin' / 'sbatch'})"
    assert SLURM.availability() == executors.Availability("available", "sinfo answers")


def test_jobs_executors_prints_every_kind(tmp_path, monkeypatch):
    from fmb_engine.cli import jobs as jobs_cli

    _path_with(tmp_path, monkeypatch, {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    app = typer.Typer()
    app.add_typer(jobs_cli.app, name="jobs")
    out = CliRunner().invoke(app, ["jobs", "executors"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    lines = [" ".join(line.split()) for line in out.output.splitlines() if line.strip()]
    assert lines == ["local available (subprocesses on this machine)",
                     "slurm unavailable: sbatch, srun, squeue, sacct, scancel not on PATH",
                     "debug available (in this process, now)",
                     "default executor: local (subprocesses on this machine; from default)"]


# --- parameters, options and the settings each kind ignores ------------------------------------


def test_each_kind_maps_the_jobs_settings_it_uses():
    cfg = JobsConfig(gpus_per_node=0, mem_gb=4, python="/opt/py", max_num_timeout=2, partition="gpu")
    common = {"name": "n", "timeout_min": 60, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": 4}
    assert LOCAL.parameters(cfg, "n") == DEBUG.parameters(cfg, "n") == common
    slurm = SLURM.parameters(cfg, "n")
    assert "gpus_per_node" not in slurm and slurm["slurm_partition"] == "gpu"  # no --gpus-per-node=0 line
    assert LOCAL.options(cfg) == {"local_python": "/opt/py", "local_max_num_timeout": 2}
    assert SLURM.options(cfg) == {"slurm_python": "/opt/py", "slurm_max_num_timeout": 2}
    assert DEBUG.options(cfg) == {}
    assert LOCAL.options(JobsConfig())["local_python"] == sys.executable


def test_ignored_settings_are_settings_and_slurm_uses_them_all():
    fields = set(JobsConfig.model_fields)
    assert SLURM.ignored_settings == ()
    assert set(LOCAL.ignored_settings) < set(DEBUG.ignored_settings) <= fields
    assert set(DEBUG.ignored_settings) == set(SAMPLE)  # SAMPLE covers every setting some kind ignores


@pytest.mark.parametrize("name", list(KINDS))
def test_a_setting_the_kind_ignores_is_refused_and_one_it_uses_passes(name, workspace):
    kind = KINDS[name]
    choice = executors.ExecutorChoice(name, name, "test", "")
    for key, value in SAMPLE.items():
        cfg = JobsConfig(**{key: value})
        if key in kind.ignored_settings:
            users = [k.name for k in KINDS.values() if key not in k.ignored_settings]
            with pytest.raises(ConfigError) as err:
                executors.check_settings(choice, cfg, workspace)
            message = str(err.value)
            assert f"jobs.{key} = {value!r} (from the caller) is ignored by the {name} executor" in message
            assert f"only {' and '.join(users)} use" in message and "nothing was submitted" in message
        else:
            assert executors.check_settings(choice, cfg, workspace) == []


def test_build_hands_the_mapping_to_submitit(tmp_path):
    cfg = JobsConfig(timeout_min=7, max_num_timeout=1, python="/opt/py")
    local = LOCAL.build(tmp_path / "local", cfg, "fmb-x")
    assert (tmp_path / "local").is_dir() and local.cluster == "local"
    assert local.parameters["timeout_min"] == 7
    assert local._executor.max_num_timeout == 1 and local._executor.python == "/opt/py"
    assert DEBUG.build(tmp_path / "debug", cfg, "fmb-x").cluster == "debug"

    class Misspelt(executors.LocalKind):
        def parameters(self, cfg, job_name):
            return super().parameters(cfg, job_name) | {"timeout_minutes": 3}

    with pytest.raises(JobsError, match="invalid local executor parameters"):
        Misspelt().build(tmp_path / "bad", cfg, "fmb-x")


def test_only_slurm_warns_about_a_folder_compute_nodes_cannot_see(tmp_path):
    import tempfile

    under_tmp = Path(tempfile.gettempdir()) / "fmb-ws" / "jobs" / "run"
    assert SLURM.folder_warnings(under_tmp)[0].startswith(f"warning: the jobs folder {under_tmp} is under")
    assert LOCAL.folder_warnings(under_tmp) == DEBUG.folder_warnings(under_tmp) == []


# --- cancelling, polling, recognising a folder -------------------------------------------------


def _job(folder: Path, job_id: str, **kw) -> JobRecord:
    return JobRecord(run_id="r", job_id=job_id, key=1, submitted=1000.0, folder=str(folder),
                     submitted_pickle=str(folder / f"{job_id}_submitted.pkl"), **kw)


def test_cancel_per_kind(tmp_path):
    assert DEBUG.cancel([_job(tmp_path, "1")]) == ["debug jobs run in-process at submission: nothing left to cancel"]
    gone = 2 ** 22 + 12345  # above the default pid_max: no such process
    assert LOCAL.cancel([_job(tmp_path, "abc"), _job(tmp_path, str(gone))]) == [
        "abc: not a local process id", f"{gone}: process already ended"]
    with pytest.raises(JobsError, match="not a SLURM job id, not cancelled: 'abc'"):
        SLURM.cancel([_job(tmp_path, "abc")])  # refused before scancel runs


def test_host_kinds_poll_from_the_outcome_record(tmp_path):
    done, lost = _job(tmp_path, "7"), _job(tmp_path, "8", state=State.RUNNING)
    write_outcome(outcome_path(tmp_path, "7"), "success", value={"n": 1})
    polled = DEBUG.poll([done], now=2000.0)
    update = polled.updates[1]
    assert polled.problems == [] and update["state"] is State.COMPLETED and update["outputs"] == {"n": 1}
    assert update["started"] == 1000.0 and update["ended"] > 1000.0
    update = DEBUG.poll([lost], now=2000.0).updates[1]
    assert update["state"] is State.UNKNOWN and "no outcome record" in update["error"]
    update = LOCAL.poll([lost], now=2000.0).updates[1]  # no process, no record: it died
    assert update["state"] is State.FAILED and update["raw_state"] == "NO PROCESS AND NO OUTCOME"


def test_slurm_polls_once_for_all_its_jobs(tmp_path):
    calls = []

    def runner(argv, **kwargs):
        import subprocess

        calls.append(argv[0])
        out = "41_0|41|0|RUNNING|N/A|2026-11-28T09:12:15|n1|None\n" if argv[0] == "squeue" else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    jobs = [_job(tmp_path, "41_0"), _job(tmp_path, "41_1")]
    jobs[1].key = 2
    polled = SLURM.poll(jobs, now=1010.0, runner=runner)
    assert calls.count("squeue") == 1
    assert polled.updates[1]["state"] is State.RUNNING
    assert polled.updates[2] == {}  # unknown for now, within the grace period


def test_the_kind_that_wrote_a_folder(tmp_path):
    (tmp_path / "55_submission.sh").write_text("#!/bin/bash\n#SBATCH --job-name=x\n")
    (tmp_path / "56_submission.sh").write_text("#!/bin/bash\n")
    assert executors.kind_that_wrote(tmp_path, "55") is SLURM
    assert executors.kind_that_wrote(tmp_path, "56") is LOCAL
    assert executors.kind_that_wrote(tmp_path, "57") is LOCAL


# --- the registry, borrowed or opened ----------------------------------------------------------


def test_borrow_or_open_closes_only_what_it_opened(workspace):
    with open_registry(workspace) as lent:
        with borrow_or_open(workspace, lent) as reg:
            assert reg is lent
        assert lent.runs() == []  # still open
    with borrow_or_open(workspace) as opened:
        assert opened.runs() == []
    with pytest.raises(Exception, match="closed"):
        opened.runs()
