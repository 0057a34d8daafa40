"""Anomalies screen: one system's ranking (any size), every system's columns, triage and a live preview."""

from __future__ import annotations

import math
import time
from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, ProgressBar, Static

from fmb_engine.errors import FMBError
from fmb_engine.rankings import RankingsError
from fmb_tui import actions
from fmb_tui import ranking_model as rm
from fmb_tui.discovery import ActiveState, auto_due, describe, is_active
from fmb_tui.safe_text import escape
from fmb_tui.screens.base import FMBScreen
from fmb_tui.screens.dialogs import ChoiceDialog, FilterDialog, PromptDialog
from fmb_tui.screens.triage import TriageMixin
from fmb_tui.widgets.plots import ImageView, SpectrumPlot
from fmb_tui.widgets.ranking_table import LABEL_COLOURS, RankingTable

PREVIEW_DELAY_S = 0.06  # wait for the key repeat to settle before reading an object
MORE_SYSTEMS_DELAY_S = 0.2  # let the first rows paint before the other systems' columns load


class AnomaliesScreen(TriageMixin, FMBScreen):
    NAME = "anomalies"
    DEFAULT_CSS = """
    #anomalies-sources { height: auto; padding: 0 1; color: $warning; display: none; }
    #anomalies-active { height: auto; padding: 0 1; color: $success; display: none; }
    #anomalies-active.stale { color: $warning; }
    """
    BINDINGS = FMBScreen.screen_bindings("anomalies")

    def __init__(self) -> None:
        super().__init__()
        self.rdata: rm.RankingData | None = None
        self.spec: rm.ViewSpec | None = None
        self._preview_timer = None
        self._preview_id: str | None = None
        self._preview_obj = None  # the object read for the preview (its metadata stays in the title on relabels)
        self._pending_keep: int | None = None
        self._pending_cursor: int | None = None
        self._more_pending = False
        self._rerank_started: float | None = None  # monotonic start of the re-rank in flight (one at a time)
        self._land_unlabelled = False  # after a re-rank: the cursor goes to an unlabelled row
        self._auto_tried: str | None = None  # labels digest an automatic re-rank was started for
        self._auto_paused = False  # an automatic re-rank failed: none until one by the key works

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        cfg = self.fmb.tui_config
        yield Header()
        yield Static("opening the ranking…", id="anomalies-status")
        yield Static("", id="anomalies-sources")
        yield Static("", id="anomalies-active")
        with Horizontal(id="triage-bar"):
            yield ProgressBar(total=cfg.top_k, show_eta=False, show_percentage=False, id="topk-bar")
            yield Static("", id="topk-text")
        legend = "  ".join(f"[b {LABEL_COLOURS[i % len(LABEL_COLOURS)]}]{i + 1}[/] {escape(lbl)}" for i, lbl in enumerate(cfg.labels))
        yield Static(legend + "  [b]0[/] clear  [b]n[/] note  [b]u[/] undo", id="label-legend")
        yield RankingTable(label_set=list(cfg.labels), id="ranking")
        with Horizontal(id="preview"):
            yield ImageView(id="preview-image")
            with Vertical(id="preview-right"):
                yield Static("", id="preview-title")
                yield SpectrumPlot(smoothing=cfg.smoothing, id="preview-spectrum")
        yield Footer()

    @property
    def table(self) -> RankingTable:
        return self.query_one(RankingTable)

    def on_mount(self) -> None:
        self.query_one("#preview").display = self.fmb.tui_config.preview
        self.table.focus()
        self.open_ranking(self.fmb.start_system)

    def on_screen_resume(self) -> None:
        self.triage_changed()
        if self.rdata is not None:  # a detection run may have rewritten the ranking meanwhile
            self.background(self.data.ranking_changed, self.rdata, then=self._note_ranking_changed, group="ranking-changed")

    def _note_ranking_changed(self, changed: bool) -> None:
        if changed:
            self.fmb.notify("the ranking on disk has changed (a new detection run): r reloads it", title="ranking")

    # --- loading -----------------------------------------------------------------------------

    def open_ranking(self, system: str | None = None) -> None:
        self.query_one("#anomalies-status", Static).update("opening the ranking…")
        self.background(self.data.open_ranking, system, then=self._show_ranking, failed=self._ranking_failed,
                        group="ranking")

    def _ranking_failed(self, error: Exception) -> None:
        self.query_one("#anomalies-status", Static).update(escape(error))
        self.table.empty_message = str(error) if isinstance(error, RankingsError) else "no ranking"
        self.table.refresh()

    def _show_ranking(self, result: tuple[rm.RankingData, str], keep_row: int | None = None) -> None:
        data, system = result
        self.rdata = data
        self.spec = rm.ViewSpec(system)
        sources = rm.describe_sources(data.provenance)
        line = self.query_one("#anomalies-sources", Static)
        line.update(Text(sources or ""))
        line.display = sources is not None
        self._more_pending = True  # the other systems' columns load once the first rows are on screen
        self.recompute(keep_row=keep_row, cursor=0 if keep_row is None else None)

    def _add_systems(self, arrays) -> None:
        if self.rdata is None:
            return
        for system, (rank, score) in arrays.items():
            self.rdata.add_system(system, rank, score)
        self.table.refresh_columns()
        self.update_status()

    def recompute(self, keep_row: int | None = None, cursor: int | None = None) -> None:
        """Sort and filter in a worker thread (a million rows take a fraction of a second)."""
        if self.rdata is None or self.spec is None:
            return
        self._pending_keep, self._pending_cursor = keep_row, cursor
        self.update_status(busy=True)
        self.background(self._compute, self.rdata, self.spec, dict(self.fmb.labels), then=self._show_order, group="order")

    @staticmethod
    def _compute(data, spec, labels):
        return spec, rm.compute_order(data, spec, labels)

    def _show_order(self, result) -> None:
        spec, order = result
        if spec != self.spec or self.rdata is None:
            return
        self.table.set_view(self.rdata, order, spec.system, self.fmb.labels, self.fmb.notes,
                            keep_row=self._pending_keep, cursor=self._pending_cursor,
                            sorted_by=(rm.sort_column(spec), spec.descending))
        self.table.show_column(rm.sort_column(spec))
        if self._land_unlabelled:
            self._land_unlabelled = False
            self._to_unlabelled()
        self.update_status()
        self.update_progress()
        self.check_active()
        if self._more_pending:
            self._more_pending = False
            others = [s for s in self.rdata.systems if not self.rdata.loaded(s)]
            if others:  # after the first rows are painted: reading them competes for the CPU
                self.set_timer(MORE_SYSTEMS_DELAY_S, lambda: self.background(
                    self.data.load_systems, self.rdata, others, then=self._add_systems, group="ranking-more"))

    # --- status ------------------------------------------------------------------------------

    def update_status(self, busy: bool = False) -> None:
        if self.rdata is None or self.spec is None:
            return
        table = self.table
        loaded = sum(1 for s in self.rdata.systems if self.rdata.loaded(s))
        more = f" · loading systems {loaded}/{len(self.rdata.systems)}" if loaded < len(self.rdata.systems) else ""
        where = f"row {table.cursor + 1:,} of {table.n_rows:,}" if table.n_rows else "no rows"
        if self.spec.filtered:
            where += f" (of {self.rdata.n:,})"
        running = " · re-ranking by the labels…" if self._rerank_started is not None else ""
        text = (f"[b]{escape(self.spec.system)}[/] · {escape(self.spec.describe())} · {where}{more}"
                f"{' · working…' if busy else ''}{running}")
        self.query_one("#anomalies-status", Static).update(text, layout=False)

    def update_progress(self) -> None:
        if self.rdata is None or self.spec is None:
            return
        k = min(self.fmb.tui_config.top_k, self.rdata.n)
        done = self.rdata.labelled_in_top(self.spec.system, k, self.fmb.labels)
        bar = self.query_one("#topk-bar", ProgressBar)
        bar.update(total=k, progress=done)
        self.query_one("#topk-text", Static).update(f" top-{k}: {done}/{k} labelled", layout=False)

    def triage_changed(self) -> None:
        if not self.is_mounted:
            return
        self.table.set_labels(self.fmb.labels, self.fmb.notes)
        self.update_progress()
        self.update_title()
        self.check_active()

    # --- active discovery: re-rank by the labels ---------------------------------------------------

    def check_active(self) -> None:
        """Compare the labels with those the active order reflects (a worker): the line under the status, auto mode."""
        if self.spec is None or not self.fmb.labels_loaded:
            return  # before the labels are read every label would look new
        self.background(self.data.active_state, self.spec.system, dict(self.fmb.labels), then=self._show_active,
                        group="active-state")

    def _show_active(self, state: ActiveState) -> None:
        line = self.query_one("#anomalies-active", Static)
        shown = self.spec is not None and is_active(self.spec.system) and state.system == self.spec.system
        line.display = shown
        if shown:
            line.update(Text(describe(state, self._rerank_key())))
            line.set_class(bool(state.stale) or state.problem is not None, "stale")
        if not self._auto_paused and self._rerank_started is None and auto_due(state, self._auto_tried):
            self._auto_tried = state.digest
            since = "since the last re-rank" if state.record is not None else "and nothing re-ranked yet"
            self.fmb.notify(f"{state.stale} label(s) changed {since} (discover.auto_every = {state.auto_every}): "
                            "re-ranking in the background", title="auto re-rank")
            self.start_rerank(auto=True)

    def _rerank_key(self) -> str:
        action = actions.BY_ID["anomalies.rerank"]
        return actions.display_key(self.fmb.effective_keymap().get(action.id, action.key))

    def start_rerank(self, auto: bool = False) -> None:
        """``discover rerank`` in a worker; one at a time (a second request is refused and said)."""
        if self._rerank_started is not None:
            seconds = time.monotonic() - self._rerank_started
            self.fmb.notify(f"a re-rank is already running ({seconds:.0f} s so far); the order changes when it is done",
                            title="re-rank", severity="warning")
            return
        self._rerank_started = time.monotonic()
        self.update_status()
        self.background(self._rerank, then=self._reranked, failed=partial(self._rerank_failed, auto), group="rerank")

    def _rerank(self):
        self.fmb.label_writer.drain()  # the engine reads the labels from the store: this session's are in it
        return self.data.rerank()

    def _reranked(self, result) -> None:
        summary, opened, best_row = result
        self._rerank_started = None
        self._auto_paused = False
        used, total = summary.get("labels_used", 0), summary.get("labels_total", 0)
        message = f"{summary['system']}: {summary.get('strategy')} on {used} of {total} label(s)"
        if summary.get("not_in_run"):
            message += f" ({summary['not_in_run']} on objects not in the embedding run)"
        for note in summary.get("notes") or ():
            message += f"; {note}"
        self.fmb.notify(message, title="re-ranked")
        self._land_unlabelled = True
        self._show_ranking(opened, keep_row=best_row)

    def _rerank_failed(self, auto: bool, error: Exception) -> None:
        """Already notified (and logged when a bug); the order stays as it was."""
        self._rerank_started = None
        if auto:
            self._auto_paused = True
            self.fmb.notify(f"automatic re-ranks are paused until a re-rank by {self._rerank_key()} works",
                            title="auto re-rank", severity="warning")
        self.update_status()

    def _to_unlabelled(self) -> None:
        """Cursor to the first unlabelled row of the order unless it is on one already."""
        table = self.table
        row = table.current_row()
        if self.rdata is None or row is None or self.rdata.id_at(row) not in self.fmb.labels:
            return
        position = rm.next_unlabelled(self.rdata, table.order, -1, self.fmb.labels)
        if position is not None:
            table.move_cursor(position)

    # --- cursor and preview --------------------------------------------------------------------

    def on_ranking_table_cursor_moved(self, message: RankingTable.CursorMoved) -> None:
        self.update_status()
        if self._preview_timer is not None:
            self._preview_timer.stop()
        if message.object_id is None:
            return
        self._preview_timer = self.set_timer(PREVIEW_DELAY_S, lambda: self.load_preview(message.object_id))

    def load_preview(self, object_id: str) -> None:
        self._preview_id, self._preview_obj = object_id, None
        self.update_title()
        if not self.query_one("#preview").display:
            return
        self.background(self._read_object, object_id, then=self._show_preview, failed=partial(self._preview_failed, object_id),
                        group="preview")

    def _read_object(self, object_id: str):
        try:
            return object_id, self.data.get_object(object_id), None
        except FMBError as exc:  # a missing object or a damaged survey: said in the preview, no popup per row
            return object_id, None, str(exc)

    def _preview_failed(self, object_id: str, error: Exception) -> None:
        """A bug, not a data problem: already logged and notified; the preview says so too."""
        self._show_preview((object_id, None, f"{type(error).__name__}: {error}"))

    def _show_preview(self, result) -> None:
        object_id, obj, problem = result
        if object_id != self._preview_id:
            return
        spectrum = self.query_one("#preview-spectrum", SpectrumPlot)
        image = self.query_one("#preview-image", ImageView)
        if obj is None:
            spectrum.show_message(problem or "not in the survey")
            image.show_message("")
        else:
            spectrum.set_object(obj)
            image.set_object(obj)
        self._preview_obj = obj
        self.update_title()

    def update_title(self) -> None:
        oid, obj = self._preview_id, self._preview_obj
        if oid is None:
            return
        label = self.fmb.labels.get(oid)
        note = self.fmb.notes.get(oid)
        parts = [f"[b]{escape(oid)}[/]"]
        if obj is not None:
            z = obj.meta.get("redshift")
            known = z is not None and math.isfinite(float(z))  # imported rows may have none (NaN)
            parts.append(f"z={float(z):.3f}" if known else "z=?")
            if obj.meta.get("anomaly_class"):
                parts.append(f"injected: {escape(obj.meta['anomaly_class'])}")
        if label:
            parts.append(f"label [b]{escape(label)}[/]")
        if note:
            parts.append(f"note: {escape(note[:40])}")
        self.query_one("#preview-title", Static).update(" · ".join(parts), layout=False)

    # --- triage hooks --------------------------------------------------------------------------

    def triage_target(self):
        table = self.table
        row = table.current_row()
        if row is None or self.rdata is None or self.spec is None:
            return None, None, None
        rank = self.rdata.rank_of(self.spec.system, row) if self.rdata.loaded(self.spec.system) else None
        return self.rdata.id_at(row), self.spec.system, rank

    def triage_move(self, delta: int) -> None:
        self.table.move_cursor(self.table.cursor + delta)

    def triage_next_unlabelled(self) -> bool:
        """Cursor to the next unlabelled row of the current order; False (and a hint) when there is none."""
        table = self.table
        if self.rdata is None or not table.n_rows:
            return False
        position = rm.next_unlabelled(self.rdata, table.order, table.cursor, self.fmb.labels)
        if position is None:
            self.fmb.notify("every candidate below the cursor is labelled (g goes to the top)")
            return False
        table.move_cursor(position)
        return True

    def step(self, delta: int) -> tuple[str | None, str | None, int | None]:
        """Used by the Object screen to walk the same ranking."""
        self.triage_move(delta)
        return self.triage_target()

    # --- actions -------------------------------------------------------------------------------

    def action_cursor_top(self) -> None:
        self.table.move_cursor(0)

    def action_cursor_bottom(self) -> None:
        self.table.move_cursor(self.table.n_rows - 1)

    def action_page_down(self) -> None:
        self.table.move_cursor(self.table.cursor + self.table.page)

    def action_page_up(self) -> None:
        self.table.move_cursor(self.table.cursor - self.table.page)

    def action_scroll_columns(self, delta: int) -> None:
        self.table.scroll_columns(delta)

    def action_open_object(self) -> None:
        oid, system, rank = self.triage_target()
        if oid is None:
            return
        from fmb_tui.screens.object import ObjectScreen

        self.app.push_screen(ObjectScreen(oid, navigator=self))

    def action_choose_system(self) -> None:
        if self.rdata is None:
            return
        options = []
        for name in self.rdata.systems:
            s = rm.parse_system(name)
            kind = "fusion" if s.fused else s.modality
            options.append((name, f"{rm.with_short(name)}   {kind}{'' if self.rdata.loaded(name) else ', loading'}"))
        options.sort(key=lambda o: (not rm.parse_system(o[0]).fused, o[0]))

        def chosen(name: str | None) -> None:
            if name and self.spec is not None and name != self.spec.system:
                if not self.rdata.loaded(name):  # type: ignore[union-attr]
                    self.fmb.notify(f"{name} is still loading; try again in a moment", severity="warning")
                    return
                self.spec = rm.ViewSpec(name, labels=self.spec.labels, text=self.spec.text)
                self.recompute(cursor=0)

        self.app.push_screen(ChoiceDialog("Ranking to show (system or fusion)", options, self.spec.system if self.spec else None), chosen)

    def action_choose_sort(self) -> None:
        if self.rdata is None or self.spec is None:
            return

        def chosen(key: str | None) -> None:
            if key and self.spec is not None:
                system = key.split(":", 1)[1] if ":" in key else None
                if system and not self.rdata.loaded(system):  # type: ignore[union-attr]
                    self.fmb.notify(f"{system} is still loading; try again in a moment", severity="warning")
                    return
                self.spec = self.spec.with_(sort=key, descending=rm.default_descending(key))
                self.recompute(cursor=0)

        self.app.push_screen(ChoiceDialog("Sort by", rm.sort_keys(self.rdata), self.spec.sort), chosen)

    def action_reverse_sort(self) -> None:
        if self.spec is not None:
            self.spec = self.spec.with_(descending=not self.spec.descending)
            self.recompute(cursor=0)

    def action_filter(self) -> None:
        if self.spec is None:
            return
        spec = self.spec

        def chosen(result: dict | None) -> None:
            if result is not None and self.spec is not None:
                self.spec = self.spec.with_(**result)
                self.recompute(keep_row=self.table.current_row())

        self.app.push_screen(FilterDialog(list(self.fmb.tui_config.labels), spec.labels, spec.score_min, spec.score_max,
                                          spec.text), chosen)

    def action_search(self) -> None:
        if self.spec is None:
            return

        def chosen(text: str | None) -> None:
            if text is not None and self.spec is not None:
                self.spec = self.spec.with_(text=text.strip())
                self.recompute(cursor=0)

        self.app.push_screen(PromptDialog("Object id contains", self.spec.text, "text (empty: no id filter)"), chosen)

    def action_clear_filter(self) -> None:
        if self.spec is not None and self.spec.filtered:
            self.spec = self.spec.with_(labels=None, score_min=None, score_max=None, text="")
            self.recompute(keep_row=self.table.current_row())

    def action_jump(self) -> None:
        if self.rdata is None or self.spec is None:
            return
        n = self.rdata.ranked(self.spec.system)

        def check(text: str) -> str | None:
            try:
                value = int(text.replace(",", "").strip())
            except ValueError:
                return "a rank is a whole number"
            return None if 1 <= value <= n else f"ranks go from 1 to {n:,}"

        def chosen(text: str | None) -> None:
            if text is None or self.rdata is None or self.spec is None:
                return
            rank = int(text.replace(",", "").strip())
            row = int(self.rdata.order_by_rank(self.spec.system)[rank - 1])
            if self.spec.sort == "rank" and not self.spec.descending and not self.spec.filtered:
                self.table.move_cursor(rank - 1)
            else:  # back to the plain ranking, then to that row
                self.spec = rm.ViewSpec(self.spec.system)
                self.recompute(keep_row=row)

        self.app.push_screen(PromptDialog(f"Go to rank of {self.spec.system}", "", f"1 .. {n:,}", check=check), chosen)

    def action_toggle_preview(self) -> None:
        preview = self.query_one("#preview")
        preview.display = not preview.display
        if preview.display and self._preview_id:
            self.load_preview(self._preview_id)

    def action_rerank(self) -> None:
        self.start_rerank()

    def action_reload(self) -> None:
        self.fmb.reload_labels()
        self.open_ranking(self.spec.system if self.spec else None)
