"""Figures screen: pick a figure and an object set (a ranking's top-k, a label), export through the engine.

The drawing is the engine's (``fmb_engine.figures.run``): every figure is written as PNG and
PDF under ``figures/`` with a run manifest; this screen only chooses what to draw, runs the
door in a worker thread and shows the files it wrote.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from fmb_engine.errors import FMBError
from fmb_tui.safe_text import escape
from fmb_tui.screens.base import FMBScreen

FIGURES = {
    "grid": "outlier grid — colour image + spectrum per object",
    "objects": "object sheets — bands, colour, spectrum; one figure per object",
    "heatmaps": "ranking comparison — Spearman and Jaccard heat maps",
}
MAX_SHEETS = 50


def grid_path(ws, label: str, system: str | None) -> Path:
    """Where the outlier grid of a label set goes: named after the label (and the ranking that
    gives its ranks), so exporting another label set never overwrites this one."""
    tag = f"label-{label}" + (f"_{system.replace('/', '_')}" if system else "")
    return ws.folder("figures") / "outliers" / f"outliers_{tag}"


def export_figure(ws, survey: Path | None, kind: str, chosen: str, system: str | None, k: int,
                  labels: dict[str, str]) -> list[Path]:
    """Run the engine's figure door for the chosen objects; returns the files written (PNG + PDF).

    ``survey`` is needed by every figure but the heat maps (which draw only rankings)."""
    from fmb_engine.figures import run as fig

    if kind == "heatmaps":
        return list(fig.heatmap_figures(ws).summary["files"])
    if chosen == "top":
        if system is None:
            raise FMBError("no ranking to take a top-k from: run `fmb-engine detect all` first")
        ids = None
    else:
        label = chosen.split(":", 1)[1]
        ids = sorted(oid for oid, lbl in labels.items() if lbl == label)
        if not ids:
            raise FMBError(f"no object is labelled {label!r} yet")
    if kind == "grid":
        out = None if ids is None else grid_path(ws, chosen.split(":", 1)[1], system)
        return list(fig.outlier_grid_figure(ws, survey, system=system, ids=ids, top_k=k, out=out).summary["files"])
    if ids is None:
        from fmb_engine import rankings
        from fmb_engine.figures.objects import top_ids

        ids = top_ids(rankings.load_rankings(ws, survey=survey), k, system)["object_id"].tolist()  # inputs checked
    if len(ids) > MAX_SHEETS:
        raise FMBError(f"{len(ids)} objects: at most {MAX_SHEETS} object sheets at once (use the outlier grid)")
    written: list[Path] = []
    for oid in ids:
        written += fig.object_fig(ws, survey, oid).summary["files"]
    return written


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
            yield Static("Export a figure through the engine (PNG and PDF under figures/, with a run manifest)",
                         classes="muted")
            with Horizontal(classes="fig-row"):
                yield Label("figure", classes="fig-key")
                yield Select([(t, k) for k, t in FIGURES.items()], value="grid", allow_blank=False, id="fig-kind",
                             compact=True)
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
            yield Button("Export (ctrl+s)", id="fig-export", variant="primary", compact=True)
            yield Static("", id="fig-output")
        yield Footer()

    def on_mount(self) -> None:
        self.background(self._systems, then=self._show_systems)

    def _systems(self):
        from fmb_engine import rankings

        try:
            systems = rankings.list_systems(self.fmb.workspace)
            return systems, rankings.default_system(systems, self.fmb.tui_config.system), None
        except FMBError as exc:
            return [], None, str(exc)

    def _show_systems(self, result) -> None:
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
        try:
            k = int(self.query_one("#fig-k", Input).value or "0")
        except ValueError:
            k = 0
        output = self.query_one("#fig-output", Static)
        if kind != "heatmaps" and chosen == "top" and k < 1:
            output.update("[red]k must be a whole number ≥ 1[/]")
            return
        what = FIGURES[kind].split(" — ")[0]
        output.update(f"rendering the {what}…")
        self.background(self._export, kind, chosen, system, k, dict(self.fmb.labels), then=self._exported,
                        failed=self._export_failed)

    def _export(self, kind, chosen, system, k, labels):
        from fmb_tui.data import SurveyFree, survey_free_message

        self.fmb.label_writer.drain()
        survey = None
        if kind != "heatmaps":
            runs = self.data.synthetic_runs()
            if runs:
                raise SurveyFree(f"the {FIGURES[kind].split(' — ')[0]} draws spectra and images — "
                                 + survey_free_message(runs))
            survey = self.data.survey_path()
        return export_figure(self.fmb.workspace, survey, kind, chosen, system, k, labels)

    def _exported(self, paths: list[Path]) -> None:
        listing = "\n".join(escape(str(p)) for p in paths[:8]) + (f"\n… and {len(paths) - 8} more" if len(paths) > 8 else "")
        self.query_one("#fig-output", Static).update(f"[green]written[/]:\n{listing}")
        summary = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files in {paths[0].parent}"
        self.fmb.notify(summary, title="figure exported")

    def _export_failed(self, error: Exception) -> None:
        self.query_one("#fig-output", Static).update(f"[red]not exported[/]: {escape(str(error))}")
