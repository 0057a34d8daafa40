"""The SQLite job registry: schema, atomic writes, lookups, and several writer processes at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

from fmb_engine.jobs import JobsError
from fmb_engine.jobs.registry import SCHEMA_VERSION, JobRecord, Registry, RunRecord, new_run_id, run_state
from fmb_engine.jobs.states import State


def _run(run_id: str, n: int = 3, executor: str = "slurm", base: str = "100") -> tuple[RunRecord, list[JobRecord]]:
    run = RunRecord(run_id=run_id, stage="embed.pca", executor=executor, folder=f"/ws/jobs/{run_id}",
                    config={"stage": {"values": {"k": 1}}}, params={"partition": "gpu"}, n_tasks=n, is_array=n > 1)
    jobs = [JobRecord(run_id="", job_id=f"{base}_{i}" if n > 1 else base, array_job_id=base if n > 1 else None,
                      task_index=i, stdout=f"/ws/jobs/{run_id}/{base}_{i}_0_log.out") for i in range(n)]
    return run, jobs


def test_schema_wal_and_round_trip(tmp_path):
    path = tmp_path / "jobs" / "registry.sqlite"
    with Registry(path) as reg:
        assert reg.journal == "wal"
        added = reg.add_run(*_run("r1"))
        assert [j.key for j in added] == [1, 2, 3] and added[0].executor == "slurm"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with Registry(path) as reg:  # reopening keeps everything
        run = reg.run("r1")
        assert run.config == {"stage": {"values": {"k": 1}}} and run.params == {"partition": "gpu"} and run.is_array
        jobs = reg.jobs("r1")
        assert [j.job_id for j in jobs] == ["100_0", "100_1", "100_2"] and all(j.state is State.PENDING for j in jobs)
        assert reg.update_jobs({jobs[0].key: {"state": State.COMPLETED, "exit_code": "0:0", "outputs": {"a": "x"}}}) == 1
        done = reg.job(jobs[0].key)
        assert done.state is State.COMPLETED and done.outputs == {"a": "x"} and done.exit_code == "0:0"
        assert [j.job_id for j in reg.active_jobs()] == ["100_1", "100_2"]
        assert reg.counts("r1") == {State.COMPLETED: 1, State.PENDING: 2}


def test_delete_journal_option(tmp_path):
    with Registry(tmp_path / "r.sqlite", journal="delete") as reg:
        assert reg.journal == "delete"
        reg.add_run(*_run("r1", 1))
        assert len(reg.jobs()) == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JobsError, match="newer than this FMB"):
        Registry(path)


def test_update_columns_are_whitelisted(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        (job,) = reg.add_run(*_run("r1", 1))
        with pytest.raises(ValueError, match="not updatable"):
            reg.update_jobs({job.key: {"run_id = 'x'; --": 1}})


def test_failed_transaction_leaves_nothing(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        run, jobs = _run("r1", 3)
        jobs[2].job_id = jobs[1].job_id  # violates UNIQUE(run_id, job_id) on the third insert
        with pytest.raises(JobsError, match="cannot be recorded"):
            reg.add_run(run, jobs)
        assert reg.runs() == [] and reg.jobs() == []


def test_resolve_run_prefix_job_and_array(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add_run(*_run("20260101T000000-embed-aaaaaa", 3, base="100"))
        reg.add_run(*_run("20260101T000000-detect-bbbbbb", 1, base="200"))
        run, jobs = reg.resolve("20260101T000000-embed-aaaaaa")
        assert len(jobs) == 3
        assert reg.resolve("20260101T000000-det")[0].run_id == "20260101T000000-detect-bbbbbb"
        run, jobs = reg.resolve("100_1")
        assert run.stage == "embed.pca" and [j.job_id for j in jobs] == ["100_1"]
        run, jobs = reg.resolve("100")
        assert [j.task_index for j in jobs] == [0, 1, 2]
        assert reg.resolve("200")[1][0].job_id == "200"
        with pytest.raises(JobsError, match="several runs"):
            reg.resolve("20260101T000000")
        with pytest.raises(JobsError, match="no run or job"):
            reg.resolve("999")
        with pytest.raises(JobsError, match="no run or job"):
            reg.resolve("%")  # LIKE wildcards are escaped


def test_resubmission_supersedes_old_rows(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        jobs = reg.add_run(*_run("r1", 2))
        reg.update_jobs({jobs[1].key: {"state": State.FAILED}})
        new = JobRecord(run_id="", job_id="300", task_index=1, attempt=2)
        (added,) = reg.add_jobs("r1", [new], supersede={jobs[1].key: 0})
        current = reg.jobs("r1")
        assert [(j.job_id, j.attempt) for j in current] == [("100_0", 1), ("300", 2)]
        everything = reg.jobs("r1", include_superseded=True)
        assert len(everything) == 3 and reg.job(jobs[1].key).superseded_by == added.key
        assert not reg.job(jobs[1].key).active


def test_run_state_summarises():
    assert run_state({State.COMPLETED: 3}) is State.COMPLETED
    assert run_state({State.COMPLETED: 3, State.RUNNING: 1, State.FAILED: 1}) is State.RUNNING
    assert run_state({State.COMPLETED: 3, State.FAILED: 1}) is State.FAILED
    assert run_state({}) is State.UNKNOWN


def _writer(path: str, worker: int, runs: int) -> None:
    reg = Registry(path)
    for i in range(runs):
        run_id = f"w{worker}-r{i:03d}"
        jobs = reg.add_run(*_run(run_id, 3, base=f"{worker}{i:03d}"))
        reg.update_jobs({j.key: {"state": State.RUNNING, "last_polled": time.time()} for j in jobs})
        reg.update_jobs({jobs[0].key: {"state": State.COMPLETED}})
    reg.close()


def test_concurrent_writer_processes_and_a_reader(tmp_path):
    path = tmp_path / "jobs" / "registry.sqlite"
    Registry(path).close()
    ctx = mp.get_context("spawn")
    workers, runs = 4, 20
    procs = [ctx.Process(target=_writer, args=(str(path), w, runs)) for w in range(workers)]
    for p in procs:
        p.start()
    seen_partial = []
    with Registry(path) as reader:  # a TUI-like reader polling while the writers work
        while any(p.is_alive() for p in procs):
            all_runs, jobs = reader.snapshot()
            per_run: dict[str, int] = {}
            for job in jobs:
                per_run[job.run_id] = per_run.get(job.run_id, 0) + 1
            seen_partial += [r.run_id for r in all_runs if per_run.get(r.run_id, 0) != 3]
            time.sleep(0.01)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert seen_partial == []  # a run is visible with all of its jobs or not at all
    with Registry(path) as reg:
        assert len(reg.runs()) == workers * runs
        jobs = reg.jobs()
        assert len(jobs) == workers * runs * 3
        assert sum(j.state is State.COMPLETED for j in jobs) == workers * runs
        assert sum(j.state is State.RUNNING for j in jobs) == workers * runs * 2
        assert reg._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_new_run_id_is_sortable_and_safe():
    a = new_run_id("embed.astropt")
    b = new_run_id("we/ird name")
    assert a.split("-")[1] == "embed.astropt" and "/" not in b and " " not in b and a != new_run_id("embed.astropt")
