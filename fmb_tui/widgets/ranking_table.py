"""A virtual table over a ranking of any size (Textual Line API).

Only the rows on screen are ever formatted: :meth:`RankingTable.render_line` maps a
screen line to a row of the current order array and formats that row's cells. Moving the
cursor costs the same for 100 rows as for 1,000,000. Sorting and filtering happen
elsewhere (a worker thread computes a new order array); the table just swaps it in.

Layout: two header lines (system names over their rank/score pair), then rows. The
first four columns (rank, object id, label, score of the current system) stay put; the
other systems' columns scroll sideways, one column per key press.
"""

from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.events import Click, MouseScrollDown, MouseScrollUp, Resize
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from fmb_tui.ranking_model import Column, RankingData, RowFormatter, columns

HEADER_LINES = 2
#: Label colours by position in the label set (ANSI names: fine in 16/256 colours and NO_COLOR).
LABEL_COLOURS = ("red", "green", "magenta", "cyan", "yellow", "blue", "bright_black", "bright_red", "bright_green")


class RankingTable(Widget, can_focus=True):
    DEFAULT_CSS = """
    RankingTable { height: 1fr; min-height: 4; }
    RankingTable > .ranking-table--header { text-style: bold; background: $panel; }
    RankingTable > .ranking-table--group { color: $text-muted; background: $panel; }
    RankingTable > .ranking-table--cursor { background: $secondary 50%; }
    RankingTable:focus > .ranking-table--cursor { background: $accent; color: $text; }
    RankingTable > .ranking-table--muted { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"ranking-table--header", "ranking-table--group", "ranking-table--cursor",
                         "ranking-table--muted"}

    class CursorMoved(Message):
        """The cursor is on another row (``row`` is the data row, None when the view is empty)."""

        def __init__(self, position: int, row: int | None, object_id: str | None) -> None:
            super().__init__()
            self.position = position
            self.row = row
            self.object_id = object_id

    def __init__(self, *, label_set: list[str] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: RankingData | None = None
        self.order = np.zeros(0, dtype=np.int64)
        self.system = ""
        self.formatter: RowFormatter | None = None
        self.cursor = 0
        self.top = 0
        self.col_offset = 0
        self._columns: list[Column] = []
        self.sorted_by: tuple[str, bool] | None = None
        self.empty_message = "loading the ranking…"
        self.label_styles = {lbl: Style(color=LABEL_COLOURS[i % len(LABEL_COLOURS)], bold=True)
                             for i, lbl in enumerate(label_set or [])}
        # rendered rows by (position, cursor?, column offset, width, version): a cursor step
        # repaints two rows, a scroll by one row formats one new row
        self._strips: dict[tuple, Strip] = {}
        self._version = 0
        self._styles: dict[str, Style] = {}

    # --- state ---------------------------------------------------------------------------

    @property
    def page(self) -> int:
        return max(1, self.size.height - HEADER_LINES)

    @property
    def n_rows(self) -> int:
        return int(self.order.size)

    def current_row(self) -> int | None:
        if not self.n_rows:
            return None
        return int(self.order[min(self.cursor, self.n_rows - 1)])

    def current_id(self) -> str | None:
        row = self.current_row()
        return None if row is None or self.data is None else self.data.id_at(row)

    def set_view(self, data: RankingData, order: np.ndarray, system: str, labels: dict[str, str],
                 notes: dict[str, str], keep_row: int | None = None, cursor: int | None = None,
                 sorted_by: tuple[str, bool] | None = None) -> None:
        """Show ``order`` (rows of ``data``); keep the cursor on ``keep_row`` when it is still shown.

        ``sorted_by`` (column key, descending) puts an arrow on that column's header.
        """
        self.data, self.order, self.system = data, np.asarray(order, dtype=np.int64), system
        self.sorted_by = sorted_by
        self.formatter = RowFormatter(data, system, labels, notes)
        sample = data.ids_at(self.order[: min(200, self.order.size)]) if self.order.size else []
        id_width = min(30, max(9, max((len(s) for s in sample), default=9)))
        self._columns = columns(data, system, id_width)
        self.col_offset = min(self.col_offset, max(0, len(self._scrolling()) - 1))
        position = 0
        if cursor is not None:
            position = cursor
        elif keep_row is not None and self.order.size:
            hits = np.flatnonzero(self.order == keep_row)
            position = int(hits[0]) if hits.size else 0
        self.empty_message = "no rows match the filter (x removes every filter)"
        self._invalidate()
        self.top = 0
        self.move_cursor(position, force=True)

    def refresh_columns(self) -> None:
        """More systems finished loading: recompute the column list."""
        if self.data is not None and self.formatter is not None:
            id_width = self._columns[1].width if len(self._columns) > 1 else 16
            self._columns = columns(self.data, self.system, id_width)
            self._invalidate()
            self.refresh()

    def set_labels(self, labels: dict[str, str], notes: dict[str, str]) -> None:
        if self.formatter is not None:
            self.formatter.labels = labels
            self.formatter.notes = notes
        self._invalidate()
        self.refresh()

    def move_cursor(self, position: int, force: bool = False) -> None:
        n = self.n_rows
        position = 0 if n == 0 else max(0, min(int(position), n - 1))
        if position == self.cursor and not force:
            return
        old_cursor, old_top = self.cursor, self.top
        self.cursor = position
        page = self.page
        if position < self.top:
            self.top = position
        elif position >= self.top + page:
            self.top = position - page + 1
        self.top = max(0, min(self.top, max(0, n - page)))
        if self.top == old_top and not force:  # only the two rows whose cursor mark changed
            width = self.size.width
            self.refresh(Region(0, HEADER_LINES + old_cursor - self.top, width, 1),
                         Region(0, HEADER_LINES + position - self.top, width, 1))
        else:
            self.refresh()
        row = self.current_row()
        self.post_message(self.CursorMoved(position, row, None if row is None else self.data.id_at(row)))  # type: ignore[union-attr]

    def show_column(self, key: str) -> None:
        """Scroll the system columns so that column ``key`` is on screen (a no-op for a fixed one)."""
        scrolling = self._scrolling()
        index = next((i for i, c in enumerate(scrolling) if c.key == key), None)
        if index is None:
            return
        if index < self.col_offset or self._columns.index(scrolling[index]) not in self._visible_indices():
            self.col_offset = index - index % 2  # a system's rank and score stay together
            self._strips.clear()
            self.refresh()

    def _visible_indices(self) -> set[int]:
        return {self._columns.index(c) for c in self._visible_columns(self.size.width or 80)}

    def scroll_columns(self, delta: int) -> None:
        scrolling = self._scrolling()
        self.col_offset = max(0, min(self.col_offset + 2 * delta, max(0, len(scrolling) - 2)))
        self._strips.clear()
        self.refresh()

    def _invalidate(self) -> None:
        self._version += 1
        self._strips.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.rich_style if name == "base" else self.get_component_rich_style(name)
            self._styles[name] = style
        return style

    def _scrolling(self) -> list[Column]:
        return [c for c in self._columns if not c.fixed]

    # --- events ------------------------------------------------------------------------------

    def on_resize(self, event: Resize) -> None:
        self.move_cursor(self.cursor, force=True)

    def on_click(self, event: Click) -> None:
        if event.y >= HEADER_LINES:
            self.move_cursor(self.top + event.y - HEADER_LINES)

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        self.move_cursor(self.cursor + 3)

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        self.move_cursor(self.cursor - 3)

    # --- rendering (Line API) ----------------------------------------------------------------

    def _visible_columns(self, width: int) -> list[Column]:
        fixed = [c for c in self._columns if c.fixed]
        used = sum(c.width + 1 for c in fixed)
        out = list(fixed)
        for col in self._scrolling()[self.col_offset:]:
            if used + col.width + 1 > width:
                break
            out.append(col)
            used += col.width + 1
        return out

    def _title(self, col: Column) -> str:
        if self.sorted_by is None or self.sorted_by[0] != col.key:
            return col.title
        return col.title + ("↓" if self.sorted_by[1] else "↑")

    @staticmethod
    def _pad(text: str, col: Column) -> str:
        if len(text) > col.width:
            text = text[: col.width - 1] + "…"
        return (text.rjust(col.width) if col.right else text.ljust(col.width)) + " "

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self._style("base")
        if not self._columns:
            muted = self._style("ranking-table--muted")
            lines = self._wrapped(width)
            text = lines[y - 1] if 1 <= y <= len(lines) else ""
            return Strip([Segment(text[:width].ljust(width), base + muted)], width)
        cols = self._visible_columns(width)
        if y == 0:
            style = base + self._style("ranking-table--group")
            segs, i = [], 0
            while i < len(cols):
                group, j, span = cols[i].group, i, 0
                while j < len(cols) and cols[j].group == group:
                    span += cols[j].width + 1
                    j += 1
                label = group if len(group) < span else group[: span - 2] + "…"
                segs.append(Segment(label.ljust(span), style))
                i = j
            return self._finish(segs, width, style)
        if y == 1:
            style = base + self._style("ranking-table--header")
            return self._finish([Segment(self._pad(self._title(col), col), style) for col in cols], width, style)
        position = self.top + y - HEADER_LINES
        if position >= self.n_rows:
            lines = self._wrapped(width)
            if self.n_rows == 0 and 0 <= y - HEADER_LINES < len(lines):
                muted = base + self._style("ranking-table--muted")
                return Strip([Segment(lines[y - HEADER_LINES][:width].ljust(width), muted)], width)
            return Strip.blank(width, base)
        cursor = position == self.cursor
        key = (position, cursor, self.col_offset, width, self._version)
        cached = self._strips.get(key)
        if cached is not None:
            return cached
        row = int(self.order[position])
        object_id = self.data.id_at(row)  # type: ignore[union-attr]
        row_style = base + self._style("ranking-table--cursor") if cursor else base
        muted = self._style("ranking-table--muted")
        segs = []
        for col in cols:
            cell = self.formatter.cell(row, col, object_id)  # type: ignore[union-attr]
            style = row_style
            if cell.kind.startswith("label:"):
                style = row_style + self.label_styles.get(cell.kind[6:], Style(bold=True))
            elif cell.kind == "pending":
                style = row_style + muted
            segs.append(Segment(self._pad(cell.text, col), style))
        strip = self._finish(segs, width, row_style)
        if len(self._strips) > 4 * max(self.page, 16):
            self._strips.clear()
        self._strips[key] = strip
        return strip

    def _wrapped(self, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(self.empty_message, max(10, width - 2), initial_indent=" ", subsequent_indent=" ") or [""]

    @staticmethod
    def _finish(segs: list[Segment], width: int, style: Style) -> Strip:
        strip = Strip(segs)
        return strip.crop_extend(0, width, style)
