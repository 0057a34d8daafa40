"""The one state normaliser: SLURM spellings, submitit vocabularies, outcome records, local PIDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fmb_engine.jobs.states import (
    ACTIVE,
    TERMINAL,
    State,
    clean_raw,
    derive_debug,
    derive_local,
    explain_reason,
    is_terminal,
    normalise,
    normalise_slurm,
    pid_alive,
)
from fmb_engine.jobs.outcome import read_outcome, write_outcome


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("PENDING", State.PENDING), ("PD", State.PENDING), ("REQUEUED", State.PENDING), ("RQ", State.PENDING),
        ("REQUEUE_HOLD", State.PENDING), ("REQUEUE_FED", State.PENDING), ("CONFIGURING", State.PENDING),
        ("CF", State.PENDING), ("SUSPENDED", State.PENDING), ("RESV_DEL_HOLD", State.PENDING),
        ("RUNNING", State.RUNNING), ("R", State.RUNNING), ("COMPLETING", State.RUNNING), ("CG", State.RUNNING),
        ("SIGNALING", State.RUNNING), ("STAGE_OUT", State.RUNNING),
        ("COMPLETED", State.COMPLETED), ("CD", State.COMPLETED),
        ("FAILED", State.FAILED), ("NODE_FAIL", State.FAILED), ("BOOT_FAIL", State.FAILED),
        ("SPECIAL_EXIT", State.FAILED), ("F", State.FAILED),
        ("CANCELLED", State.CANCELLED), ("CANCELLED by 0", State.CANCELLED), ("CANCELLED by 123456", State.CANCELLED),
        ("CANCELLED+", State.CANCELLED), ("cancelled by 12+", State.CANCELLED), ("CA", State.CANCELLED),
        ("REVOKED", State.CANCELLED),
        ("TIMEOUT", State.TIMEOUT), ("TO", State.TIMEOUT), ("DEADLINE", State.TIMEOUT),
        ("PREEMPTED", State.PREEMPTED), ("PR", State.PREEMPTED),
        ("OUT_OF_MEMORY", State.OUT_OF_MEMORY), ("OOM", State.OUT_OF_MEMORY), ("OUT_OF_ME+", State.UNKNOWN),
        ("  running  ", State.RUNNING), ("PENDING(Resources)", State.PENDING),
        ("", State.UNKNOWN), (None, State.UNKNOWN), ("WEIRD_NEW_STATE", State.UNKNOWN), ("???", State.UNKNOWN),
    ],
)
def test_slurm_states(raw, state):
    assert normalise_slurm(raw) is state
    assert normalise(raw, "slurm") is state


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("RUNNING", State.RUNNING), ("FINISHED", State.COMPLETED), ("INTERRUPTED", State.CANCELLED),
        ("NO PROCESS AND NO RESULT", State.UNKNOWN), ("QUEUED", State.PENDING), ("DONE", State.COMPLETED),
        ("CANCELLED", State.CANCELLED), ("UNKNOWN", State.UNKNOWN), ("COMPLETED", State.COMPLETED),
    ],
)
def test_submitit_states(raw, state):
    assert normalise(raw, "local") is state
    assert normalise(raw, "debug") is state


def test_state_sets_partition_the_states():
    assert TERMINAL | ACTIVE == set(State) and not TERMINAL & ACTIVE
    assert is_terminal("COMPLETED") and not is_terminal(State.PREEMPTED)
    assert str(State.RUNNING) == "RUNNING" and f"{State.FAILED}" == "FAILED"


def test_clean_raw():
    assert clean_raw("CANCELLED by 0") == "CANCELLED"
    assert clean_raw("OUT_OF_MEMORY+") == "OUT_OF_MEMORY"
    assert clean_raw(None) == ""


def test_pending_reasons_are_explained():
    assert "resources" in explain_reason("Resources")
    assert "array_parallelism" in explain_reason("JobArrayTaskLimit")
    assert "timeout_min" in explain_reason("PartitionTimeLimit")
    assert explain_reason("None") == "" and explain_reason(None) == ""
    assert explain_reason("SomethingNew") == "SomethingNew"
    assert explain_reason("(ReqNodeNotAvail, UnavailableNodes:n1)").startswith("a requested node")


def test_outcome_records(tmp_path):
    ok = write_outcome(tmp_path / "1_outcome.json", "success", value={"shard": tmp_path / "a.json", "n": 3})
    bad = write_outcome(tmp_path / "2_outcome.json", "error", trace="Traceback...\nValueError: nope\n")
    junk = tmp_path / "3_outcome.json"
    junk.write_bytes(b"\x80\x05garbage")
    foreign = tmp_path / "4_outcome.json"
    foreign.write_text(json.dumps({"status": "success"}))
    assert read_outcome(ok).status == "success" and read_outcome(ok).outputs == {"shard": str(tmp_path / "a.json"), "n": 3}
    assert read_outcome(bad).status == "error" and read_outcome(bad).error == "ValueError: nope"
    assert "nope" in read_outcome(bad).traceback
    assert read_outcome(junk).status == "unreadable" and str(junk) in read_outcome(junk).error
    assert read_outcome(foreign).status == "unreadable" and "not an fmb-job-outcome record" in read_outcome(foreign).error
    assert read_outcome(tmp_path / "missing.json") is None and read_outcome(None) is None
    assert derive_debug(ok).state is State.COMPLETED
    failed = derive_debug(bad)
    assert failed.state is State.FAILED and failed.error == "ValueError: nope"
    assert derive_debug(junk).state is State.FAILED
    assert derive_debug(tmp_path / "missing.json").state is State.UNKNOWN


def test_local_state_from_pid_and_files(tmp_path):
    folder = tmp_path / "jobs" / "run"
    folder.mkdir(parents=True)
    result = folder / "1_outcome.json"
    # a live process whose command line names the folder -> RUNNING
    proc = subprocess.Popen([sys.executable, "-c", "import time,sys; time.sleep(30)", str(folder)])
    try:
        deadline = time.monotonic() + 20  # until the child has exec'd, its command line is pytest's
        while not pid_alive(proc.pid, must_contain=str(folder)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_alive(proc.pid, must_contain=str(folder))
        assert not pid_alive(proc.pid, must_contain="some/other/folder")  # PID reuse guard
        assert derive_local(proc.pid, str(folder), str(result)).state is State.RUNNING
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)
    gone = derive_local(proc.pid, str(folder), str(result))
    assert gone.state is State.FAILED and "without writing its outcome record" in gone.error
    assert derive_local(proc.pid, str(folder), str(result), cancel_requested=True).state is State.CANCELLED
    attached = derive_local(proc.pid, str(folder), str(result), attached=True, pickle_note="only in a pickle")
    assert attached.state is State.UNKNOWN and "only in a pickle" in attached.error
    write_outcome(result, "success", value=3)
    assert derive_local(proc.pid, str(folder), str(result)).state is State.COMPLETED
    assert derive_local("not-a-pid", str(folder), str(result)).state is State.COMPLETED
    assert pid_alive(os.getpid())


def test_zombie_counts_as_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(100):  # wait until it has exited but is not reaped (a zombie)
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                break
        import time

        time.sleep(0.02)
    assert not pid_alive(proc.pid)
    proc.wait()
