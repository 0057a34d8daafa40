"""Compare screen: the cross-system Spearman and Jaccard matrices as coloured tables."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from fmb_engine.errors import FMBError
from fmb_engine.rankings import COMPARISONS
from fmb_tui.safe_text import escape
from fmb_tui.screens.base import FMBScreen

TITLES = {
    "spearman": "Spearman rank correlation between systems (1 = same order)",
    "jaccard": "Jaccard overlap of the top-1 % sets (1 = same candidates)",
}


def cell_colour(kind: str, value: float) -> tuple[int, int, int]:
    """Diverging blue-white-red for Spearman (-1..1), white-to-green for Jaccard (0..1)."""
    if value != value:  # NaN
        return (60, 60, 60)
    if kind == "spearman":
        v = max(-1.0, min(1.0, value))
        if v >= 0:
            return (255, int(255 * (1 - 0.75 * v)), int(255 * (1 - 0.8 * v)))
        return (int(255 * (1 + 0.8 * v)), int(255 * (1 + 0.6 * v)), 255)
    v = max(0.0, min(1.0, value))
    return (int(255 * (1 - 0.8 * v)), int(255 * (1 - 0.35 * v)), int(255 * (1 - 0.75 * v)))


def cell(kind: str, value: float) -> Text:
    r, g, b = cell_colour(kind, value)
    light = 0.299 * r + 0.587 * g + 0.114 * b > 140
    return Text(f"{value:5.2f}", style=f"{'black' if light else 'white'} on rgb({r},{g},{b})", justify="right")


class CompareScreen(FMBScreen):
    NAME = "compare"
    BINDINGS = FMBScreen.screen_bindings("compare")

    def __init__(self) -> None:
        super().__init__()
        self.kind = COMPARISONS[0]
        self.matrices: dict[str, object] = {}
        self.problems: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="compare-title")
        yield DataTable(id="compare-table", cursor_type="cell", zebra_stripes=False, fixed_columns=1)
        yield Static("", id="compare-legend", classes="muted")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()  # arrow keys move through the matrix at once
        self.action_reload()

    def action_move(self, rows: int, columns: int) -> None:
        """Vim keys for the matrix (the arrows are the table's own)."""
        table = self.query_one(DataTable)
        if table.row_count:
            row, column = table.cursor_coordinate
            table.move_cursor(row=max(0, min(row + rows, table.row_count - 1)),
                              column=max(0, min(column + columns, len(table.columns) - 1)), scroll=True)

    def action_reload(self) -> None:
        self.background(self._load, then=self._show_matrices)

    def _load(self):
        out, problems = {}, {}
        for kind in COMPARISONS:
            try:
                out[kind] = self.data.comparison(kind)
            except FMBError as exc:
                problems[kind] = str(exc)
        return out, problems

    def _show_matrices(self, result) -> None:
        self.matrices, self.problems = result
        self.show()

    def action_toggle_matrix(self) -> None:
        i = COMPARISONS.index(self.kind)
        self.kind = COMPARISONS[(i + 1) % len(COMPARISONS)]
        self.show()

    def show(self) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        title = self.query_one("#compare-title", Static)
        legend = self.query_one("#compare-legend", Static)
        frame = self.matrices.get(self.kind)
        if frame is None:
            title.update(f"[b]{self.kind}[/]: " + escape(self.problems.get(self.kind, "not loaded yet")))
            legend.update("t switches between Spearman and Jaccard")
            return
        title.update(f"[b]{TITLES[self.kind]}[/]  (t: {'Jaccard' if self.kind == 'spearman' else 'Spearman'})")
        names = list(frame.index)  # type: ignore[attr-defined]
        table.add_column("system", key="system", width=min(26, max(len(n) for n in names) + 3))
        for i, _ in enumerate(names):
            table.add_column(f"{i + 1:>5}", key=str(i))
        values = frame.to_numpy()  # type: ignore[attr-defined]
        for i, name in enumerate(names):
            table.add_row(Text(f"{i + 1:>2} {name}"), *(cell(self.kind, float(v)) for v in values[i]), key=name)
        lo, hi = ("-1", "1") if self.kind == "spearman" else ("0", "1")
        legend.update(Text.assemble("scale ", cell(self.kind, float(lo)), " … ", cell(self.kind, 0.5 if lo == "0" else 0.0),
                                    " … ", cell(self.kind, float(hi)), "   columns are numbered like the rows"))
