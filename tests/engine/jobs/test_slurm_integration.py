"""Against a real SLURM (a one-node cluster from `.ci/slurm.sh` in CI): arrays, states, cancel, errors.

Runs only when `sinfo` answers; otherwise every test is skipped with the reason.
The workspace sits under pytest's tmp folder, which is fine on one node (a real
cluster needs the shared filesystem).
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from fmb_engine.jobs import JobsError, monitor, selftest, submission
from fmb_engine.jobs import slurm as slurm_cli
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State
from fmb_engine.workspace import Workspace

_OK, _SAID = slurm_cli.sinfo_responds(timeout_s=5)
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _OK, reason=f"no SLURM controller answers here ({_SAID}); start one with .ci/slurm.sh"),
]

CFG = JobsConfig(executor="slurm", timeout_min=5, cpus_per_task=1, mem_gb=0.25, array_parallelism=1,
                 signal_delay_s=10)


def poll_until(ws: Workspace, run_id: str, predicate, timeout_s: float = 60.0, every: float = 0.5, seen=None):
    end = time.monotonic() + timeout_s
    while True:
        monitor.refresh(ws)
        with open_registry(ws) as reg:
            jobs = reg.jobs(run_id)
        if seen is not None:
            seen.extend((j.task_index, j.state, j.reason) for j in jobs)
        if predicate(jobs):
            return jobs
        if time.monotonic() > end:
            raise AssertionError(f"timed out: {[(j.job_id, j.state.value, j.reason) for j in jobs]}")
        time.sleep(every)


def done(jobs) -> bool:
    return all(not j.active for j in jobs)


def test_array_runs_to_completion_with_states_from_squeue_and_sacct(workspace, tmp_path):
    out = tmp_path / "shards"
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard, [(str(out), i, 3) for i in range(3)],
                                  executor="slurm", jobs=CFG, snapshot={"values": {"shards": 3}})
    assert sub.executor == "slurm" and len(sub.job_ids) == 3
    array_id = sub.job_ids[0].split("_")[0]
    assert sub.job_ids == [f"{array_id}_{i}" for i in range(3)]
    script = (sub.folder / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%1" in script and sys.executable in script
    seen: list = []
    jobs = poll_until(workspace, sub.run_id, done, seen=seen)
    assert [j.state for j in jobs] == [State.COMPLETED] * 3, [(j.job_id, j.raw_state, j.error) for j in jobs]
    assert all(j.exit_code == "0:0" and j.node and j.started and j.ended for j in jobs), [vars(j) for j in jobs]
    assert any(reason == "JobArrayTaskLimit" for _, state, reason in seen if state is State.PENDING)
    for i, job in enumerate(jobs):
        written = json.loads((out / f"shard-000{i}-of-0003.json").read_text())
        assert written["env"]["SLURM_ARRAY_TASK_ID"] == str(i) and written["env"]["SLURM_ARRAY_JOB_ID"] == array_id
        assert written["python"] == sys.executable  # the venv's interpreter ran the job
        assert job.outputs == {"shard": str(out / f"shard-000{i}-of-0003.json")}
        assert f"shard {i}/3" in "".join(monitor.logs(job))
    with open_registry(workspace) as reg:
        run = reg.run(sub.run_id)
        assert run.executor == "slurm" and run.config["stage"] == {"values": {"shards": 3}}
        assert reg.resolve(array_id)[0].run_id == sub.run_id


def test_cancel_a_running_job(workspace):
    sub = submission.submit(workspace, "selftest", selftest.sleep_then, 300, executor="slurm", jobs=CFG)
    poll_until(workspace, sub.run_id, lambda jobs: jobs[0].state is State.RUNNING, timeout_s=60)
    messages = submission.cancel(workspace, sub.run_id)
    assert messages[0].startswith("scancel sent for 1 job(s)")
    (job,) = poll_until(workspace, sub.run_id, done, timeout_s=60)
    assert job.state is State.CANCELLED and job.raw_state.startswith("CANCELLED") and job.cancel_requested


def test_bad_partition_is_a_clear_error_and_nothing_is_recorded(workspace):
    bad = CFG.model_copy(update={"partition": "no-such-partition"})
    with pytest.raises(JobsError) as err:
        submission.submit_array(workspace, "selftest", selftest.write_shard, [("/nowhere", 0, 1)], executor="slurm",
                                jobs=bad)
    message = str(err.value)
    assert "invalid partition" in message.lower() and "nothing was submitted or recorded" in message
    with open_registry(workspace) as reg:
        assert reg.runs() == []
    assert not [p for p in workspace.folder("jobs").iterdir() if p.is_dir()]


def test_failed_task_then_resubmit_only_it(workspace, tmp_path):
    good, blocked = tmp_path / "good", tmp_path / "blocked"
    blocked.write_text("a file where a folder should be\n")
    args = [(str(good), 0, 2), (str(blocked), 1, 2)]
    cfg = CFG.model_copy(update={"array_parallelism": 2})
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard, args, executor="slurm", jobs=cfg)
    jobs = poll_until(workspace, sub.run_id, done)
    assert [j.state for j in jobs] == [State.COMPLETED, State.FAILED]
    assert jobs[1].exit_code != "0:0" and "Error" in (jobs[1].error or "")
    assert "Traceback" in "".join(monitor.logs(jobs[1], stderr=True))
    blocked.unlink()
    again = submission.resubmit(workspace, sub.run_id, jobs=cfg)
    assert again.executor == "slurm"
    jobs = poll_until(workspace, sub.run_id, done)
    assert [(j.task_index, j.state, j.attempt) for j in jobs] == [(0, State.COMPLETED, 1), (1, State.COMPLETED, 2)]
    assert jobs[1].job_id not in sub.job_ids


def test_attach_a_finished_array_in_another_workspace(workspace, tmp_path):
    sub = submission.submit_array(workspace, "selftest", selftest.write_shard,
                                  [(str(tmp_path / "a"), i, 2) for i in range(2)], executor="slurm",
                                  jobs=CFG.model_copy(update={"array_parallelism": 2}))
    poll_until(workspace, sub.run_id, done)
    other = Workspace.init(tmp_path / "other")
    run, jobs = submission.attach(other, sub.folder, sub.job_ids[0].split("_")[0])
    assert run.executor == "slurm" and [j.job_id for j in jobs] == sub.job_ids
    assert [j.state for j in jobs] == [State.COMPLETED] * 2 and all(j.exit_code == "0:0" for j in jobs)


@pytest.mark.skipif(not __import__("os").environ.get("FMB_SLURM_SLOW"),
                    reason="slow (about 2.5 min: SLURM holds a requeued job ~2 min); set FMB_SLURM_SLOW=1")
def test_preemption_signal_requeues_and_the_job_resumes(workspace, tmp_path):
    import subprocess

    out = tmp_path / "steps"
    sub = submission.submit(workspace, "selftest", selftest.count_steps, str(out), 30, 0.5, executor="slurm", jobs=CFG)
    end = time.monotonic() + 60
    while len(list(out.glob("step-*.done"))) < 4:
        assert time.monotonic() < end, "the job never started"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", sub.job_ids[0]], check=True)  # what a preemption sends
    seen: list = []
    (job,) = poll_until(workspace, sub.run_id, done, timeout_s=300, every=2.0, seen=seen)
    assert job.state is State.COMPLETED
    assert any(state is State.PENDING and reason == "BeginTime" for _, state, reason in seen)  # requeued
    starts = (out / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and int(starts[1].split("done=")[1]) >= 4  # continued, not restarted


def test_cli_sharded_embedding_and_detect_through_slurm(tmp_path):
    """The real CLI with --executor slurm: a 2-task embedding array merges, then a detect job runs."""
    import os
    import subprocess

    from fmb_engine.config import load
    from fmb_engine.survey.stages import make_mock

    ws = Workspace.init(tmp_path / "ws")
    make_mock(ws, load("mock", cli={"objects": 80, "image_size": 16, "workers": -1}))
    (ws.root / "fmb.yaml").write_text("jobs:\n  executor: slurm\n  timeout_min: 5\n  mem_gb: 0.5\n")
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}

    def fmb(*args):
        proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], cwd=ws.root, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = fmb("embed", "pca", "--executor", "slurm", "--shards", "2")
    run_id = out.split("run ", 1)[1].split(":", 1)[0].strip()
    jobs = poll_until(ws, run_id, done, timeout_s=120)
    assert [j.state for j in jobs] == [State.COMPLETED, State.COMPLETED]
    assert (ws.folder("embeddings") / "pca.h5").is_file()
    for rerun in (["--force"], []):  # reruns: recomputed by the array, then up to date (the fit must survive both)
        out = fmb("embed", "pca", "--executor", "slurm", "--shards", "2", *rerun)
        run_id = out.split("run ", 1)[1].split(":", 1)[0].strip()
        jobs = poll_until(ws, run_id, done, timeout_s=120)
        assert [j.state for j in jobs] == [State.COMPLETED, State.COMPLETED], [(j.state, j.reason) for j in jobs]
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(ws.folder("embeddings") / "pca.h5") as reader:
        assert reader.state()
    out = fmb("detect", "all", "--executor", "slurm")
    run_id = out.split("run ", 1)[1].split(":", 1)[0].strip()
    (job,) = poll_until(ws, run_id, done, timeout_s=120)
    assert job.state is State.COMPLETED, job
    assert (ws.folder("scores") / "systems.parquet").is_file()
    listing = fmb("jobs", "list")
    assert "embed.pca" in listing and "detect" in listing and "COMPLETED" in listing
