"""Jobs never execute what is planted in a job folder; attach checks whose folder it is; job files get the mode rule.

A planted pickle here is live: unpickling it creates a marker file (proved once on a
copy). Every reader of jobs (attach, show, list, refresh/monitor, resubmit) is run over
folders holding such pickles, and the marker must never appear while the job is still
reported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import stat
import time
from pathlib import Path

import pytest
import submitit
from typer.testing import CliRunner

from fmb_engine.cli.main import app
from fmb_engine.jobs import JobsError, monitor, selftest, submission
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.folders import verify_folder
from fmb_engine.jobs.outcome import outcome_path, read_outcome, write_outcome
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State
from fmb_engine.workspace import Workspace
from tests.engine.jobs.test_slurm_parse import fake, sq  # noqa: F401 - the fake SLURM fixture


class Planted:
    """What an attacker writes into a job folder: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(("success", Planted(marker))))


@pytest.fixture
def marker(tmp_path) -> Path:
    """The marker path, after proving that the planted payload really runs when unpickled."""
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(("success", Planted(probe))))
    assert probe.exists(), "the planted payload must be live for this test to mean anything"
    return tmp_path / "EXECUTED"


def cli(*argv: str):
    result = CliRunner().invoke(app, list(argv))
    return result


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_attach_show_list_refresh_never_unpickle_a_planted_result(workspace, tmp_path, marker):
    folder = tmp_path / "elsewhere"
    job = submitit.AutoExecutor(folder, cluster="local").submit(selftest.sleep_then, 0, "done")
    wait_for(lambda: job.paths.result_pickle.exists() and job.done())
    plant(job.paths.result_pickle, marker)
    plant(job.paths.submitted_pickle, marker)
    ws = ["--workspace", str(workspace.root)]

    attached = cli("jobs", "attach", str(folder), job.job_id, *ws)
    assert attached.exit_code == 0, attached.output
    assert "attached as run" in attached.output and not marker.exists()
    with open_registry(workspace) as reg:
        (record,) = reg.jobs()
    assert record.job_id == job.job_id and record.state is State.UNKNOWN
    assert "which FMB never loads" in record.error

    listed = cli("jobs", "list", *ws)
    assert listed.exit_code == 0 and record.run_id in listed.output and not marker.exists()
    shown = cli("jobs", "show", job.job_id, *ws)
    assert shown.exit_code == 0 and job.job_id in shown.output and "UNKNOWN" in shown.output
    assert not marker.exists()
    assert monitor.refresh(workspace).polled == 1 and not marker.exists()  # still polled, never loaded
    with pytest.raises(JobsError, match="submitted outside FMB"):
        submission.resubmit(workspace, record.run_id)
    assert not marker.exists()


def test_own_runs_read_only_their_outcome_records(workspace, tmp_path, marker):
    """A local job with a planted result pickle while it runs, and a debug run resubmitted over planted pickles."""
    sub = submission.submit(workspace, "selftest", selftest.sleep_then, 2, "slept", executor="local")
    (job,) = sub.records
    plant(Path(job.result_pickle), marker)  # submitit replaces it at the end; readers never load it meanwhile
    assert cli("jobs", "show", sub.run_id, "-w", str(workspace.root)).exit_code == 0
    (done,) = monitor.wait(workspace, sub.run_id, timeout_s=60, poll_s=0.2)
    assert done.state is State.COMPLETED and done.outputs == {"result": "slept"} and not marker.exists()
    assert read_outcome(done.outcome_file).status == "success"

    bad = submission.submit(workspace, "selftest", selftest.fail, "planted", executor="debug")
    (failed,) = bad.records
    assert failed.state is State.FAILED and failed.error == "RuntimeError: planted"
    folder = Path(failed.submitit_folder)
    assert not list(folder.glob("*.pkl"))  # the debug executor writes no pickles at all
    plant(folder / f"{failed.job_id}_submitted.pkl", marker)
    plant(folder / f"{failed.job_id}_0_result.pkl", marker)
    again = submission.resubmit(workspace, bad.run_id)  # rebuilt from the registry's JSON record of the call
    assert again.records[-1].state is State.FAILED and not marker.exists()
    with open_registry(workspace) as reg:
        assert reg.run(bad.run_id).config["calls"][0]["function"] == "fmb_engine.jobs.selftest:fail"


def test_slurm_states_never_read_a_planted_result(fake, workspace, marker):  # noqa: F811
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard, [("/x", i, 2) for i in range(2)],
                                  executor="slurm", jobs=JobsConfig())
    folder = Path(sub.folder)
    for job_id in sub.job_ids:
        plant(folder / f"{job_id}_0_result.pkl", marker)
    write_outcome(outcome_path(folder, sub.job_ids[1]), "success", value={"shard": "/x/shard-0001-of-0002.json"})
    day = dt.date.today().isoformat()
    fake.script("squeue", "")
    fake.script("sacct", sq(*(f"{j}|4{i}|COMPLETED|0:0|{day}T23:59:00|{day}T23:59:01|{day}T23:59:02|vm|None"
                              for i, j in enumerate(sub.job_ids))))
    monitor.refresh(workspace)
    with open_registry(workspace) as reg:
        first, second = reg.jobs(sub.run_id)
    assert not marker.exists()
    assert first.state is State.COMPLETED and "wrote no outcome record" in first.error
    assert second.state is State.COMPLETED and second.outputs == {"shard": "/x/shard-0001-of-0002.json"}


def test_unknown_recorded_functions_are_not_rebuilt(workspace, tmp_path):
    from fmb_engine.jobs.calls import from_spec

    for name in ("os:system", "fmb_engine.jobs.submission:_recorded_call", "fmb_engine.jobs.nope:x", "builtins:open"):
        with pytest.raises(JobsError, match="recorded function"):
            from_spec({"function": name, "args": ["touch /tmp/x"], "kwargs": {}}, "x")
    with pytest.raises(JobsError, match="not understood"):
        from_spec({"function": "fmb_engine.jobs.selftest:fail", "args": [{"py/object": "os.system"}], "kwargs": {}}, "x")


# --- attach: whose folder is it --------------------------------------------------------------


def _foreign_folder(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "foreign"
    job = submitit.AutoExecutor(folder, cluster="local").submit(selftest.sleep_then, 0)
    wait_for(lambda: job.done())
    return folder, job.job_id


def test_attach_refuses_folders_others_could_write(workspace, tmp_path, marker):
    folder, job_id = _foreign_folder(tmp_path)
    ws = ["--workspace", str(workspace.root)]
    os.chmod(folder, 0o777)
    refused = cli("jobs", "attach", str(folder), job_id, *ws)
    assert refused.exit_code == 1 and isinstance(refused.exception, JobsError)
    assert "writable by everyone (mode 0777)" in str(refused.exception) and str(folder) in str(refused.exception)
    os.chmod(folder, 0o770)
    with pytest.raises(JobsError, match="writable by its group .* the workspace is not group-shared"):
        submission.attach(workspace, folder, job_id)
    os.chmod(folder, 0o750)
    log = folder / f"{job_id}_0_log.out"
    log.unlink()
    log.symlink_to("/etc/hostname")
    with pytest.raises(JobsError, match="not a regular file \\(a symbolic link\\)"):
        submission.attach(workspace, folder, job_id)
    log.unlink()
    log.write_text("log\n")
    if os.geteuid() == 0:  # root can hand the folder to someone else
        os.chown(folder, 54321, 54321)
        with pytest.raises(JobsError, match="belongs to uid 54321, not to you"):
            submission.attach(workspace, folder, job_id)
        os.chown(folder, 0, 0)
    with pytest.raises(JobsError, match="not a submitit folder"):
        submission.attach(workspace, tmp_path, "999")
    run, jobs = submission.attach(workspace, folder, job_id)  # all right again
    assert run.executor == "local" and len(jobs) == 1
    with open_registry(workspace) as reg:
        assert len(reg.runs()) == 1  # refused attaches recorded nothing


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user and group")
def test_group_shared_workspace_accepts_the_workspace_group(tmp_path):
    ws = Workspace.init(tmp_path / "shared-ws", shared=True)
    os.chown(ws.root, 0, 4242)
    folder, job_id = _foreign_folder(tmp_path)
    for path in (folder, *folder.iterdir()):
        os.chown(path, 54321, 4242)  # a colleague's job, in the workspace's group
    os.chmod(folder, 0o2770)
    verify_folder(ws, folder, list(folder.iterdir()))
    os.chown(folder, 54321, 4343)  # another group: no longer the workspace's
    with pytest.raises(JobsError, match="not to you .* nor in the workspace group"):
        verify_folder(ws, folder, [])


# --- modes of job files ------------------------------------------------------------------------


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in (folder, *folder.rglob("*"))}


@pytest.mark.parametrize("shared", [False, True], ids=["private", "group-shared"])
@pytest.mark.parametrize("executor", ["local", "debug"])
def test_job_files_follow_the_workspace_mode_rule(tmp_path, monkeypatch, shared, executor):
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    ws = Workspace.init(tmp_path / "ws", shared=shared)
    old = os.umask(0o000)  # the worst umask a user could have: nothing may come out world-writable
    try:
        sub = submission.submit(ws, "selftest", selftest.write_shard, str(ws.root / "out"), 0, 1, executor=executor)
        monitor.wait(ws, sub.run_id, timeout_s=60, poll_s=0.2)
    finally:
        os.umask(old)
    file_mode, dir_mode = (0o660, 0o2770) if shared else (0o640, 0o750)
    modes = _modes(Path(sub.folder))
    job_id = sub.job_ids[0]
    expected_files = {f"{job_id}_0_log.out", f"{job_id}_0_log.err", f"{job_id}_outcome.json"}
    assert expected_files <= set(modes), sorted(modes)
    assert {name: mode for name, mode in modes.items() if name != "." and not Path(sub.folder, name).is_dir()} == \
        {name: file_mode for name in modes if name != "." and not Path(sub.folder, name).is_dir()}
    assert modes["."] == dir_mode
    assert outcome_path(sub.folder, job_id).is_file()


@pytest.mark.slurm
def test_slurm_job_files_follow_the_mode_rule(tmp_path, monkeypatch):
    from fmb_engine.jobs import slurm as slurm_cli

    ok, said = slurm_cli.sinfo_responds(timeout_s=5)
    if not ok:
        pytest.skip(f"no SLURM controller answers here ({said})")
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    ws = Workspace.init(tmp_path / "ws", shared=True)
    cfg = JobsConfig(executor="slurm", timeout_min=5, cpus_per_task=1, mem_gb=0.25)
    sub = submission.submit(ws, "selftest", selftest.write_shard, str(ws.root / "out"), 0, 1, executor="slurm",
                            jobs=cfg)
    (job,) = monitor.wait(ws, sub.run_id, timeout_s=240, poll_s=1.0)
    assert job.state is State.COMPLETED, job.error
    modes = _modes(Path(sub.folder))
    files = {n: m for n, m in modes.items() if n != "." and not Path(sub.folder, n).is_dir()}
    assert f"{job.job_id}_0_log.out" in files and f"{job.job_id}_outcome.json" in files
    assert set(files.values()) == {0o660}, files
    assert modes["."] == 0o2770


def test_calls_are_recorded_as_json_and_rebuilt(workspace):
    from fmb_engine.config import load
    from fmb_engine.jobs.calls import call_spec, from_spec, make_call
    from fmb_engine.survey.stages import make_mock

    resolved = load("mock", workspace, cli={"objects": 50, "seed": 7})
    call = make_call(make_mock, (workspace, resolved), {}, "data.mock")  # what the TUI's Runs screen submits
    spec = call_spec(call)
    assert spec["function"] == "fmb_engine.survey.stages:make_mock"
    again = from_spec(json.loads(json.dumps(spec)), "data.mock")
    ws, rebuilt = again.args
    assert again.fn is make_mock and ws == workspace and rebuilt.values == resolved.values
    assert rebuilt.sources == resolved.sources


def test_a_call_without_json_form_is_not_resubmittable(workspace):
    bad = submission.submit(workspace, "selftest", selftest.fail, object(), executor="debug")
    with open_registry(workspace) as reg:
        assert "argument of type object" in reg.run(bad.run_id).config["calls_not_recorded"]
    with pytest.raises(JobsError, match="cannot be resubmitted: an argument of type object has no JSON form"):
        submission.resubmit(workspace, bad.run_id)


def test_a_run_from_an_older_fmb_is_not_resubmitted_from_its_pickle(workspace, marker):
    """Older runs have no JSON record of their calls: resubmit refuses instead of loading the submitted pickle."""
    import sqlite3

    from fmb_engine.jobs.registry import REGISTRY_NAME

    bad = submission.submit(workspace, "selftest", selftest.fail, "old", executor="debug")
    (job,) = bad.records
    plant(Path(job.submitted_pickle), marker)
    db = sqlite3.connect(workspace.folder("jobs") / REGISTRY_NAME)
    db.execute("UPDATE runs SET config_json = ? WHERE run_id = ?", (json.dumps({"stage": {}}), bad.run_id))
    db.commit()
    db.close()
    with pytest.raises(JobsError, match="older FMB.*submitted pickle is never loaded"):
        submission.resubmit(workspace, bad.run_id)
    assert not marker.exists()
