"""Figures screen: pick a figure and an object set (a ranking's top-k, a label), export PNG/PDF."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from fmb_engine.errors import FMBError
from fmb_tui import figures
from fmb_tui.screens.base import FMBScreen

FIGURE_TITLES = {
    "grid": "grid — image + spectrum per object, one page (PNG or PDF)",
    "quicklook": "quick-look — one PNG per object: bands, colour, spectrum",
}


class FiguresScreen(FMBScreen):
    NAME = "figures"
    BINDINGS = FMBScreen.screen_bindings("figures")

    def __init__(self) -> None:
        super().__init__()
        self.systems: list[str] = []

    def compose(self) -> ComposeResult:
        labels = self.fmb.tui_config.labels
        yield Header()
        with VerticalScroll(id="figures-body"):
            yield Static("Export a figure of candidates (rendered in the background; the path shows below)",
                         classes="muted")
            with Horizontal(classes="fig-row"):
                yield Label("figure", classes="fig-key")
                yield Select([(t, k) for k, t in FIGURE_TITLES.items()], value="grid", allow_blank=False, id="fig-kind", compact=True)
            with Horizontal(classes="fig-row"):
                yield Label("objects", classes="fig-key")
                yield Select([("top-k of a ranking", "top")] + [(f"labelled {lbl}", f"label:{lbl}") for lbl in labels],
                             value="top", allow_blank=False, id="fig-set", compact=True)
            with Horizontal(classes="fig-row"):
                yield Label("ranking", classes="fig-key")
                yield Select([("(reading the ranking…)", "")], value="", allow_blank=False, id="fig-system", compact=True)
            with Horizontal(classes="fig-row"):
                yield Label("k", classes="fig-key")
                yield Input("12", id="fig-k", type="integer", compact=True)
            with Horizontal(classes="fig-row"):
                yield Label("format", classes="fig-key")
                yield Select([("png", "png"), ("pdf", "pdf")], value="png", allow_blank=False, id="fig-format", compact=True)
            yield Button("Export (ctrl+s)", id="fig-export", variant="primary", compact=True)
            yield Static("", id="fig-output")
        yield Footer()

    def on_mount(self) -> None:
        self.background("systems", self._systems)

    def _systems(self):
        from fmb_engine import rankings

        try:
            systems = rankings.list_systems(self.fmb.workspace)
            return systems, rankings.default_system(systems, self.fmb.tui_config.system), None
        except FMBError as exc:
            return [], None, str(exc)

    def _done_systems(self, result) -> None:
        systems, default, problem = result
        self.systems = systems
        select = self.query_one("#fig-system", Select)
        if not systems:
            select.set_options([("(no ranking yet)", "")])
            select.value = ""
            self.query_one("#fig-output", Static).update(f"[yellow]{escape(problem or '')}[/]")
            return
        select.set_options([(s, s) for s in systems])
        select.value = default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "fig-export":
            self.action_export()

    def action_export(self) -> None:
        kind = str(self.query_one("#fig-kind", Select).value)
        chosen = str(self.query_one("#fig-set", Select).value)
        system = str(self.query_one("#fig-system", Select).value) or None
        fmt = str(self.query_one("#fig-format", Select).value)
        try:
            k = int(self.query_one("#fig-k", Input).value or "0")
        except ValueError:
            k = 0
        output = self.query_one("#fig-output", Static)
        if chosen == "top":
            if system is None:
                output.update("[red]no ranking to take a top-k from[/]: run `fmb-engine detect all` first")
                return
            if k < 1:
                output.update("[red]k must be a whole number ≥ 1[/]")
                return
            objects = figures.ObjectSet("top", system=system, k=k)
        else:
            objects = figures.ObjectSet("label", system=system, label=chosen.split(":", 1)[1])
        output.update(f"rendering {kind} of {escape(objects.describe())}…")
        labels = dict(self.fmb.labels)
        self.background("exported", self._export, kind, objects, fmt, labels)

    def _export(self, kind, objects, fmt, labels):
        self.fmb.label_writer.drain()
        return figures.export(self.fmb.workspace, kind, objects, fmt, labels=labels, survey=self.data.survey_path())

    def _done_exported(self, paths) -> None:
        listing = "\n".join(escape(str(p)) for p in paths[:8]) + (f"\n… and {len(paths) - 8} more" if len(paths) > 8 else "")
        self.query_one("#fig-output", Static).update(f"[green]written[/]:\n{listing}")
        self.fmb.notify(figures.summary(paths), title="figure exported")

    def work_failed(self, tag: str, error: BaseException) -> None:
        if tag == "exported":
            self.query_one("#fig-output", Static).update(f"[red]not exported[/]: {escape(str(error))}")
