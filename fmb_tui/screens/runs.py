"""Runs screen: choose a stage, edit its config in a generated form, pick an executor, submit; recent manifests."""

from __future__ import annotations

import asyncio

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual import work
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from fmb_engine.errors import ConfigError
from fmb_tui.safe_text import escape, plain
from fmb_tui.screens.base import FMBScreen
from fmb_tui.widgets.config_form import FORM_ORIGIN, ConfigForm, error_lines


def nest(section: str, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = values
    for part in reversed(section.split(".")):
        out = {part: out}
    return out


#: status -> colour in the run table and detail (any other status is shown as it is, uncoloured)
STATUS_COLOURS = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pairs(value: Any, limit: int = 12) -> list[tuple[str, Any]]:
    """``(key, value)`` pairs of a mapping, ``(index, item)`` of a list, or one unnamed item of anything else."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in list(value.items())[:limit]]
    if isinstance(value, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(value[:limit])]
    return [("", value)]


def _when(started: Any) -> str:
    """``2026-12-03T21:35:43+0000`` -> ``12-03 21:35`` (the table is half a terminal wide); other text as it is."""
    text = str(started or "")
    if len(text) >= 16 and text[4] == "-" and text[10] in "T ":
        return f"{text[5:10]} {text[11:16]}"
    return _short(text, 11)


def manifest_summary(m: Any) -> tuple[str, Text, str]:
    """(started, coloured status, stage) of any record, however incomplete; never raises."""
    if not isinstance(m, dict):
        return "", Text("unreadable", style="red"), "?"
    status = _short(m.get("status") or "?", 12)
    return (_when(m.get("started")), Text(status, style=STATUS_COLOURS.get(status, "")),
            _short(m.get("stage") or "?", 30))


def _error_text(error: Any) -> str:
    """A manifest's ``error`` (``{type, message}``, docs/formats.md) as ``Type: message``; anything else as it is."""
    if isinstance(error, dict) and "type" in error:
        message = error.get("message")
        return f"{error['type']}: {message}" if message else str(error["type"])
    return str(error)


def manifest_text(m: Any) -> Text:
    """The detail of one run record as plain text with styles: unknown fields, odd types and None are shown as they are."""
    out = Text()
    if not isinstance(m, dict):
        out.append(f"not a run record: {_short(m, 200)}", style="red")
        return out
    _, status, _ = manifest_summary(m)
    out.append(_short(m.get("run_id") or "?", 80), style="bold")
    out.append(" · ").append_text(status).append(f" · {_short(m.get('started') or '', 30)}")

    def section(title: str, items: list[tuple[str, Any]], note=None) -> None:
        if not items:
            return
        out.append("\n").append(title, style="bold").append(" ")
        for n, (k, v) in enumerate(items):
            out.append(", " if n else "")
            out.append(f"{k}={_short(v, 40)}" if k else _short(v, 200))
            extra = note(k) if note else None
            if extra:
                out.append(f" ({extra})", style="dim")

    cfg = m.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("values"), dict):
        sources = cfg.get("sources") if isinstance(cfg.get("sources"), dict) else {}
        section("config", _pairs(cfg["values"], 40),
                lambda k: None if sources.get(k, "default") == "default" else _short(sources.get(k), 30))
    elif cfg:
        section("config", _pairs(cfg))
    for key, title in (("counts", "counts"), ("dropped", "dropped"), ("outputs", "outputs")):
        if m.get(key):
            section(title, _pairs(m[key]))
    timings = m.get("timings_s")
    if timings:
        total = timings.get("total", "?") if isinstance(timings, dict) else timings
        out.append("\n").append("time", style="bold").append(f" {_short(total, 20)} s")
    if m.get("error"):
        out.append("\n").append("error", style="bold red").append(f" {_short(_error_text(m['error']), 300)}")
    warnings = m.get("warnings")
    for w in (warnings if isinstance(warnings, list) else [warnings] if warnings else [])[:10]:
        out.append("\n").append("warning", style="yellow").append(f" {_short(w, 300)}")
    out.append("\n").append(str(m.get("path") or ""), style="dim")
    return out


class RunsScreen(FMBScreen):
    NAME = "runs"
    BINDINGS = FMBScreen.screen_bindings("runs")

    def __init__(self) -> None:
        super().__init__()
        self.specs: dict[str, Any] = {}
        self.config_layers: list = []
        self.jobs_resolved = None
        self.spec = None
        self.resolved = None
        self.form_errors: dict[str, str] = {}
        self.base_problem = ""
        self.manifests: list[dict[str, Any]] = []
        self._wanted_form: ConfigForm | None = None
        self._form_lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="runs-top"):
            yield OptionList(Option("loading stages…", disabled=True), id="stages")
            with Vertical(id="form-box"):
                yield Static("choose a stage on the left", id="form-title")
                yield Static("", id="form-problem")
                yield VerticalScroll(id="form-holder")
                with Horizontal(id="submit-row"):
                    yield Select([("executor: loading…", "__loading__")], value="__loading__", allow_blank=False, id="executor",
                                 compact=True)
                    yield Label("tasks", id="tasks-label")
                    yield Input("1", id="tasks", type="integer", compact=True, tooltip="array tasks (shards) of an embedding run")
                    yield Button("Submit (ctrl+s)", id="submit", variant="primary", compact=True)
        with Horizontal(id="runs-bottom"):
            yield DataTable(id="manifests", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="manifest-box"):
                yield Static("", id="manifest-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#manifests", DataTable)
        table.add_column("started", key="started")
        table.add_column("status", key="status")
        table.add_column("stage", key="stage")
        self.background(self._load_catalog, then=self._show_catalog)
        self.background(self._load_manifests, then=self._show_manifests)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.background(self._load_manifests, then=self._show_manifests)

    # --- loading -----------------------------------------------------------------------------

    def _load_catalog(self):
        from fmb_engine.config import layers_for, load
        from fmb_tui.stages import catalog

        specs = catalog()
        layers = layers_for(self.fmb.workspace)
        jobs = load("jobs", self.fmb.workspace)
        return specs, layers, jobs

    def _show_catalog(self, result) -> None:
        from fmb_engine.jobs.executors import EXECUTORS

        specs, self.config_layers, self.jobs_resolved = result
        self.specs = {s.name: s for s in specs}
        ol = self.query_one("#stages", OptionList)
        ol.clear_options()
        ol.add_options([Option(plain(s.name), id=s.name) for s in specs])
        configured = self.jobs_resolved.values.executor
        origin = self.jobs_resolved.sources.get("executor", "default")
        select = self.query_one("#executor", Select)
        select.set_options([(plain(f"executor: as configured ({configured}, {ConfigForm._short(origin)})"), "__config__")]
                           + [(f"executor: {e}", e) for e in (*EXECUTORS, "auto")])
        select.value = "__config__"
        if specs:
            ol.highlighted = 0
            self.choose(specs[0].name)
        ol.focus()

    def _load_manifests(self):
        from fmb_engine.manifest import read_manifests

        return read_manifests(self.fmb.workspace)[:50]

    def _show_manifests(self, manifests) -> None:
        self.manifests = manifests
        table = self.query_one("#manifests", DataTable)
        table.clear()
        for i, m in enumerate(manifests):
            started, status, stage = manifest_summary(m)
            table.add_row(Text(started), status, Text(stage), key=str(i))
        self.show_manifest(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "manifests" and event.row_key is not None:
            self.show_manifest(int(str(event.row_key.value)))

    def show_manifest(self, i: int) -> None:
        detail = self.query_one("#manifest-detail", Static)
        if i < len(self.manifests):
            detail.update(manifest_text(self.manifests[i]))
        else:
            detail.update("no run manifest yet" if not self.manifests else "")

    # --- the form ------------------------------------------------------------------------------

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.choose(str(event.option.id))

    def choose(self, name: str) -> None:
        from fmb_engine.config import SECTIONS, resolve

        spec = self.specs.get(name)
        if spec is None or (self.spec is not None and self.spec.name == name):
            return
        self.spec = spec
        problem = self.query_one("#form-problem", Static)
        self.base_problem = ""
        try:
            self.resolved = resolve(spec.section, self.config_layers)
            rows = self.resolved.rows()
        except ConfigError as exc:
            self.resolved = None
            schema = SECTIONS[spec.section]
            defaults = schema().model_dump(mode="json")
            rows = [(k, defaults[k], "default") for k in schema.model_fields]
            self.base_problem = f"[red]the configured values are invalid[/]: {escape(str(exc))}"
        problem.update(self.base_problem)
        self.query_one("#form-title", Static).update(f"[b]{escape(spec.title)}[/] · config section [b]{escape(spec.section)}[/]")
        for wid in ("#tasks", "#tasks-label"):
            self.query_one(wid).display = spec.sharded
        self._wanted_form = ConfigForm(spec.section, SECTIONS[spec.section], rows, override_all=bool(self.base_problem))
        self._show_form()

    @work(group="form")
    async def _show_form(self) -> None:
        """Put the newest wanted form in place, one replacement at a time.

        Moving quickly through the stage list must never show two forms, or the form of a stage no
        longer highlighted: replacements are never cancelled half-way (a cancelled mount still lands
        later), they queue on a lock and each mounts the form wanted *when its turn comes*.
        """
        async with self._form_lock:
            form = self._wanted_form
            holder = self.query_one("#form-holder", VerticalScroll)
            if form is None or form in holder.children:
                return
            await holder.remove_children()
            await holder.mount(form)

    def current_form(self) -> ConfigForm | None:
        """The mounted form of the highlighted stage; None while it is being replaced (fast scrolling)."""
        if self.spec is None:
            return None
        forms = [f for f in self.query(ConfigForm) if f.is_mounted and f.section == self.spec.section]
        return forms[-1] if forms else None

    def on_config_form_changed(self, message: ConfigForm.Changed) -> None:
        self.validate()

    def validate(self) -> bool:
        """Check the form with the engine's own loader; flag invalid values inline with its message."""
        from fmb_engine.config import Layer, resolve

        form = self.current_form()
        if form is None:
            return False
        try:
            changed = form.changed()
        except NoMatches:  # its fields are being removed (another stage was highlighted): nothing to check
            return False
        errors = {k: str(v) for k, v in changed.items() if isinstance(v, ValueError)}
        ok_values = {k: v for k, v in changed.items() if not isinstance(v, ValueError)}
        sources: dict[str, str] = {}
        try:
            resolved = resolve(self.spec.section, [*self.config_layers, Layer(FORM_ORIGIN, nest(self.spec.section, ok_values))])
            sources = resolved.sources
            if not errors:
                self.resolved = resolved
        except ConfigError as exc:
            per_key, other = error_lines(str(exc))
            errors.update(per_key)
            for line in other:
                errors.setdefault("__form__", line)
            sources = {k: FORM_ORIGIN for k in ok_values}
        form.mark(sources, errors)
        self.form_errors = errors
        lines = [self.base_problem] if self.base_problem else []
        if "__form__" in errors:
            lines.append(f"[red]{escape(errors['__form__'])}[/]")
        self.query_one("#form-problem", Static).update("\n".join(lines))
        return not errors

    def action_reset_form(self) -> None:
        if self.spec is not None:
            name, self.spec = self.spec.name, None
            self.choose(name)

    # --- submit --------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()

    def action_submit(self) -> None:
        if self.current_form() is None:
            self.fmb.notify("choose a stage first (or wait for its form)", severity="warning")
            return
        if not self.validate() or self.resolved is None:
            self.fmb.notify("fix the values flagged in red first", severity="error")
            return
        choice = self.query_one("#executor", Select).value
        executor = None if choice in ("__config__", "__loading__", Select.NULL) else str(choice)
        try:
            tasks = int(self.query_one("#tasks", Input).value or "1")
        except ValueError:
            tasks = 0
        if tasks < 1:
            self.fmb.notify("tasks must be a whole number ≥ 1", severity="error")
            return
        from fmb_tui.stages import submit_stage

        self.query_one("#form-problem", Static).update(f"submitting {escape(self.spec.name)}…")
        self.background(submit_stage, self.fmb.workspace, self.spec, self.resolved, executor, tasks,
                        then=self._submitted, failed=self._submit_failed)

    def _submitted(self, sub) -> None:
        self.query_one("#form-problem", Static).update(
            f"[green]submitted[/] run [b]{escape(sub.run_id)}[/] ({escape(sub.executor)}): {escape(', '.join(sub.job_ids))} — "
            "follow it on the Jobs screen (J)")
        self.fmb.notify("\n".join(sub.notes), title=f"submitted {sub.stage}")
        self.background(self._load_manifests, then=self._show_manifests)

    def _submit_failed(self, error: Exception) -> None:
        self.query_one("#form-problem", Static).update(f"[red]not submitted[/]: {escape(str(error))}")
