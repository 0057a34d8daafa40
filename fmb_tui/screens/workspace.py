"""Workspace screen: survey summary, embeddings, rankings, labels, last runs, job counts, next steps."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from fmb_tui.data import Overview
from fmb_tui.screens.base import FMBScreen

STATE_COLOURS = {"PENDING": "yellow", "RUNNING": "cyan", "COMPLETED": "green", "FAILED": "bold red",
                 "CANCELLED": "magenta", "TIMEOUT": "red", "PREEMPTED": "dark_orange", "OUT_OF_MEMORY": "red",
                 "UNKNOWN": "dim"}


def overview_renderables(ov: Overview) -> list:
    out: list = []

    def section(title: str) -> None:
        out.append(Text(title, style="bold underline"))

    section("Survey")
    if not ov.surveys and ov.survey_free:
        out.append(Text(f"  none needed: the ranking was made from survey-free synthetic embeddings "
                        f"({', '.join(ov.survey_free)}); its objects have no spectrum or image to preview", style="dim"))
    elif not ov.surveys:
        out.append(Text("  no survey yet", style="dim"))
    for s in ov.surveys:
        if "error" in s:
            out.append(Text(f"  {s['name']}: {s['error']}", style="red"))
        else:
            splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items())
            out.append(Text(f"  {s['name']}: {s['objects']:,} objects ({splits}); {s['classes']:,} injected "
                            f"anomalies; {s['image_size']} px cutouts"))
    section("Embeddings")
    if not ov.embeddings:
        out.append(Text("  none yet", style="dim"))
    for e in ov.embeddings:
        if "error" in e:
            out.append(Text(f"  {e['name']}: {e['error']}", style="red"))
        else:
            out.append(Text(f"  {e['name']}: {e['model']} ({', '.join(e['modalities'])}), {e['objects']:,} objects"))
            if "stale" in e:
                out.append(Text(f"    {e['stale']}", style="yellow"))
    section("Anomaly ranking")
    if ov.ranking_problem:
        out.append(Text(f"  {ov.ranking_problem}", style="dim"))
    else:
        fused = [s for s in ov.systems if "/fused/" in s]
        out.append(Text(f"  {len(ov.systems)} systems over {ov.ranking_objects or 0:,} objects"
                        + (f"; fused: {', '.join(fused[:3])}{' …' if len(fused) > 3 else ''}" if fused else "")))
        if ov.comparisons:
            out.append(Text(f"  comparisons: {', '.join(ov.comparisons)} (Compare, C)"))
    section("Triage labels")
    if not ov.labels:
        out.append(Text("  none yet", style="dim"))
    else:
        out.append(Text("  " + ", ".join(f"{k} {v}" for k, v in ov.labels.items())))
    section("Jobs")
    if not ov.jobs:
        out.append(Text("  no job submitted from this workspace", style="dim"))
    else:
        line = Text("  ")
        for state, n in sorted(ov.jobs.items()):
            line.append(f"{n} {state.lower()}  ", style=STATE_COLOURS.get(state, ""))
        out.append(line)
    section("Last runs")
    if not ov.runs:
        out.append(Text("  none yet", style="dim"))
    else:
        table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
        for _ in range(3):
            table.add_column(no_wrap=True)
        for r in ov.runs:
            colour = {"completed": "green", "failed": "red", "interrupted": "yellow"}.get(r["status"], "")
            table.add_row(Text(f"  {str(r['started'])[:19]}"), Text(str(r["stage"])), Text(str(r["status"]), style=colour))
        out.append(table)
    section("Next")
    for step in ov.next_steps or ["nothing obvious: browse the Anomalies (A) or submit a run (R)"]:
        out.append(Text(f"  • {step}"))
    return out


class WorkspaceScreen(FMBScreen):
    NAME = "workspace"
    BINDINGS = FMBScreen.screen_bindings("workspace")

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="workspace-body"):
            yield Static(f"workspace {self.fmb.root_label}", id="workspace-root", classes="muted")
            yield Static("reading the workspace…", id="overview")
        yield Footer()

    def on_mount(self) -> None:
        # after the first frame: the overview's reads import pandas, pyarrow and h5py, which would hold
        # the GIL while this screen is painted for the first time
        self.call_after_refresh(self.action_reload)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.action_reload()

    def action_reload(self) -> None:
        self.background(self.data.overview, then=self._show_overview)

    def _show_overview(self, ov: Overview) -> None:
        from rich.console import Group

        self.query_one("#overview", Static).update(Group(*overview_renderables(ov)))
