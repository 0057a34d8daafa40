"""Object screen: metadata, the spectrum with its lines (zoom, pan, smoothing), the image, neighbours."""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from fmb_engine.errors import FMBError
from fmb_tui.safe_text import escape
from fmb_tui.screens.base import FMBScreen
from fmb_tui.screens.triage import TriageMixin
from fmb_tui.widgets.plots import ImageView, SpectrumPlot


def describe_history(events) -> str:
    """``label lens by ana 12-03 21:05 · note by bo 12-02 10:11``: who changed what, newest first."""
    parts = []
    for e in events:
        if not e.value:
            what = f"{e.field} cleared"
        else:  # a label is short and worth showing; a note is just "note"
            what = f"label {e.value}" if e.field == "label" else e.field
        if e.undoes:
            what += " (undo)"
        parts.append(f"{what} by [b]{escape(e.user)}[/] {time.strftime('%m-%d %H:%M', time.localtime(e.time))}")
    return "history: " + " · ".join(parts) if parts else "history: never labelled"


def _fmt(value, spec: str = ".3f") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "?" if math.isnan(v) else format(v, spec)


class ObjectScreen(TriageMixin, FMBScreen):
    NAME = "object"
    BINDINGS = FMBScreen.screen_bindings("object")

    def __init__(self, object_id: str, navigator=None) -> None:
        super().__init__()
        self.object_id = object_id
        self.navigator = navigator
        self.obj = None
        self.problem = ""  # why there is no spectrum or image (no survey, not in it): said in place, not as a popup
        self.history = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(escape(self.object_id), id="object-meta")
        yield SpectrumPlot(smoothing=self.fmb.tui_config.smoothing, id="object-spectrum")
        with Horizontal(id="object-bottom"):
            with Vertical(id="object-image-box"):
                yield Static("", id="image-title")
                yield ImageView(id="object-image")
            with Vertical(id="object-neighbours-box"):
                yield Static("nearest neighbours", id="neighbours-title")
                yield OptionList(id="neighbours")
        yield Footer()

    def on_mount(self) -> None:
        self.show_band()
        self.load(self.object_id)

    def show_band(self) -> None:
        """Name the band the image shows (the image alone does not say)."""
        self.query_one("#image-title", Static).update(f"band: [b]{self.query_one(ImageView).band_title}[/]")

    def load(self, object_id: str) -> None:
        self.object_id = object_id
        self.obj, self.problem, self.history = None, "", ""
        self.query_one("#object-meta", Static).update(f"[b]{escape(object_id)}[/] · reading…")
        self.background(self._read_object, object_id, then=self._show_object, failed=self._object_failed,
                        group="object")
        self.background(self._neighbours, object_id, then=self._show_neighbours, group="neighbours")
        self.load_history()

    def load_history(self) -> None:
        self.background(self._history, self.object_id, then=self._show_history, group="history")

    def _history(self, object_id: str):
        return object_id, self.data.label_history(object_id)

    def _show_history(self, result) -> None:
        object_id, events = result
        if object_id == self.object_id:
            self.history = describe_history(events)
            self.update_meta()

    def _neighbours(self, object_id: str):
        try:
            return object_id, self.data.neighbours(object_id), None
        except FMBError as exc:
            return object_id, None, str(exc)

    def _read_object(self, object_id: str):
        try:
            return object_id, self.data.get_object(object_id), ""
        except FMBError as exc:  # no survey behind the ranking, or not in it: the screen says so, no popup
            return object_id, None, str(exc)

    def _object_failed(self, error: Exception) -> None:
        """A bug, not a data problem: already logged and notified; the screen says so too."""
        self._show_object((self.object_id, None, f"{type(error).__name__}: {error}"))

    def _show_object(self, result) -> None:
        object_id, obj, problem = result
        if object_id != self.object_id:
            return
        self.obj, self.problem = obj, problem
        if obj is None:  # no spectrum or image: the object's ranks are what there is to show in their place
            ranks = self.ranks_line()
            self.query_one(SpectrumPlot).show_message(problem + (f"\n\n{ranks}" if ranks else ""))
            self.query_one(ImageView).show_message("")
            self.query_one("#image-title", Static).update("no image")
        else:
            self.query_one(SpectrumPlot).set_object(obj)
            self.query_one(ImageView).set_object(obj)
            self.show_band()
        self.update_meta()

    def _show_neighbours(self, result) -> None:
        object_id, frame, problem = result
        if object_id != self.object_id:
            return
        ol = self.query_one("#neighbours", OptionList)
        ol.clear_options()
        if frame is None or not len(frame):
            self.query_one("#neighbours-title", Static).update(escape(problem or "no neighbours recorded for this object"))
            return
        self.query_one("#neighbours-title", Static).update("nearest neighbours (v, then enter opens one)")
        options = []
        for i, r in enumerate(frame.itertuples(index=False)):
            label = self.fmb.labels.get(r.neighbour_id, "")
            text = f"{r.model}/{r.modality} #{r.neighbour} {r.neighbour_id}  sim {r.similarity:.3f}" + (f"  [{label}]" if label else "")
            options.append(Option(Text(text), id=f"{i}|{r.neighbour_id}"))
        ol.add_options(options)

    def update_meta(self) -> None:
        obj = self.obj
        if obj is None and not self.problem:
            return  # still reading
        oid = self.object_id
        label = self.fmb.labels.get(oid)
        note = self.fmb.notes.get(oid)
        line1 = [f"[b]{escape(oid)}[/]"]
        m = obj.meta if obj is not None else {}
        if obj is not None:
            line1 += [f"z={_fmt(m.get('redshift'))}", f"split {escape(m.get('split', '?'))}"]
        if m.get("anomaly_class"):
            line1.append(f"injected: [b]{escape(m['anomaly_class'])}[/]")
        _, system, rank = self.triage_target()
        if rank is not None:
            line1.append(f"rank {rank:,} in {escape(system)}")
        line2 = [] if obj is None else [f"ra {_fmt(m.get('ra'), '.5f')} dec {_fmt(m.get('dec'), '.5f')}",
                                        f"logM {_fmt(m.get('logM'), '.2f')}", f"logSFR {_fmt(m.get('logSFR'), '.2f')}"]
        line2.append(f"label [b]{escape(label)}[/]" if label else "unlabelled")
        if note:
            line2.append(f"note: {escape(note[:60])}")
        spec = self.query_one(SpectrumPlot)
        view = spec.view
        if view is not None:
            line2.append(f"λ {view.lo:.0f}–{view.hi:.0f} Å, smoothing {view.smoothing}")
        lines = [" · ".join(line1), " · ".join(line2)] + ([self.history] if self.history else [])
        self.query_one("#object-meta", Static).update("\n".join(lines))

    def ranks_line(self) -> str | None:
        """``ranks: syn/img/flow 12 · syn/fused/geo 3 …`` (plain text): the object's rank in every loaded
        system of the ranking it was opened from (None when opened from a neighbour)."""
        from fmb_tui.ranking_model import short_system

        nav = self.navigator
        data = getattr(nav, "rdata", None)
        row = nav.table.current_row() if data is not None else None
        if row is None or data.id_at(row) != self.object_id:
            return None
        parts = []
        for system in data.systems:
            if data.loaded(system):
                rank = data.rank_of(system, row)
                parts.append(f"{short_system(system)} {'-' if rank is None else f'{rank:,}'}")
        return "ranks: " + " · ".join(parts) if parts else None

    # --- triage hooks ----------------------------------------------------------------------------

    def triage_target(self):
        """This object, and its rank in the ranking it was opened from (the navigator's current row)."""
        nav = self.navigator
        if nav is not None:
            oid, system, rank = nav.triage_target()
            if oid == self.object_id:
                return oid, system, rank
        return self.object_id, None, None

    def triage_changed(self) -> None:
        if self.is_mounted:
            self.update_meta()
        if self.navigator is not None:  # its table, its top-k bar and the auto re-rank count these labels too
            self.navigator.triage_changed()

    def on_label_saved(self, message) -> None:
        super().on_label_saved(message)
        self.load_history()  # the change is committed now: show who made it

    def triage_move(self, delta: int) -> None:
        if self.navigator is None:
            self.fmb.notify("opened from a neighbour: there is no ranking to walk (escape goes back)")
            return
        oid, _, _ = self.navigator.step(delta)
        if oid is not None and oid != self.object_id:
            self.load(oid)

    def triage_next_unlabelled(self) -> None:
        if self.navigator is None:
            self.fmb.notify("opened from a neighbour: there is no ranking to walk (escape goes back)")
            return
        if self.navigator.triage_next_unlabelled():
            oid, _, _ = self.navigator.triage_target()
            if oid is not None and oid != self.object_id:
                self.load(oid)

    # --- actions -------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_zoom(self, factor: float) -> None:
        self.query_one(SpectrumPlot).zoom(factor)
        self.update_meta()

    def action_pan(self, fraction: float) -> None:
        self.query_one(SpectrumPlot).pan(fraction)
        self.update_meta()

    def action_reset_view(self) -> None:
        self.query_one(SpectrumPlot).reset()
        self.update_meta()

    def action_smooth(self) -> None:
        self.query_one(SpectrumPlot).cycle_smoothing()
        self.update_meta()

    def action_cycle_band(self) -> None:
        self.query_one(ImageView).cycle_band()
        self.show_band()

    def action_focus_neighbours(self) -> None:
        ol = self.query_one("#neighbours", OptionList)
        if ol.option_count and ol.highlighted is None:
            ol.highlighted = 0
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        neighbour = str(event.option.id).split("|", 1)[1]
        self.app.push_screen(ObjectScreen(neighbour, navigator=None))
