"""`fmb-engine jobs ...`: list, inspect, follow, cancel, resubmit and attach submitted jobs.

Every command that shows states polls SLURM (or the local processes) once first,
so what it prints is current; ``--no-refresh`` shows the registry as it is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.text import Text

from fmb_engine.cli.common import ConfigOpt, Typer, WorkspaceOpt, console, err_console, find_workspace
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, emit_records, notes, pairs, table
from fmb_engine.errors import WorkspaceError
from fmb_engine.jobs import JobsError, monitor
from fmb_engine.jobs.registry import JobRecord, RunRecord, open_registry, run_state
from fmb_engine.jobs.states import COLOURS, State, explain_reason
from fmb_engine.workspace import Workspace

if TYPE_CHECKING:
    from fmb_engine.jobs.submission import Submission

app = Typer(help="Submitted jobs: list, show, logs, cancel, resubmit, attach.", no_args_is_help=True)

#: The `--executor` flag every submitting command shares (lead: reuse it in the stage CLIs).
ExecutorOpt = Annotated[
    str | None,
    typer.Option("--executor", "-x", help="local | slurm | debug | auto (default: config jobs.executor)."),
]


def _given(ctx: typer.Context, name: str) -> str | None:
    """The option's long flag when it was given (command line or environment), else None."""
    source = ctx.get_parameter_source(name)
    if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
        return None
    param = next(p for p in ctx.command.params if p.name == name)
    return max(param.opts, key=len)


def refuse_ignored_options(ctx: typer.Context, executor: str | None, *, in_process_only: tuple[str, ...] = (),
                           submit_only: tuple[str, ...] = (), why: str = "") -> None:
    """Options that the chosen way of running would ignore are usage errors (exit 2), never silence.

    ``in_process_only`` (parameter names) are used only when the stage runs here, without
    ``--executor``; ``submit_only`` only with it. ``why`` says what the executor does instead.
    """
    if executor is not None:
        flags = [f for f in (_given(ctx, n) for n in in_process_only) if f]
        if flags:
            one = len(flags) == 1
            raise typer.BadParameter(
                f"{', '.join(flags)} {'is' if one else 'are'} ignored by --executor {executor}"
                + (f" ({why})" if why else "") + f"; drop {'it' if one else 'them'}, or run without --executor",
                ctx=ctx, param_hint=flags)
    else:
        flags = [f for f in (_given(ctx, n) for n in submit_only) if f]
        if flags:
            raise typer.BadParameter(
                f"{', '.join(flags)} only {'applies' if len(flags) == 1 else 'apply'} with --executor "
                "(without it the stage runs here, in this process)", ctx=ctx, param_hint=flags)


NoRefreshOpt = Annotated[bool, typer.Option("--no-refresh", help="Show the registry as it is, without polling.")]


# --- formatting helpers ---------------------------------------------------------------------


def state_text(state: State | str) -> Text:
    state = State(state)
    return Text(state.value, style=COLOURS[state])


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    lt = time.localtime(ts)
    if time.strftime("%Y-%m-%d", lt) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%Y-%m-%d %H:%M", lt)


def seconds_between(start: float | None, end: float | None) -> int | None:
    """Whole seconds from ``start`` to ``end`` (now when None); None when not started or the clocks disagree."""
    if not start:
        return None
    seconds = int((end or time.time()) - start)
    return seconds if seconds >= 0 else None


def duration_text(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def state_counts(jobs: list[JobRecord]) -> dict[str, int]:
    """Tasks per state, in the states' order, states without tasks left out."""
    return {state.value: n for state in State if (n := sum(1 for j in jobs if j.state is state))}


def counts_text(counts: dict[str, int]) -> Text:
    text = Text()
    for state, n in counts.items():
        if text:
            text.append(" ")
        text.append(f"{n} {state.lower()}", style=COLOURS[State(state)])
    return text


def _registry(ws: Workspace):
    return open_registry(ws)


def _refresh(ws: Workspace, reg, jobs: list[JobRecord] | None = None) -> None:
    report = monitor.refresh(ws, registry=reg, jobs=jobs)
    for problem in report.problems:
        err_console.print(f"[yellow]poll:[/] {escape(problem)}")


# --- commands --------------------------------------------------------------------------------


def _first_ids(ids: list[str]) -> str:
    return escape(", ".join(ids[:3]) + (" ..." if len(ids) > 3 else ""))


#: `jobs list`: one record per run (fields in docs/cli.md).
RUN_COLUMNS = (
    Column("run", no_wrap=True), Column("stage"), Column("executor"), Column("state", cell=state_text),
    Column("tasks", cell=counts_text), Column("job_ids", "job ids", cell=_first_ids, no_wrap=True),
    Column("submitted", cell=when), Column("elapsed_s", "elapsed", cell=duration_text),
)


def run_record(run: RunRecord, jobs: list[JobRecord]) -> dict:
    counts = {s: sum(1 for j in jobs if j.state is s) for s in State}
    ended = max((j.ended or 0 for j in jobs), default=0) or None
    active = any(j.active for j in jobs)
    return {
        "run": run.run_id, "stage": run.stage, "executor": run.executor, "state": run_state(counts).value,
        "tasks": state_counts(jobs), "job_ids": sorted({j.array_job_id or j.job_id for j in jobs}),
        "submitted": run.created, "elapsed_s": seconds_between(run.created, None if active else ended),
    }


@app.command("list")
def list_cmd(
    stage: str = typer.Option(None, "--stage", help="Only runs of this stage."),
    limit: int = typer.Option(30, "--limit", help="Newest N runs (0 = all)."),
    no_refresh: NoRefreshOpt = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Runs, newest first: stage, executor, task states, times."""
    ws = find_workspace(workspace)
    with _registry(ws) as reg:
        if not no_refresh:
            _refresh(ws, reg)
        records = [run_record(run, reg.jobs(run.run_id)) for run in reg.runs(stage=stage, limit=limit or None)]
    emit_records(fmt, records, RUN_COLUMNS, empty="no jobs recorded yet in this workspace",
                 title=f"jobs in {escape(str(ws.root))}")


@app.command()
def show(
    ref: str = typer.Argument(..., metavar="ID", help="Run id (or a unique prefix), job id, or SLURM array id."),
    no_refresh: NoRefreshOpt = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """One run: its settings, folder, and every task with state, reason, exit code and outputs."""
    ws = find_workspace(workspace)
    with _registry(ws) as reg:
        if not no_refresh:
            _refresh(ws, reg, reg.resolve(ref)[1])
        run, jobs = reg.resolve(ref)
        print_run(run, jobs, fmt)


def _outputs_text(outputs: dict) -> str:
    return escape(", ".join(f"{k}={v}" for k, v in outputs.items()) or "-")


#: `jobs show`: one record per task (fields in docs/cli.md).
TASK_COLUMNS = tuple(Column(*args, overflow="fold", **kw) for *args, kw in (  # type: ignore[misc]
    ("task", {}), ("job_id", "job id", {}), ("state", {"cell": state_text}),
    ("detail", "reason / error", {"cell": lambda v: escape(v or "")}), ("exit_code", "exit", {}), ("node", {}),
    ("started", {"cell": when}), ("ran_s", "ran", {"cell": duration_text}), ("outputs", {"cell": _outputs_text}),
))


def task_record(job: JobRecord) -> dict:
    detail = (explain_reason(job.reason) or job.reason) if job.state is State.PENDING else job.error
    return {
        "task": job.task_index, "attempt": job.attempt, "job_id": job.job_id, "state": job.state.value,
        "detail": detail or None, "exit_code": job.exit_code, "node": job.node, "started": job.started,
        "ended": job.ended, "ran_s": seconds_between(job.started, job.ended), "outputs": job.outputs or {},
    }


def print_run(run: RunRecord, jobs: list[JobRecord], fmt: Format = Format.table) -> None:
    """A run and its tasks: JSON object with ``tasks``; CSV one row per task; else settings + task table."""
    params = run.params
    data = {"run": run.run_id, "stage": run.stage, "executor": run.executor, "submitted": run.created,
            "user": run.user, "host": run.host, "folder": run.folder, "parameters": params, "note": run.note or None,
            "tasks": [task_record(job) | ({"phase": phase} if (phase := run.phase_of(job.task_index)) else {})
                      for job in jobs]}

    def shown():
        settings = ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("python",) and v not in (None, "", [], {}))
        rows = [
            ("run", run.run_id), ("stage", run.stage), ("executor", run.executor),
            ("submitted", f"{when(run.created)} by {run.user or '?'} on {run.host or '?'}"),
            ("folder", run.folder), ("python", str(params.get("python", "-"))), ("parameters", settings or "-"),
        ]
        if run.note:
            rows.append(("note", run.note))
        tasks = [{**t, "task": f"{t['task']}" + (f" {t['phase']}" if t.get("phase") else "")
                  + (f" (try {t['attempt']})" if t["attempt"] > 1 else "")} for t in data["tasks"]]
        return [pairs(rows), table(tasks, TASK_COLUMNS)]

    emit(fmt, data, shown, rows=[{"run": run.run_id, **t} for t in data["tasks"]])


def _one_job(jobs: list[JobRecord], task: int | None, ref: str) -> JobRecord:
    if task is not None:
        for job in jobs:
            if job.task_index == task:
                return job
        raise JobsError(f"{ref} has no task {task} (tasks: {', '.join(str(j.task_index) for j in jobs)})")
    if len(jobs) == 1:
        return jobs[0]
    raise JobsError(f"{ref} has {len(jobs)} tasks; pick one with --task N "
                    f"({', '.join(str(j.task_index) for j in jobs[:20])}) or give the task's job id")


@app.command()
def logs(
    ref: str = typer.Argument(..., metavar="ID", help="Job id (123 or 123_4), or a run id with --task."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the job ends (polls)."),
    stderr: bool = typer.Option(False, "--stderr", "-e", help="The error stream instead of stdout."),
    task: int = typer.Option(None, "--task", help="Task index within a run or array."),
    tail: int = typer.Option(None, "--tail", help="Start from the last N lines."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between file checks while following."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a job's stdout (or stderr); --follow keeps reading by polling (NFS-safe)."""
    ws = find_workspace(workspace)
    with _registry(ws) as reg:
        _, jobs = reg.resolve(ref)
        job = _one_job(jobs, task, ref)
    stop = monitor.stop_when_terminal(ws, job) if follow else None
    try:
        for chunk in monitor.logs(job, follow=follow, stderr=stderr, tail=tail, poll_s=poll, should_stop=stop):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@app.command()
def cancel(
    ref: str = typer.Argument(..., metavar="ID", help="Run id, job id or array id: its active jobs are cancelled."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Cancel active jobs (scancel for SLURM, SIGINT to the controller for local jobs)."""
    from fmb_engine.jobs import submission as jobs_submission

    ws = find_workspace(workspace)
    for line in jobs_submission.cancel(ws, ref):
        console.print(escape(line))
    with _registry(ws) as reg:
        run, jobs = reg.resolve(ref)
        console.print(f"{escape(run.run_id)}: ", counts_text(state_counts(jobs)))


@app.command()
def resubmit(
    ref: str = typer.Argument(..., metavar="ID", help="Run id, job id or array id."),
    executor: ExecutorOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Submit again only the tasks that failed or are missing (completed and active ones are kept)."""
    from fmb_engine.jobs import submission as jobs_submission

    ws = find_workspace(workspace)
    sub = jobs_submission.resubmit(ws, ref, executor=executor, jobs=jobs_submission.jobs_config(ws, config))
    for note in sub.notes:
        console.print(escape(note))
    console.print(f"run [bold]{escape(sub.run_id)}[/]: " + ", ".join(escape(j) for j in sub.job_ids))


@app.command()
def attach(
    folder: Path = typer.Argument(..., help="The job's submitit folder."),
    job_id: str = typer.Argument(..., help="Job id, array task (123_4) or array id (123: all its tasks)."),
    executor: str = typer.Option(None, "--executor", "-x", help="slurm or local (default: guessed from the folder)."),
    stage: str = typer.Option("attached", "--stage", help="Stage name to record."),
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a job submitted with submitit elsewhere, so list/show/logs/cancel work on it."""
    from fmb_engine.jobs import submission as jobs_submission

    ws = find_workspace(workspace)
    run, jobs = jobs_submission.attach(ws, folder, job_id, executor=executor, stage=stage)
    console.print(f"attached as run [bold]{escape(run.run_id)}[/] ({run.executor}): ", counts_text(state_counts(jobs)))


@app.command()
def refresh(workspace: WorkspaceOpt = None) -> None:
    """Poll once for every unfinished job and update the registry."""
    ws = find_workspace(workspace)
    with _registry(ws) as reg:
        report = monitor.refresh(ws, registry=reg)
    for problem in report.problems:
        err_console.print(f"[yellow]poll:[/] {escape(problem)}")
    console.print(f"polled {report.polled} job(s) in {report.seconds:.2f}s; {report.changed} changed")


@app.command()
def executors(workspace: WorkspaceOpt = None, config: ConfigOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Which executors work here, and which one `--executor` would pick by default."""
    from fmb_engine.jobs import submission as jobs_submission
    from fmb_engine.jobs.config import JobsConfig
    from fmb_engine.jobs.executors import KINDS, choose_executor

    ws = None
    try:
        ws = find_workspace(workspace)
    except WorkspaceError:  # works outside a workspace too
        ws = None
    resolved = jobs_submission.jobs_config(ws, config)
    cfg: JobsConfig = resolved.values  # type: ignore[assignment]
    records = []
    for kind in KINDS.values():
        said = kind.availability()
        records.append({"executor": kind.name, "available": said.state == "available", "state": said.state,
                        "note": said.detail})
    try:
        choice = choose_executor(None, cfg, resolved.sources.get("executor", "default"))
        default = {"executor": choice.name, "note": choice.note, "error": None}
    except JobsError as exc:
        default = {"executor": None, "note": None, "error": str(exc)}
    data = {"executors": records, "default": default}

    def shown():
        rows = [(r["executor"], availability_text(r["state"], r["note"])) for r in records]
        rows.append(("default", Text(default["error"], style="red") if default["error"] else default["note"]))
        return [pairs(rows)]

    emit(fmt, data, shown, rows=records)


def availability_text(state: str, detail: str) -> Text:
    """One executor's line in `jobs executors`: its state (coloured unless available) and why."""
    if state == "available":
        return Text(f"available ({detail})")
    return Text(f"{state}: {detail}", style="red" if state == "unavailable" else "yellow")


def print_submission(sub: Submission, fmt: Format = Format.table) -> None:
    """What a submitting command prints: executor notes, run id, job ids, how to follow; with ``--format``
    json|csv the object ``{run, stage, executor, job_ids, notes}`` (notes also on stderr)."""
    for note in sub.notes:
        notes(fmt).print(escape(note))
    data = {"run": sub.run_id, "stage": sub.stage, "executor": sub.executor, "job_ids": list(sub.job_ids),
            "notes": list(sub.notes)}
    emit(fmt, data, lambda: [
        f"run [bold]{escape(sub.run_id)}[/]: {len(sub.job_ids)} task(s) " + escape(", ".join(sub.job_ids[:5])),
        f"follow with: fmb-engine jobs show {escape(sub.run_id)}   (or fmb-engine jobs list)"])


@app.command()
def selftest(
    ctx: typer.Context,
    shards: int = typer.Option(3, "--shards", min=1, max=1000, help="Array tasks to submit."),
    executor: ExecutorOpt = None,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the tasks and check their files."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Submit a tiny job array (one file per shard) to check that the executor works here."""
    from fmb_engine.jobs import submission as jobs_submission
    from fmb_engine.jobs.selftest import write_shard

    if not wait and (flag := _given(ctx, "timeout")):
        raise typer.BadParameter(f"{flag} is ignored with --no-wait (nothing waits); drop one of them", ctx=ctx,
                                 param_hint=flag)

    ws = find_workspace(workspace)
    out = ws.folder("jobs") / "selftest-output" / time.strftime("%Y%m%dT%H%M%S")
    sub = jobs_submission.submit_array(ws, "selftest", write_shard, [(str(out), i, shards) for i in range(shards)],
                                       executor=executor, jobs=jobs_submission.jobs_config(ws, config))
    print_submission(sub)
    if not wait:
        return
    jobs = monitor.wait(ws, sub.run_id, timeout_s=timeout, poll_s=2.0)
    with _registry(ws) as reg:
        print_run(reg.run(sub.run_id), jobs)
    written = sorted(out.glob("shard-*.json"))
    if len(written) != shards or any(j.state is not State.COMPLETED for j in jobs):
        raise JobsError(f"selftest failed: {len(written)} of {shards} shard files written; see `fmb-engine jobs show "
                        f"{sub.run_id}`")
    console.print(f"[green]selftest passed[/]: {shards} shard file(s) in {escape(str(out))}")
