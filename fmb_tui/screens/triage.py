"""Triage keys shared by the Anomalies and Object screens: labels, notes, undo, export."""

from __future__ import annotations

import time

from fmb_engine.errors import FMBError
from fmb_tui.label_writer import LabelFailed, LabelOp, LabelSaved
from fmb_tui.screens.dialogs import PromptDialog


class TriageMixin:
    """Needs ``triage_target() -> (object_id, system, rank)``, ``triage_changed()``, ``triage_move(delta)``
    and ``triage_next_unlabelled()``."""

    def triage_target(self) -> tuple[str | None, str | None, int | None]:
        raise NotImplementedError

    def triage_changed(self) -> None:
        """Labels changed (here or elsewhere): redraw what shows them."""

    def triage_move(self, delta: int) -> None:
        raise NotImplementedError

    def triage_next_unlabelled(self) -> None:
        raise NotImplementedError

    # --- actions ---------------------------------------------------------------------------

    def action_cursor_next(self) -> None:
        self.triage_move(1)

    def action_cursor_previous(self) -> None:
        self.triage_move(-1)

    def action_next_unlabelled(self) -> None:
        self.triage_next_unlabelled()

    def action_label(self, number: int) -> None:
        app = self.fmb  # type: ignore[attr-defined]
        labels = app.tui_config.labels
        oid, system, rank = self.triage_target()
        if oid is None:
            app.notify("no object selected", severity="warning")
            return
        if number and number > len(labels):
            app.notify(f"no label on key {number}: the label set has {len(labels)} (tui.labels)", severity="warning")
            return
        label = labels[number - 1] if number else None
        if app.labels.get(oid) == label:
            return
        app.change_label(LabelOp("label", oid, label, system, rank), reply_to=self)
        self.triage_changed()
        if app.tui_config.advance and number:
            self.triage_move(1)

    def action_note(self) -> None:
        app = self.fmb  # type: ignore[attr-defined]
        oid, system, rank = self.triage_target()
        if oid is None:
            return

        def done(text: str | None) -> None:
            if text is None:
                return
            app.change_label(LabelOp("note", oid, text.strip() or None, system, rank), reply_to=self)
            self.triage_changed()

        app.push_screen(PromptDialog(f"Note on {oid}", app.notes.get(oid, ""), "free text (empty clears it)",
                                     "enter saves, escape cancels"), done)

    def action_undo(self) -> None:
        self.fmb.change_label(LabelOp("undo"), reply_to=self)  # type: ignore[attr-defined]

    def action_export_labels(self) -> None:
        app = self.fmb  # type: ignore[attr-defined]
        path = app.workspace.root / "triage" / f"labels-{time.strftime('%Y%m%dT%H%M%S')}.csv"

        def export() -> str:
            app.label_writer.drain()
            return str(app.data.labels().export_csv(path))

        self.background(export, then=self._labels_exported)  # type: ignore[attr-defined]

    def _labels_exported(self, path: str) -> None:
        self.fmb.notify(f"labels exported to {path}", title="export")  # type: ignore[attr-defined]

    # --- results from the writer thread ------------------------------------------------------

    def on_label_saved(self, message: LabelSaved) -> None:
        app = self.fmb  # type: ignore[attr-defined]
        if message.op.kind == "undo":
            event = message.event
            if event is None:
                app.notify("nothing to undo in this session")
                return
            app.apply_event(event)
            shown = event.value if event.value is not None else "(none)"
            app.notify(f"undone: {event.field} of {event.object_id} is {shown} again")
            self.triage_changed()

    def on_label_failed(self, message: LabelFailed) -> None:
        """A user or data problem is said as it is; anything else is a bug: also logged with its traceback."""
        app = self.fmb  # type: ignore[attr-defined]
        error = message.error
        text = str(error) if isinstance(error, FMBError) else f"{type(error).__name__}: {error}"
        app.notify(text, title="label not saved" if message.op.kind != "undo" else "undo", severity="error", timeout=8)
        if not isinstance(error, FMBError):
            app.report_error(error, context=f"label writer: {message.op.kind} {message.op.object_id or ''}")
        app.reload_labels()
