"""Jobs screen: the job registry, refreshed by one batched poll at a time, with a polling log tail.

Polling: a poll (``fmb_engine.jobs.monitor.refresh``: one squeue + sacct for every SLURM job,
PID and result files for local ones, then one registry snapshot) runs in a worker thread;
the next one is armed only when it has finished, so polls never overlap, and only while
this screen is shown. The table is updated by diff: changed cells only, rebuilt only when
jobs appear or disappear. Logs are tailed by polling the file size (NFS-safe: no inotify).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, Log, Static
from textual.widgets.data_table import CellDoesNotExist

from fmb_engine.jobs.states import COLOURS, RESUBMITTABLE, State, explain_reason
from fmb_tui import clock
from fmb_tui.data import elapsed, read_new
from fmb_tui.safe_text import escape
from fmb_tui.screens.base import FMBScreen
from fmb_tui.screens.dialogs import ConfirmDialog

COLUMNS = (("stage", "stage"), ("job", "job id"), ("task", "task"), ("state", "state"), ("time", "elapsed/limit"),
           ("detail", "reason / error"), ("node", "node"))


def limit_of(params: dict) -> str:
    minutes = params.get("time") or params.get("timeout_min")
    try:
        m = int(minutes)
    except (TypeError, ValueError):
        return "-"
    return f"{m // 60}:{m % 60:02d}:00"


def job_row(job, params: dict, now: float, phase: str | None = None) -> tuple:
    """The table cells of one job; every text is literal (reasons, errors and node lists contain brackets).
    ``phase`` names the task's part of a chained run (``fit``, ``shard 2/4``, ``merge``), as ``jobs show`` does."""
    state = State(job.state)  # the registry reads a state this version does not know as UNKNOWN
    if state is State.PENDING:
        detail = explain_reason(job.reason) or (job.reason or "")
    else:
        detail = job.error or ""
    return (
        Text(str(job.stage or "?")),
        Text(str(job.job_id)),
        str(job.task_index) + (f"·{job.attempt}" if job.attempt > 1 else "") + (f" {phase}" if phase else ""),
        Text(state.value, style=COLOURS.get(state, "")),
        f"{elapsed(job.started, job.ended, now)}/{limit_of(params)}",
        Text(str(detail)),
        Text(str(job.node or "")),
    )


def _plain(value) -> str:
    return value.plain if isinstance(value, Text) else str(value)


class JobsScreen(FMBScreen):
    NAME = "jobs"
    BINDINGS = FMBScreen.screen_bindings("jobs")

    def __init__(self) -> None:
        super().__init__()
        self._polling = False
        self._timer = None
        self._log_timer = None
        self._rows: dict[str, tuple] = {}
        self._order: list[str] = []
        self.jobs: dict[str, object] = {}
        self.params: dict[str, dict] = {}
        self.runs: dict[str, object] = {}
        self.stream = "stdout"
        self._log_key: str | None = None
        self._log_offset = -1
        self.polls = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading the job registry…", id="jobs-status")
        yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="log-title")
        yield Log(id="job-log", max_lines=5000, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # fixed widths: columns never jump around as states change (long errors are in the log pane)
        widths = {"stage": 14, "job": 12, "task": 14, "state": 13, "time": 15, "detail": 30, "node": 12}
        for key, title in COLUMNS:
            table.add_column(title, key=key, width=widths.get(key))
        table.focus()

    def on_screen_resume(self) -> None:
        self.poll()
        self._arm_log()

    def on_screen_suspend(self) -> None:
        for timer in (self._timer, self._log_timer):
            if timer is not None:
                timer.stop()
        self._timer = self._log_timer = None

    # --- polling ---------------------------------------------------------------------------

    def action_poll_now(self) -> None:
        self.poll()

    def poll(self) -> None:
        if self._polling:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._polling = True
        self.background(self._poll_once, then=self._show_snapshot, failed=self._poll_failed, group="jobs-poll")

    def _poll_once(self):
        from fmb_engine.jobs.registry import REGISTRY_NAME, open_registry

        if not (self.fmb.workspace.folder("jobs") / REGISTRY_NAME).is_file():
            return None
        from fmb_engine.jobs.monitor import refresh

        with open_registry(self.fmb.workspace) as reg:
            report = refresh(self.fmb.workspace, registry=reg)
            runs, jobs = reg.snapshot()
        return report, runs, jobs

    def _rearm(self) -> None:
        self._polling = False
        if self.app.screen is self:
            self._timer = self.set_timer(self.fmb.tui_config.jobs_poll_s, self.poll)

    def _poll_failed(self, error: Exception) -> None:
        self.query_one("#jobs-status", Static).update(f"[red]poll failed[/]: {escape(error)}")
        self._rearm()

    def _show_snapshot(self, result) -> None:
        self.polls += 1
        status = self.query_one("#jobs-status", Static)
        if result is None:
            status.update("no job submitted from this workspace yet: submit one from the Runs screen (R)")
            self._rearm()
            return
        report, runs, jobs = result
        self.params = {r.run_id: r.params for r in runs}
        self.runs = {r.run_id: r for r in runs}
        self.apply(jobs)
        active = sum(1 for j in jobs if j.active)
        problems = f" · [yellow]{escape('; '.join(report.problems)[:120])}[/]" if report.problems else ""
        slow = f" (took {report.seconds:.1f}s)" if report.seconds >= 1.0 else ""
        status.update(f"{len(jobs)} job(s), {active} active · polled {report.polled} at "
                      f"{time.strftime('%H:%M:%S', time.localtime(clock.now()))}{slow} · "
                      f"every {self.fmb.tui_config.jobs_poll_s:g}s{problems}")
        self._rearm()

    def apply(self, jobs) -> None:
        """Update the table by diff: changed cells only; rebuild when the set of jobs changed."""
        table = self.query_one(DataTable)
        now = clock.now()
        runs = self.runs
        rows = {str(j.key): job_row(j, self.params.get(j.run_id, {}), now,
                                    runs[j.run_id].phase_of(j.task_index) if j.run_id in runs else None) for j in jobs}
        # newest run first, its tasks in order (a chain's phases are submitted at different times)
        order = [str(j.key) for j in sorted(jobs, key=lambda j: (-(getattr(runs.get(j.run_id), "created", None)
                                                                     or j.submitted or 0), j.run_id, j.task_index))]
        self.jobs = {str(j.key): j for j in jobs}
        with self.app.batch_update():
            if order != self._order:
                current = self.current_key()
                table.clear()
                for key in order:
                    table.add_row(*rows[key], key=key)
                if current in rows:
                    table.move_cursor(row=order.index(current))
            else:
                for key, values in rows.items():
                    old = self._rows.get(key)
                    for (col, _), new, before in zip(COLUMNS, values, old or (None,) * len(COLUMNS), strict=True):
                        if _plain(new) != _plain(before) or (isinstance(new, Text) and new.style != getattr(before, "style", None)):
                            table.update_cell(key, col, new)
        self._rows, self._order = rows, order
        if self._log_key is None and order:
            self.select_log(self.current_key())

    def current_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except CellDoesNotExist:  # the cursor is on a row being replaced
            return None

    def current_job(self):
        key = self.current_key()
        return None if key is None else self.jobs.get(key)

    # --- log tail ----------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = str(event.row_key.value) if event.row_key is not None else None
        if key != self._log_key:
            self.select_log(key)

    def select_log(self, key: str | None) -> None:
        self._log_key, self._log_offset = key, -1
        log = self.query_one(Log)
        log.clear()
        job = self.jobs.get(key) if key else None
        title = self.query_one("#log-title", Static)
        if job is None:
            title.update("")
            return
        path = job.stdout if self.stream == "stdout" else job.stderr
        title.update(f"[b]{self.stream}[/] of {escape(job.job_id)} ({escape(job.stage)}) · {escape(path or 'no log path recorded')} · e switches")
        self._tail()

    def action_toggle_stream(self) -> None:
        self.stream = "stderr" if self.stream == "stdout" else "stdout"
        self.select_log(self._log_key)

    def _arm_log(self) -> None:
        if self._log_timer is not None:
            self._log_timer.stop()
        if self.app.screen is self:
            self._log_timer = self.set_timer(self.fmb.tui_config.log_poll_s, self._tail)

    def _tail(self) -> None:
        job = self.jobs.get(self._log_key) if self._log_key else None
        if job is None:
            self._arm_log()
            return
        path = job.stdout if self.stream == "stdout" else job.stderr
        if not path:
            self._arm_log()
            return
        key, stream, offset = self._log_key, self.stream, self._log_offset
        self.background(lambda: (key, stream, Path(path).is_file(), *read_new(path, offset)), then=self._show_log,
                        group="log-tail")

    def _show_log(self, result) -> None:
        key, stream, exists, text, offset, rewritten = result
        if key == self._log_key and stream == self.stream:
            log = self.query_one(Log)
            if not exists and self._log_offset < 0:
                job = self.jobs.get(key)
                state = getattr(job, "state", "?")
                if not log.line_count:
                    log.write_line(f"(no log file yet; the job is {getattr(state, 'value', state)})")
            if rewritten:
                log.clear()
                log.write_line("[the log was rewritten; reading it again]")
            if text:
                if self._log_offset < 0 and log.line_count == 1:
                    log.clear()
                log.write(text)
            if exists:
                self._log_offset = offset
        self._arm_log()

    # --- cancel / resubmit ---------------------------------------------------------------------

    def action_cursor_next(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_previous(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    def action_cancel_job(self) -> None:
        job = self.current_job()
        if job is None:
            return
        if not job.active:
            self.fmb.notify(f"job {job.job_id} has ended ({job.state.value}); nothing to cancel", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                from fmb_engine.jobs.submission import cancel

                self.background(cancel, self.fmb.workspace, job.job_id, then=self._cancelled)

        self.app.push_screen(ConfirmDialog(f"Cancel job {job.job_id} ({job.stage})?",
                                           f"{job.executor} job, {job.state.value}; its partial outputs are kept."), confirmed)

    def _cancelled(self, lines: list[str]) -> None:
        self.fmb.notify("\n".join(lines) or "cancel requested", title="cancel")
        self.poll()

    def action_resubmit_job(self) -> None:
        job = self.current_job()
        if job is None:
            return
        if job.state not in RESUBMITTABLE:
            self.fmb.notify(f"job {job.job_id} is {job.state.value}: only failed, cancelled, timed-out or lost jobs "
                            "are resubmitted", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                from fmb_engine.jobs.submission import resubmit

                self.background(resubmit, self.fmb.workspace, job.job_id, then=self._resubmitted)

        self.app.push_screen(ConfirmDialog(f"Resubmit job {job.job_id} ({job.stage})?",
                                           "It runs again with the same call and executor settings."), confirmed)

    def _resubmitted(self, sub) -> None:
        self.fmb.notify(f"resubmitted as {', '.join(sub.job_ids)} ({'; '.join(sub.notes)})", title="resubmit")
        self.poll()
