"""Small modal dialogs: confirm, prompt, choose, filter, and the generated help screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DataTable,
    Input,
    Label,
    OptionList,
    SelectionList,
    Static,
)
from rich.text import Text
from textual.widgets.option_list import Option

from fmb_tui import actions
from fmb_tui.error_log import GuardedDispatch

DIALOG_CSS = """
.dialog { width: 70; max-width: 100%; height: auto; max-height: 90%; border: thick $accent; background: $surface; padding: 0 1; }
.dialog .title { text-style: bold; margin-bottom: 1; }
.dialog .hint { color: $text-muted; }
.dialog .error { color: $error; }
.dialog Horizontal { height: auto; }
.dialog Button { margin: 1 1 0 0; }
"""


class ConfirmDialog(GuardedDispatch, ModalScreen[bool]):
    DEFAULT_CSS = "ConfirmDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="title", markup=False)
            if self.detail:
                yield Static(self.detail, classes="hint", markup=False)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PromptDialog(GuardedDispatch, ModalScreen[str | None]):
    """One line of text; enter or ctrl+s accepts, escape cancels. ``check`` returns an error message or None."""

    DEFAULT_CSS = "PromptDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "accept", "OK")]

    def __init__(self, title: str, value: str = "", placeholder: str = "", hint: str = "", check=None) -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder, self.hint, self.check = title, value, placeholder, hint, check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="title", markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(self.hint, classes="hint", id="prompt-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_accept()

    def action_accept(self) -> None:
        value = self.query_one(Input).value
        problem = self.check(value) if self.check else None
        if problem:
            hint = self.query_one("#prompt-hint", Static)
            hint.update(problem)
            hint.add_class("error")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(GuardedDispatch, ModalScreen[str | None]):
    """Pick one of many options; typing filters them (every typed word must occur, in any order)."""

    DEFAULT_CSS = "ChoiceDialog { align: center middle; } ChoiceDialog OptionList { height: auto; max-height: 16; }" + DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "accept", "OK")]

    def __init__(self, title: str, options: list[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.title_text, self.options, self.current = title, options, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="title", markup=False)
            yield Input(placeholder="type to filter", id="choice-filter")
            yield OptionList(id="choice-list")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one(Input).focus()

    def _fill(self, text: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        words = text.lower().split()
        shown = [(k, t) for k, t in self.options if all(w in t.lower() or w in k.lower() for w in words)]
        ol.add_options([Option(Text(t), id=k) for k, t in shown])
        keys = [k for k, _ in shown]
        if shown:
            ol.highlighted = keys.index(self.current) if self.current in keys else 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def on_key(self, event) -> None:
        ol = self.query_one(OptionList)
        if event.key in ("down", "up") and self.focused is self.query_one(Input):
            event.stop()
            event.prevent_default()
            ol.action_cursor_down() if event.key == "down" else ol.action_cursor_up()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_accept()

    def action_accept(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None:
            self.dismiss(ol.get_option_at_index(ol.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterDialog(GuardedDispatch, ModalScreen[dict | None]):
    """Label set, score range and id text of the ranking view."""

    DEFAULT_CSS = ("FilterDialog { align: center middle; } FilterDialog SelectionList { height: auto; max-height: 8; }"
                   "FilterDialog Input { width: 1fr; }" + DIALOG_CSS)
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "apply", "Apply")]

    def __init__(self, labels: list[str], chosen: frozenset[str] | None, score_min: float | None,
                 score_max: float | None, text: str) -> None:
        super().__init__()
        self.labels, self.chosen = labels, chosen
        self.score_min, self.score_max, self.text = score_min, score_max, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Filter the ranking (enter or ctrl+s applies; escape leaves a text field, then cancels)",
                         classes="title")
            yield Label("labels (none ticked = any label)")
            options = [("(unlabelled)", "", self.chosen is not None and "" in self.chosen)]
            options += [(lbl, lbl, self.chosen is not None and lbl in self.chosen) for lbl in self.labels]
            yield SelectionList[str](*options, id="filter-labels")
            yield Label("score of the current system: min .. max (empty = open)")
            with Horizontal():
                yield Input("" if self.score_min is None else f"{self.score_min:g}", placeholder="min", id="filter-min")
                yield Input("" if self.score_max is None else f"{self.score_max:g}", placeholder="max", id="filter-max")
            yield Label("object id contains")
            yield Input(self.text, placeholder="text", id="filter-text")
            yield Static("", classes="error", id="filter-error")

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_apply(self) -> None:
        def number(widget_id: str) -> float | None:
            text = self.query_one(widget_id, Input).value.strip()
            return None if not text else float(text)

        try:
            lo, hi = number("#filter-min"), number("#filter-max")
        except ValueError:
            self.query_one("#filter-error", Static).update("score bounds must be numbers")
            return
        if lo is not None and hi is not None and lo > hi:
            self.query_one("#filter-error", Static).update(f"min {lo:g} is above max {hi:g}")
            return
        selected = self.query_one(SelectionList).selected
        self.dismiss({"labels": frozenset(selected) if selected else None, "score_min": lo, "score_max": hi,
                      "text": self.query_one("#filter-text", Input).value.strip()})

    def action_cancel(self) -> None:
        if isinstance(self.focused, Input):  # several fields: the first escape only leaves the text field
            self.query_one(SelectionList).focus()
            return
        self.dismiss(None)


class HelpScreen(GuardedDispatch, ModalScreen[None]):
    """Every key, generated from the action registry (with the user's keymap and label set)."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 96%; height: 92%; border: thick $accent; background: $surface; }
    HelpScreen DataTable { height: 1fr; }
    HelpScreen .hint { color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, keymap: dict[str, str], labels: list[str], scopes: list[str] | None = None) -> None:
        super().__init__()
        self.keymap, self.labels, self.scopes = keymap, labels, scopes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Keys (ctrl+p: command palette with every action; tui.keymap in the config remaps by action id)",
                         classes="hint")
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)

    #: the action id column is shown from this terminal width on (below, the descriptions need the room)
    IDS_FROM_WIDTH = 100

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        rows = actions.rows(self.keymap, self.labels,
                            list(self.scopes or []) + [s for s in actions.SCOPES if s not in (self.scopes or [])])
        keys_width = max(len(keys) for _, keys, _, _ in rows)
        ids_width = max(len(action_id) for _, _, action_id, _ in rows)
        show_ids = self.app.size.width >= self.IDS_FROM_WIDTH
        # the box is 96% wide; each column has one cell of padding on each side, plus the scroll bar
        room = int(self.app.size.width * 0.96) - 4 - (keys_width + 2) - ((ids_width + 2) if show_ids else 0)
        table.add_column("keys", width=keys_width)
        table.add_column("does", width=max(20, room))
        if show_ids:
            table.add_column("action id", width=ids_width)
        current = None
        for scope, keys, action_id, text in rows:
            if scope != current:
                current = scope
                table.add_row("", Text(scope, style="bold underline"), *([""] if show_ids else []))
            table.add_row(Text(keys), Text(text), *([Text(action_id)] if show_ids else []))
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
