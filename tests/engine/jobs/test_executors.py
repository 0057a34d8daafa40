"""Executors end to end: local and debug for real, slurm's absence as a clear error, the CLI group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fmb_engine.jobs import JobsError, executors, monitor, selftest, submission
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """A PATH with python but without any SLURM command."""
    bin_dir = tmp_path / "bin-no-slurm"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin/nonexistent")
    return bin_dir


def wait_for(predicate, timeout=20.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    raise AssertionError("condition not reached in time")


# --- choosing the executor ---------------------------------------------------------------------


def test_slurm_requested_without_sbatch_is_a_clear_error(no_slurm, workspace):
    with pytest.raises(JobsError) as err:
        submission.submit(workspace, "embed", selftest.sleep_then, 0, executor="slurm")
    message = str(err.value)
    assert "executor slurm was requested (from --executor)" in message
    assert "sbatch and srun are not on PATH" in message and "--executor local" in message
    with open_registry(workspace) as reg:
        assert reg.runs() == []
    (workspace.root / "fmb.yaml").write_text("jobs:\n  executor: slurm\n")
    with pytest.raises(JobsError, match=r"from .*fmb.yaml"):  # the config layer is named
        submission.submit(workspace, "embed", selftest.sleep_then, 0)


def test_auto_says_what_it_chose(no_slurm):
    choice = executors.choose_executor(None, JobsConfig(executor="auto"), "fmb.yaml")
    assert choice.name == "local" and "auto from fmb.yaml: sbatch, srun not on PATH" in choice.note
    assert executors.choose_executor("debug", JobsConfig()).note.startswith("executor: debug (in this process")
    with pytest.raises(JobsError, match="unknown executor 'lsf'"):
        executors.choose_executor("lsf", JobsConfig())


def test_slurm_parameters_from_config():
    cfg = JobsConfig(partition="gpu", qos="high", account="a1", constraint="a100", gpus_per_node=1, cpus_per_task=8,
                     mem_gb=32, timeout_min=120, array_parallelism=4, setup=["module load cuda/12"],
                     sbatch_extra={"mail-type": "END"})
    params = executors.SLURM.parameters(cfg, "fmb-embed")
    assert params == {
        "name": "fmb-embed", "timeout_min": 120, "cpus_per_task": 8, "gpus_per_node": 1, "mem_gb": 32,
        "slurm_partition": "gpu", "slurm_account": "a1", "slurm_qos": "high", "slurm_constraint": "a100",
        "slurm_array_parallelism": 4, "slurm_signal_delay_s": 90, "slurm_setup": ["module load cuda/12"],
        "slurm_additional_parameters": {"mail-type": "END"},
    }
    local = executors.LOCAL.parameters(cfg, "x")
    assert not any(k.startswith("slurm_") for k in local)


def test_config_section_is_registered_and_validated(workspace):
    (workspace.root / "fmb.yaml").write_text("jobs:\n  partiton: gpu\n")
    from fmb_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'partition'"):
        submission.jobs_config(workspace)
    (workspace.root / "fmb.yaml").write_text('jobs:\n  setup: ["a\\nb"]\n')
    with pytest.raises(ConfigError, match="one line"):
        submission.jobs_config(workspace)
    (workspace.root / "fmb.yaml").write_text("jobs:\n  partition: gpu\n  executor: debug\n")
    resolved = submission.jobs_config(workspace, executor="local")
    assert resolved.values.partition == "gpu" and resolved.values.executor == "local"
    assert resolved.sources["executor"] == "command line"


# --- local executor ----------------------------------------------------------------------------


def test_local_array_end_to_end(workspace, tmp_path):
    out = tmp_path / "shards"
    t0 = time.monotonic()
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard, [(str(out), i, 3) for i in range(3)],
                                  executor="local", snapshot={"values": {"n": 3}})
    assert time.monotonic() - t0 < 5  # returns at once
    assert sub.executor == "local" and len(sub.job_ids) == 3 and all(j.isdigit() for j in sub.job_ids)
    assert Path(sub.folder).parent == workspace.folder("jobs")
    jobs = monitor.wait(workspace, sub.run_id, timeout_s=60, poll_s=0.2)
    assert [j.state for j in jobs] == [State.COMPLETED] * 3
    assert sorted(p.name for p in out.iterdir()) == [f"shard-000{i}-of-0003.json" for i in range(3)]
    assert jobs[1].outputs == {"shard": str(out / "shard-0001-of-0003.json")}
    assert all(j.started and j.ended for j in jobs)
    text = "".join(monitor.logs(jobs[2]))
    assert "shard 2/3" in text and "wrote" in text
    tail = "".join(monitor.logs(jobs[2], tail=2))
    assert tail.count("\n") == 2 and tail in text


def test_local_cancel_and_follow_logs(workspace):
    sub = submission.submit(workspace, "selftest", selftest.sleep_then, 60, executor="local")
    (job,) = sub.records
    assert job.state is State.RUNNING
    wait_for(lambda: Path(job.stdout).exists() and "sleeping" in Path(job.stdout).read_text(), timeout=20)
    seen = []
    stop_after = time.monotonic() + 1.5
    for chunk in monitor.logs(job, follow=True, poll_s=0.1, should_stop=lambda: time.monotonic() > stop_after):
        seen.append(chunk)
    assert sum("sleeping" in c for c in "".join(seen).splitlines()) >= 2  # it kept reading new lines
    messages = submission.cancel(workspace, job.job_id)
    assert "interrupted" in messages[0]
    wait_for(lambda: submission.cancel(workspace, job.job_id)[0].startswith("nothing to cancel"), timeout=20, every=0.2)
    with open_registry(workspace) as reg:
        done = reg.jobs(sub.run_id)[0]
    assert done.state is State.CANCELLED and done.cancel_requested


def test_preemption_requeues_and_keeps_progress(workspace, tmp_path):
    out = tmp_path / "steps"
    sub = submission.submit(workspace, "selftest", selftest.count_steps, str(out), 12, 0.1, executor="local")
    controller = int(sub.job_ids[0])
    wait_for(lambda: len(list(out.glob("step-*.done"))) >= 2, timeout=30)
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert children, "the local controller should have one task process"
    os.kill(int(children[0]), signal.SIGUSR2)  # what SLURM sends before a time limit or preemption
    (job,) = monitor.wait(workspace, sub.run_id, timeout_s=60, poll_s=0.2)
    assert job.state is State.COMPLETED
    starts = (out / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and int(starts[1].split("done=")[1]) >= 2  # the rerun continued, not restarted
    assert len(list(out.glob("step-*.done"))) == 12
    assert "requeueing" in "".join(monitor.logs(job))


def test_resubmit_runs_only_the_failed_tasks(workspace, tmp_path):
    good, blocked = tmp_path / "good", tmp_path / "blocked"
    blocked.write_text("a file where a folder should be\n")
    args = [(str(good), 0, 3), (str(blocked), 1, 3), (str(good), 2, 3)]
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard, args, executor="local")
    jobs = monitor.wait(workspace, sub.run_id, timeout_s=60, poll_s=0.2)
    assert [j.state for j in jobs] == [State.COMPLETED, State.FAILED, State.COMPLETED]
    assert "Error" in jobs[1].error
    blocked.unlink()
    again = submission.resubmit(workspace, sub.run_id)
    assert again.run_id == sub.run_id and "resubmitted 1 task(s): 1" in again.notes[-1]
    jobs = monitor.wait(workspace, sub.run_id, timeout_s=60, poll_s=0.2)
    assert [(j.task_index, j.state, j.attempt) for j in jobs] == [
        (0, State.COMPLETED, 1), (1, State.COMPLETED, 2), (2, State.COMPLETED, 1)]
    assert (blocked / "shard-0001-of-0003.json").is_file()
    with pytest.raises(JobsError, match="nothing to resubmit"):
        submission.resubmit(workspace, sub.run_id)


# --- debug executor ----------------------------------------------------------------------------


def test_debug_runs_in_process_and_records_failures(workspace, tmp_path):
    ok = submission.submit(workspace, "selftest", selftest.write_shard, str(tmp_path / "d"), 0, 1, executor="debug")
    assert ok.records[0].state is State.COMPLETED and (tmp_path / "d" / "shard-0000-of-0001.json").is_file()
    bad = submission.submit(workspace, "selftest", selftest.fail, "boom", executor="debug")  # no pdb prompt
    (job,) = bad.records
    assert job.state is State.FAILED and job.error == "RuntimeError: boom"
    assert "this goes to stderr" in "".join(monitor.logs(job, stderr=True))
    assert "about to fail" in "".join(monitor.logs(job))
    assert submission.cancel(workspace, bad.run_id)[0].startswith("nothing to cancel")


def test_attach_an_existing_submitit_job(workspace, tmp_path):
    import submitit

    folder = tmp_path / "elsewhere"
    ex = submitit.AutoExecutor(folder, cluster="local")
    job = ex.submit(selftest.sleep_then, 0, "attached!")
    wait_for(lambda: Path(job.paths.result_pickle).exists() and job.done(), timeout=30)
    run, jobs = submission.attach(workspace, folder, job.job_id)
    # submitted outside FMB: no outcome record, and submitit's result pickle is never loaded
    assert run.executor == "local" and jobs[0].state is State.UNKNOWN and jobs[0].outputs is None
    assert "which FMB never loads" in jobs[0].error
    with pytest.raises(JobsError, match="already registered"):
        submission.attach(workspace, folder, job.job_id)
    with pytest.raises(JobsError, match="no submitit job 12345"):
        submission.attach(workspace, folder, "12345")


# --- the CLI group -------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    from fmb_engine.cli import jobs as jobs_cli

    app = typer.Typer()
    app.add_typer(jobs_cli.app, name="jobs")
    return app


def test_cli_list_show_logs_resubmit(workspace, tmp_path, monkeypatch):
    from fmb_engine.cli import common

    monkeypatch.setattr(common.console, "width", 220)  # the console is created once, at import
    ok = submission.submit(workspace, "selftest", selftest.write_shard, str(tmp_path / "c"), 0, 1, executor="debug")
    bad = submission.submit(workspace, "detect", selftest.fail, "cli boom", executor="debug")
    runner = CliRunner()
    app = _cli()
    ws = ["--workspace", str(workspace.root)]
    listed = runner.invoke(app, ["jobs", "list", *ws])
    assert listed.exit_code == 0, listed.output
    assert ok.run_id in listed.output and bad.run_id in listed.output and "FAILED" in listed.output
    shown = runner.invoke(app, ["jobs", "show", bad.run_id[:-2], *ws])
    assert shown.exit_code == 0 and "RuntimeError: cli boom" in shown.output and "debug" in shown.output
    logs = runner.invoke(app, ["jobs", "logs", bad.job_ids[0], "--stderr", *ws])
    assert logs.exit_code == 0 and "Traceback" in logs.output
    again = runner.invoke(app, ["jobs", "resubmit", bad.run_id, *ws])
    assert again.exit_code == 0 and "resubmitted 1 task(s)" in again.output
    refreshed = runner.invoke(app, ["jobs", "refresh", *ws])
    assert refreshed.exit_code == 0 and "polled 0 job(s)" in refreshed.output
    selftest_run = runner.invoke(app, ["jobs", "selftest", "--shards", "2", "-x", "debug", *ws])
    assert selftest_run.exit_code == 0 and "selftest passed" in selftest_run.output
    missing = runner.invoke(app, ["jobs", "show", "nope", *ws])
    assert isinstance(missing.exception, JobsError) and "no run or job 'nope'" in str(missing.exception)


def test_cli_error_is_one_clear_line(workspace, no_slurm):
    code = ("import sys\nfrom fmb_engine.cli.main import app, main\nfrom fmb_engine.cli import jobs\n"
            "if not any(g.name == 'jobs' for g in app.registered_groups):\n    app.add_typer(jobs.app, name='jobs')\n"
            "main(sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"}
    proc = subprocess.run([sys.executable, "-c", code, "jobs", "selftest", "-x", "slurm", "-w", str(workspace.root)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    said = " ".join(proc.stderr.split())
    assert said.startswith("error: executor slurm was requested") and "sbatch and srun are not on PATH" in said
