"""No option is silently ignored by an executor: each is either carried into the submitted job or refused.

Every command that takes ``--executor`` is covered option by option (a new option without
an entry here fails :func:`test_every_option_is_covered`). Submissions are captured
instead of run: what matters is what the job would be given.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fmb_engine.cli.main import app, main
from fmb_engine.jobs import chain, selftest, submission
from fmb_engine.jobs import stages as job_stages
from fmb_engine.jobs.submission import Submission

#: Options every submitting command shares and that are not about the stage.
COMMON = {"--workspace", "--config", "--executor", "--help"}
RETRAIN = "astropt"


def _record(stage: str, args: tuple, kwargs: dict) -> dict:
    """What a stage job gets: its config values, survey, and plain arguments."""
    return {"stage": stage, "args": args, "values": (kwargs.get("snapshot") or {}).get("values", {}),
            "executor": kwargs.get("executor")}


@pytest.fixture
def captured(monkeypatch):
    """Submissions are recorded, not run."""
    seen: list[dict] = []

    def fake_submit(ws, stage, fn, *args, **kwargs):
        seen.append(_record(stage, args, kwargs) | {"tasks": [args]})
        return Submission("run-x", stage, kwargs.get("executor") or "local", Path("."), [])

    def fake_array(ws, stage, fn, tasks, **kwargs):
        seen.append(_record(stage, (), kwargs) | {"tasks": list(tasks)})
        return Submission("run-x", stage, kwargs.get("executor") or "local", Path("."), [])

    def fake_sharded(ws, resolved, parts, shards, executor, jobs=None, survey=None):
        seen.append({"stage": "detect.sharded", "args": (parts, shards), "executor": executor,
                     "values": resolved.values.model_dump(mode="json"), "tasks": [None] * shards})
        return Submission("run-x", "detect.sharded", executor or "local", Path("."), [])

    monkeypatch.setattr(chain, "submit_sharded_detect", fake_sharded)
    monkeypatch.setattr(job_stages, "submit", fake_submit)
    monkeypatch.setattr(job_stages, "submit_array", fake_array)
    monkeypatch.setattr(submission, "submit_array", fake_array)
    return seen


@pytest.fixture
def ws(workspace, small_survey):
    shutil.copy(small_survey, workspace.folder("survey") / "mock.h5")
    shutil.copy(small_survey, workspace.folder("survey") / "other.h5")
    return workspace


def run(ws, *argv: str):
    return CliRunner().invoke(app, [*argv, "--workspace", str(ws.root)])


def words(output: str) -> str:
    """The text of a usage error without the frame Typer draws around it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


# (command, option) -> (extra argv, check of the captured submission) or the word "refused"
def _values(**expected):
    return lambda sub: all(sub["values"].get(k) == v for k, v in expected.items())


EMBED = {
    "--survey": (["--survey", "other"], lambda sub: sub["tasks"][0][1].endswith("other.h5")),
    "--batch-size": (["--batch-size", "7"], _values(batch_size=7)),
    "--device": (["--device", "cpu"], _values(device="cpu")),
    "--weights": (["--weights", "/some/weights"], _values(weights="/some/weights")),
    "--force": (["--force"], lambda sub: sub["discarded"]),
    "--shards": (["--shards", "3"], lambda sub: len(sub["tasks"]) == 3),
    "--start": (["--start", "5"], "refused"),
    "--stop": (["--stop", "9"], "refused"),
    "--shard-size": (["--shard-size", "16"], "refused"),
    "--fit-from": (["--fit-from", "embeddings/pca.h5"], "refused"),
}
DETECT = {
    "--model": (["--model", "pca"], _values(models=["pca"])),
    "--preset": (["--preset", "paper"], _values(preset="paper")),
    "--seed": (["--seed", "5"], _values(seed=5)),
    "--fusion": (["--fusion", "min"], _values(fusion="min")),
    "--top-k": (["--top-k", "7"], _values(top_k=7)),
    "--out-of-fold": (["--out-of-fold", "3"], _values(out_of_fold=3)),
    "--n-jobs": (["--n-jobs", "2"], _values(n_jobs=2)),
    "--shards": (["--shards", "3", "--seed", "4"], lambda sub: sub["stage"] == "detect.sharded"
                 and len(sub["tasks"]) == 3 and sub["values"]["seed"] == 4),
    # how the submission is printed (its JSON: tests/engine/cli/test_output.py); the job is submitted as without it
    "--format": (["--format", "json"], lambda sub: sub["stage"].startswith("detect")),
}
RETRAIN_OPTS = {
    "--survey": (["--survey", "other"], lambda sub: sub["args"][1].endswith("other.h5")),
    "--steps": (["--steps", "3"], _values(steps=3)),
    "--batch-size": (["--batch-size", "4"], _values(batch_size=4)),
    "--lr": (["--lr", "0.5"], _values(lr=0.5)),
    "--device": (["--device", "cpu"], _values(device="cpu")),
    "--weights": (["--weights", "/w"], _values(weights="/w")),
    "--output": (["--output", "/o"], _values(output="/o")),
    "--seed": (["--seed", "3"], _values(seed=3)),
    "--fresh": (["--fresh"], lambda sub: sub["args"][-1] is False),  # resume=False
}
SELFTEST = {
    "--shards": (["--shards", "2", "--no-wait"], lambda sub: len(sub["tasks"]) == 2),
    "--wait": (["--no-wait"], lambda sub: True),  # returned without waiting (a wait would poll the fake run)
    "--timeout": (["--timeout", "5", "--no-wait"], "refused"),
}
COMMANDS = {
    ("embed", "pca"): EMBED,
    ("detect", "all"): DETECT,
    ("retrain", RETRAIN): RETRAIN_OPTS,
    ("jobs", "selftest"): SELFTEST,
}
CASES = [(cmd, opt, *spec) for cmd, table in COMMANDS.items() for opt, spec in table.items()]


def test_every_option_is_covered():
    root = typer.main.get_command(app)
    for (group, name), table in COMMANDS.items():
        command = root.commands[group].commands[name]
        longs = {max(p.opts, key=len) for p in command.params if getattr(p, "param_type_name", "") == "option"}
        assert longs - COMMON == set(table), f"{group} {name}: options without a test entry"


@pytest.mark.parametrize("executor", ["local", "slurm", "debug"])
@pytest.mark.parametrize(("command", "option", "argv", "check"), CASES,
                         ids=[f"{' '.join(c[0])} {c[1]}" for c in CASES])
def test_option_is_carried_or_refused(ws, captured, monkeypatch, executor, command, option, argv, check):
    discarded = []
    monkeypatch.setattr("fmb_engine.embed.shards.discard", lambda *a, **k: discarded.append(a))
    result = run(ws, *command, *argv, "--executor", executor)
    if check == "refused":
        assert result.exit_code == 2, result.output
        said = words(result.output)
        assert option in said and ("--executor" in said or "--no-wait" in said)
        if option != "--timeout":
            assert f"ignored by --executor {executor}" in said
        assert captured == [] and discarded == []
        return
    assert result.exit_code == 0, result.output
    (sub,) = captured
    sub["discarded"] = bool(discarded)
    assert check(sub), (option, sub)


def test_refused_options_are_named_together(ws, captured):
    result = run(ws, "embed", "pca", "--shard-size", "8", "--fit-from", "x.h5", "-x", "slurm")
    said = words(result.output)
    assert result.exit_code == 2 and "--shard-size, --fit-from are ignored by --executor slurm" in said


def test_submit_only_options_need_an_executor(ws, captured):
    result = run(ws, "embed", "pca", "--shards", "2")
    assert result.exit_code == 2
    assert "--shards only applies with --executor" in words(result.output)


# --- jobs settings from config files ------------------------------------------------------------


def _main(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out = capsys.readouterr()
    return done.value.code, " ".join((out.out + out.err).split())


@pytest.mark.parametrize(("executor", "key", "value"), [
    ("local", "partition", "gpu"), ("local", "mem_gb", "8"), ("local", "sbatch_extra", "{mail-type: END}"),
    ("debug", "timeout_min", "30"), ("debug", "python", "/usr/bin/python3"), ("debug", "cpus_per_task", "4"),
])
def test_task_config_settings_an_executor_ignores_are_errors(ws, capsys, tmp_path, executor, key, value):
    task = tmp_path / "task.yaml"
    task.write_text(f"jobs:\n  {key}: {value}\n")
    code, said = _main(capsys, "detect", "all", "-x", executor, "-c", str(task), "-w", str(ws.root))
    assert code == 1 and f"jobs.{key}" in said and str(task) in said and f"ignored by the {executor} executor" in said
    assert not any(ws.folder("jobs").glob("2*"))  # nothing was submitted


def test_workspace_defaults_an_executor_ignores_are_warnings(ws, capsys):
    (ws.root / "fmb.yaml").write_text("general:\n  survey: mock\njobs:\n  partition: gpu\n")
    sub = submission.submit(ws, "selftest", selftest.sleep_then, 0, executor="debug", jobs=submission.jobs_config(ws))
    assert any(n.startswith("warning: jobs.partition = 'gpu'") and "fmb.yaml" in n
               and "ignored by the debug executor" in n for n in sub.notes)


def test_settings_the_executor_uses_pass(ws, capsys, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("jobs:\n  timeout_min: 30\n  gpus_per_node: 0\n  max_num_timeout: 1\n")
    code, said = _main(capsys, "jobs", "selftest", "--shards", "1", "-x", "local", "-c", str(task), "-w", str(ws.root))
    assert code == 0 and "selftest passed" in said, said
