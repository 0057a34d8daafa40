"""squeue/sacct parsing and the batched poll, against fake SLURM commands put on PATH.

The fakes are tiny Python scripts written to a temporary bin/ folder. Each prints
what the test scripted for it (stdout, stderr, exit code, delay) and logs its argv,
so the tests see exactly which commands the engine runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest

from fmb_engine.jobs import JobsError, slurm
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State

FAKE = """#!{python}
import json, os, sys, time
name = os.path.basename(sys.argv[0])
state_dir = os.environ["FAKE_SLURM_DIR"]
with open(os.path.join(state_dir, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps([name] + sys.argv[1:]) + "\\n")
spec = {{}}
path = os.path.join(state_dir, name + ".json")
if os.path.exists(path):
    with open(path) as fh:
        spec = json.load(fh)
if name == "sbatch" and not spec:
    counter = os.path.join(state_dir, "next_id")
    n = int(open(counter).read()) if os.path.exists(counter) else 42
    open(counter, "w").write(str(n + 1))
    spec = {{"stdout": "Submitted batch job %d\\n" % n}}
time.sleep(spec.get("sleep", 0))
sys.stdout.write(spec.get("stdout", ""))
sys.stderr.write(spec.get("stderr", ""))
sys.exit(spec.get("rc", 0))
"""


class FakeSlurm:
    def __init__(self, root: Path):
        self.dir = root / "fake-slurm"
        self.bin = root / "fake-bin"
        self.dir.mkdir()
        self.bin.mkdir()
        for name in ("sbatch", "srun", "squeue", "sacct", "scancel", "sinfo"):
            script = self.bin / name
            script.write_text(FAKE.format(python=sys.executable))
            script.chmod(0o755)

    def script(self, name: str, stdout: str = "", stderr: str = "", rc: int = 0, sleep: float = 0.0) -> None:
        (self.dir / f"{name}.json").write_text(json.dumps({"stdout": stdout, "stderr": stderr, "rc": rc, "sleep": sleep}))

    def calls(self, name: str | None = None) -> list[list[str]]:
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [c for c in calls if name is None or c[0] == name]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSlurm:
    fake = FakeSlurm(tmp_path)
    monkeypatch.setenv("FAKE_SLURM_DIR", str(fake.dir))
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    return fake


def sq(*rows: str) -> str:
    return "".join(r + "\n" for r in rows)


# --- pure parsing ---------------------------------------------------------------------------


def test_expand_job_ids():
    assert slurm.expand_job_id("123") == ["123"]
    assert slurm.expand_job_id("123_4") == ["123_4"]
    assert slurm.expand_job_id("5_[2-3%2]") == ["5_2", "5_3"]
    assert slurm.expand_job_id("7_[0,4-5]") == ["7_0", "7_4", "7_5"]
    for junk in ("", "abc", "12_", "5_[3-1]", "5_[a-b]", "5_[1-2", "123.batch"):
        assert slurm.expand_job_id(junk) == []


def test_parse_squeue_odd_states_and_garbled_lines():
    text = sq(
        "42_0|42|0|RUNNING|2026-11-28T09:12:14|2026-11-28T09:12:15|node01|None",
        "42_[1-2%1]|42|1-2%1|PENDING|2026-11-28T09:12:14|N/A||JobArrayTaskLimit",
        "43|43|N/A|COMPLETING|2026-11-28T09:12:14|2026-11-28T09:12:15|node02|None",
        "44|44|N/A|CONFIGURING|2026-11-28T09:12:14|N/A|node03|None",
        "45|45|N/A|PENDING|2026-11-28T09:12:14|N/A||ReqNodeNotAvail, UnavailableNodes:n[1-3]|extra",
        "garbage without delimiters",
        "x_y|x|y|RUNNING|a|b|c|d",
        "46|46|N/A|BRAND_NEW_STATE|N/A|N/A||None",
        "",
    )
    rows, problems = slurm.parse_squeue(text)
    assert rows["42_0"].state is State.RUNNING and rows["42_0"].node == "node01" and rows["42_0"].reason is None
    assert rows["42_0"].started == time.mktime(dt.datetime(2026, 11, 28, 9, 12, 15).timetuple())
    assert rows["42_1"].state is State.PENDING and rows["42_2"].reason == "JobArrayTaskLimit"
    assert rows["43"].state is State.RUNNING and rows["44"].state is State.PENDING
    assert rows["45"].reason == "ReqNodeNotAvail, UnavailableNodes:n[1-3]|extra"  # reason keeps the rest
    assert rows["46"].state is State.UNKNOWN
    assert len(problems) == 3
    assert "line 6 skipped" in problems[0] and "unreadable job id 'x_y'" in problems[1]
    assert "unknown state 'BRAND_NEW_STATE'" in problems[2]


def test_parse_sacct_variants():
    text = sq(
        "50|50|CANCELLED by 0|0:15|2026-11-28T09:00:00|2026-11-28T09:00:01|2026-11-28T09:00:09|n1|None",
        "51_0|52|COMPLETED|0:0|2026-11-28T09:00:00|2026-11-28T09:00:01|2026-11-28T09:00:02|n1|None",
        "51_[1-2%2]|51|CANCELLED by 1000|0:0|2026-11-28T09:00:00|Unknown|2026-11-28T09:00:03|None assigned|None",
        "53|53|OUT_OF_MEMORY|0:125|2026-11-28T09:00:00|2026-11-28T09:00:01|2026-11-28T09:00:04|n1|None",
        "54|54|NODE_FAIL|1:0|2026-11-28T09:00:00|2026-11-28T09:00:01|2026-11-28T09:00:04|n1|None",
        "55|55|TIMEOUT|0:0|2026-11-28T09:00:00|2026-11-28T09:00:01|2026-11-28T09:01:01|n1|None",
        "56|56|REQUEUED|0:0|2026-11-20T09:00:00|2026-11-20T09:00:01|2026-11-20T09:01:01|n1|None",
        "56|56|RUNNING|0:0|2026-11-28T09:00:00|2026-11-28T09:00:01|Unknown|n2|None",  # latest submission wins
        "57.batch|57.batch|COMPLETED|0:0|x|x|x|n1|None",  # a step: ignored
        "58|58|DEADLINE|0:0|2026-11-28T09:00:00|N/A|N/A|n1|Reason|with|pipes",  # a reason with delimiters
        "59|59|FAILED",  # too few fields
    )
    rows, problems = slurm.parse_sacct(text)
    assert rows["50"].state is State.CANCELLED and rows["50"].exit_code == "0:15"
    assert rows["51_0"].state is State.COMPLETED
    assert rows["51_1"].state is rows["51_2"].state is State.CANCELLED and rows["51_1"].node is None
    assert rows["51_1"].started is None
    assert rows["53"].state is State.OUT_OF_MEMORY and rows["54"].state is State.FAILED
    assert rows["55"].state is State.TIMEOUT
    assert rows["56"].state is State.RUNNING and rows["56"].node == "n2"
    assert "57" not in rows and "57.batch" not in rows
    assert rows["58"].reason == "Reason|with|pipes" and rows["58"].state is State.TIMEOUT
    assert "59" not in rows and len(problems) == 1 and "sacct line 11 skipped" in problems[0]


def test_commands_are_argument_lists_with_explicit_formats():
    cmd = slurm.squeue_command(["42_0", "42_1", "7"])
    assert cmd[:2] == ["squeue", "--noheader"] and "--array" in cmd and cmd[-2:] == ["-j", "7,42"]
    assert cmd[cmd.index("-o") + 1] == "%i|%A|%K|%T|%V|%S|%N|%r"
    cmd = slurm.sacct_command(["42_0", "9"], dt.date(2026, 11, 27))
    assert "--parsable2" in cmd and "--noheader" in cmd and "-X" in cmd
    assert cmd[cmd.index("-S") + 1] == "2026-11-27" and cmd[-1] == "9,42"
    assert any(a.startswith("--format=JobID,JobIDRaw,State,ExitCode") for a in cmd)
    assert slurm.base_ids(["1; rm -rf /", "12", "DEBUG_1"]) == ["12"]  # nothing odd reaches a command


# --- the poll against fake commands ---------------------------------------------------------


def test_poll_merges_squeue_and_sacct(fake):
    fake.script("squeue", sq(
        "42_0|42|0|RUNNING|2026-11-28T09:12:14|2026-11-28T09:12:15|vm|None",
        "42_1|42|1|PENDING|2026-11-28T09:12:14|N/A||Resources",
        "42_2|42|2|COMPLETED|2026-11-28T09:12:14|2026-11-28T09:12:15|vm|None",
        "this line is garbled",
    ))
    fake.script("sacct", sq(
        "42_2|44|COMPLETED|0:0|2026-11-28T09:12:14|2026-11-28T09:12:15|2026-11-28T09:12:17|vm|None",
        "43|43|CANCELLED by 0|0:0|2026-11-28T09:12:14|2026-11-28T09:12:15|2026-11-28T09:12:16|vm|None",
    ))
    submitted = {j: time.mktime(dt.datetime(2026, 11, 28, 9, 12, 14).timetuple()) for j in ("42_0", "42_1", "42_2", "43")}
    result = slurm.poll(["42_0", "42_1", "42_2", "43", "DEBUG_9"], submitted)
    assert result.rows["42_0"].state is State.RUNNING
    assert result.rows["42_1"].reason == "Resources"
    assert result.rows["42_2"].state is State.COMPLETED and result.rows["42_2"].exit_code == "0:0"
    assert result.rows["43"].state is State.CANCELLED and result.rows["43"].source == "sacct"
    assert any("garbled" in p for p in result.problems) and any("DEBUG_9" in p for p in result.problems)
    (squeue_call,) = fake.calls("squeue")
    (sacct_call,) = fake.calls("sacct")
    assert squeue_call[-1] == "42,43"
    assert sacct_call[sacct_call.index("-S") + 1] == "2026-11-28"  # the submit day (minus clock skew)
    assert sacct_call[-1] == "42,43"  # only jobs squeue no longer shows active


def test_poll_skips_sacct_when_everything_is_live(fake):
    fake.script("squeue", sq("7|7|N/A|RUNNING|N/A|N/A|vm|None"))
    result = slurm.poll(["7"])
    assert result.rows["7"].state is State.RUNNING and fake.calls("sacct") == []


def test_poll_unknown_ids_accounting_off_and_timeouts(fake):
    fake.script("squeue", stderr="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    fake.script("sacct", stderr="Slurm accounting storage is disabled\n", rc=1)
    result = slurm.poll(["99"])
    assert result.rows == {} and not result.sacct_available
    assert result.problems == [
        "sacct: accounting storage is disabled here; final states come from squeue (for MinJobAge) "
        "and the jobs' result files"
    ]
    fake.script("squeue", stderr="slurm_load_jobs error: Unable to contact slurm controller\n", rc=1)
    fake.script("sacct", sleep=5)
    result = slurm.poll(["99"], timeout_s=0.5)
    assert any("Unable to contact" in p for p in result.problems)
    assert any("did not answer within" in p for p in result.problems)


def test_poll_ignores_an_older_job_with_a_reused_id(fake):
    fake.script("squeue", "")
    fake.script("sacct", sq("77|77|COMPLETED|0:0|2026-11-01T09:00:00|2026-11-01T09:00:01|2026-11-01T09:00:02|vm|None"))
    ours = time.mktime(dt.datetime(2026, 11, 28, 9, 0, 0).timetuple())
    result = slurm.poll(["77"], {"77": ours})
    assert "77" not in result.rows and any("reused id 77" in p for p in result.problems)


def test_missing_commands_and_scancel(fake, monkeypatch):
    assert slurm.missing_commands() == []
    assert slurm.scancel(["42_1", "43", "1;reboot"]) == ["not a SLURM job id, not cancelled: '1;reboot'"]
    assert fake.calls("scancel") == [["scancel", "42_1", "43"]]
    fake.script("scancel", stderr="scancel: error: Kill job error on job id 43: Invalid job id specified\n", rc=1)
    assert "Invalid job id" in slurm.scancel(["43"])[0]
    monkeypatch.setenv("PATH", str(fake.dir))  # no commands at all
    assert slurm.missing_commands(("sbatch", "srun")) == ["sbatch", "srun"]
    assert slurm.poll(["1"]).problems[0] == "squeue is not on PATH"
    assert slurm.sinfo_responds()[0] is False


# --- submission and refresh through the fakes --------------------------------------------------


def test_submit_array_refresh_and_cancel_with_fake_slurm(fake, workspace):
    from fmb_engine.jobs import monitor, selftest, submission
    from fmb_engine.jobs.config import JobsConfig

    cfg = JobsConfig(partition="gpu", account="proj", mem_gb=2, setup=["module load cuda"], array_parallelism=2)
    sub = submission.submit_array(workspace, "embed.pca", selftest.write_shard, [("/x", i, 3) for i in range(3)],
                                  executor="slurm", jobs=cfg, snapshot={"values": {"model": "pca"}})
    assert sub.job_ids == ["42_0", "42_1", "42_2"] and sub.executor == "slurm"
    (sbatch,) = fake.calls("sbatch")
    script = Path(sbatch[1]).read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --mem=2GB",
                 "module load cuda", sys.executable):
        assert line in script
    assert str(workspace.folder("jobs")) in script and "--gpus-per-node" not in script
    with open_registry(workspace) as reg:
        run = reg.run(sub.run_id)
        assert run.config["stage"] == {"values": {"model": "pca"}} and run.config["jobs"]["partition"] == "gpu"
        assert [j.state for j in reg.jobs(sub.run_id)] == [State.PENDING] * 3

    fake.script("squeue", sq(
        "42_0|42|0|RUNNING|N/A|2026-11-28T09:12:15|vm|None",
        "42_1|42|1|PENDING|N/A|N/A||JobArrayTaskLimit",
        "42_2|42|2|PENDING|N/A|N/A||JobArrayTaskLimit",
    ))
    report = monitor.refresh(workspace)
    assert report.polled == 3 and report.changed == 3 and report.problems == []
    with open_registry(workspace) as reg:
        jobs = reg.jobs(sub.run_id)
        assert [j.state for j in jobs] == [State.RUNNING, State.PENDING, State.PENDING]
        assert jobs[1].reason == "JobArrayTaskLimit" and jobs[0].node == "vm"

    messages = submission.cancel(workspace, "42")
    assert fake.calls("scancel") == [["scancel", "42_0", "42_1", "42_2"]] and "scancel sent for 3" in messages[0]
    fake.script("squeue", "")
    fake.script("sacct", sq(*(f"42_{i}|4{i}|CANCELLED by 0|0:0|N/A|N/A|N/A|vm|None" for i in range(3))))
    monitor.refresh(workspace)
    with open_registry(workspace) as reg:
        jobs = reg.jobs(sub.run_id)
        assert {j.state for j in jobs} == {State.CANCELLED} and all(j.cancel_requested for j in jobs)
        assert reg.active_jobs() == []

    # a vanished job becomes UNKNOWN only after the grace period
    sub2 = submission.submit(workspace, "detect", selftest.sleep_then, 1, executor="slurm", jobs=cfg)
    fake.script("sacct", "")
    monitor.refresh(workspace)
    with open_registry(workspace) as reg:
        assert reg.jobs(sub2.run_id)[0].state is State.PENDING
    monitor.refresh(workspace, now=time.time() + 3600)
    with open_registry(workspace) as reg:
        job = reg.jobs(sub2.run_id)[0]
        assert job.state is State.UNKNOWN and "not known to squeue or sacct" in job.error


def test_rejected_sbatch_records_nothing(fake, workspace):
    from fmb_engine.jobs import selftest, submission
    from fmb_engine.jobs.config import JobsConfig

    fake.script("sbatch", stderr="sbatch: error: invalid partition specified: nope\n"
                "sbatch: error: Batch job submission failed: Invalid partition name specified\n", rc=1)
    with pytest.raises(JobsError, match="invalid partition specified: nope") as err:
        submission.submit_array(workspace, "embed", selftest.write_shard, [("/x", 0, 1), ("/x", 1, 1)],
                                executor="slurm", jobs=JobsConfig(partition="nope"))
    assert "nothing was submitted or recorded" in str(err.value)
    with open_registry(workspace) as reg:
        assert reg.runs() == []
    assert [p.name for p in workspace.folder("jobs").iterdir()] == ["registry.sqlite"] or not any(
        p.is_dir() for p in workspace.folder("jobs").iterdir())


def test_sbatch_templates_are_generic_and_valid_bash():
    import subprocess

    folder = Path(__file__).resolve().parents[3] / "slurm"
    templates = sorted(folder.glob("*.sbatch"))
    assert {t.name for t in templates} >= {"embed.sbatch", "detect.sbatch", "mock.sbatch"}
    for template in templates:
        text = template.read_text()
        subprocess.run(["bash", "-n", str(template)], check=True)
        directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        for site_specific in ("--partition", "--account", "--qos", "--nodelist", "--constraint", "--reservation"):
            assert not any(site_specific in d for d in directives), f"{template.name}: {site_specific} is site-specific"
        assert "FMB_WORKSPACE" in text.split("\n#SBATCH", 1)[0]  # placeholders documented at the top
        assert "fmb-engine " in text


def test_sbatch_templates_run_commands_that_exist():
    """Every `fmb-engine GROUP COMMAND` a template runs is a real command (a renamed one fails here)."""
    import re

    from typer.testing import CliRunner

    from fmb_engine.cli.main import app

    folder = Path(__file__).resolve().parents[3] / "slurm"
    runner = CliRunner()
    tasks = {"$FMB_TASK": "astropt"}  # the variable holds one of the retrain tasks
    for template in sorted(folder.glob("*.sbatch")):
        body = template.read_text().split("set -euo pipefail", 1)[1]
        for words in re.findall(r"^\s*(?:srun )?fmb-engine ([^\n]*)", body, flags=re.M):
            argv = [tasks.get(w.strip('"'), w) for w in words.split() if not w.startswith(("-", '"$', "$"))
                    or w.strip('"') in tasks][:2]
            result = runner.invoke(app, [*argv, "--help"])
            assert result.exit_code == 0, f"{template.name}: `fmb-engine {' '.join(argv)}` is not a command"
