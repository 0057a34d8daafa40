"""The fmb-tui App. Minimal until the TUI issue: opens a workspace and shows its survey."""

from __future__ import annotations

import sys
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static

from fmb_engine.errors import FMBError
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace


class FMBApp(App):
    """Workspace overview: which surveys exist and what they hold."""

    TITLE = "fmb-tui"
    BINDINGS = [Binding("q", "quit", "Quit", id="app.quit")]

    def __init__(self, workspace: Workspace):
        super().__init__()
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self._overview(), id="overview")
        yield Footer()

    def _overview(self) -> str:
        lines = [f"workspace: {self.workspace.root}", ""]
        surveys = self.workspace.surveys()
        if not surveys:
            lines.append("no survey yet: run `fmb-engine data mock` or `fmb-engine data import SOURCE`")
        for path in surveys:
            try:
                with SurveyReader(path) as reader:
                    s = reader.summary()
                lines.append(f"{path.name}: {s['objects']:,} objects, splits {s['splits']}, classes {len(s['anomaly_classes'])}")
            except FMBError as exc:
                lines.append(f"{path.name}: {exc}")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        ws = Workspace.find(Path(args[0]) if args else None)
    except FMBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    FMBApp(ws).run()
