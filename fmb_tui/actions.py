"""The one registry of actions: id -> default key, textual action, help text.

Screens build their ``BINDINGS`` from it (every binding carries its action id, so
``tui.keymap`` in the config can remap it through :meth:`App.set_keymap`), the help
screen and the command palette are generated from it, and ``docs/tui.md``'s key table
is :func:`markdown_table` (a test keeps them equal).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fmb_engine.errors import ConfigError
from fmb_engine.config.tui import DEFAULT_LABELS


@dataclass(frozen=True)
class Action:
    id: str  # "<scope>.<name>", the binding id users remap
    key: str  # default key(s), comma separated, Textual key names
    action: str  # Textual action run on the screen (or app) of the scope
    description: str  # short: footer and palette title
    help: str  # one sentence: help screen and palette
    show: bool = True  # in the footer
    priority: bool = False

    @property
    def scope(self) -> str:
        return self.id.split(".", 1)[0]


#: Scope -> where it applies (help-screen section titles, in this order).
SCOPES: dict[str, str] = {
    "app": "Everywhere",
    "triage": "Triage (Anomalies and Object screens)",
    "anomalies": "Anomalies: the ranking",
    "object": "Object: spectrum, image, neighbours",
    "jobs": "Jobs",
    "runs": "Runs",
    "workspace": "Workspace",
    "compare": "Compare",
    "figures": "Figures",
}

#: Screen name -> the scopes whose bindings it has (besides "app").
SCREEN_SCOPES: dict[str, tuple[str, ...]] = {
    "workspace": ("workspace",),
    "runs": ("runs",),
    "jobs": ("jobs",),
    "anomalies": ("triage", "anomalies"),
    "object": ("triage", "object"),
    "compare": ("compare",),
    "figures": ("figures",),
}

_A = Action
ACTIONS: tuple[Action, ...] = (
    # everywhere
    _A("app.workspace", "W", "app.show_screen('workspace')", "Workspace", "Workspace overview: survey, embeddings, rankings, jobs, next steps."),
    _A("app.runs", "R", "app.show_screen('runs')", "Runs", "Configure and submit a stage; recent runs and their manifests."),
    _A("app.jobs", "J", "app.show_screen('jobs')", "Jobs", "Live job table with logs, cancel and resubmit."),
    _A("app.anomalies", "A", "app.show_screen('anomalies')", "Anomalies", "The anomaly ranking of a system, with triage."),
    _A("app.compare", "C", "app.show_screen('compare')", "Compare", "Cross-system Spearman and Jaccard matrices."),
    _A("app.figures", "F", "app.show_screen('figures')", "Figures", "Export a figure of a ranking's top-k or a label set."),
    _A("app.help", "question_mark,f1", "app.help", "Help", "This help: every key, generated from the action registry."),
    _A("app.quit", "q", "app.quit", "Quit", "Quit (labels are already saved; nothing is lost).", priority=False),
    # triage
    _A("triage.next", "j,down", "cursor_next", "Next", "Move to the next candidate."),
    _A("triage.previous", "k,up", "cursor_previous", "Prev", "Move to the previous candidate."),
    *(
        _A(f"triage.label_{i}", str(i), f"label({i})", f"Label {i}",
           f"Set label {i} (default {DEFAULT_LABELS[i - 1] if i <= len(DEFAULT_LABELS) else 'unused'}) on the current object.",
           show=False)
        for i in range(1, 10)
    ),
    _A("triage.clear", "0", "label(0)", "Clear", "Clear the current object's label.", show=False),
    _A("triage.next_unlabelled", "N", "next_unlabelled", "Next unlabelled",
       "Move to the next candidate without a label, in the order shown (skips what is triaged)."),
    _A("triage.note", "n", "note", "Note", "Add or edit a free-text note on the current object."),
    _A("triage.undo", "u", "undo", "Undo", "Undo your last label or note (not other users')."),
    _A("triage.export", "e", "export_labels", "Export", "Export the labels as CSV into the workspace's triage/ folder."),
    # anomalies
    _A("anomalies.open", "enter,o", "open_object", "Open", "Open the current object: metadata, spectrum, image, neighbours."),
    _A("anomalies.top", "g,home", "cursor_top", "Top", "Jump to the first row.", show=False),
    _A("anomalies.bottom", "G,end", "cursor_bottom", "Bottom", "Jump to the last row.", show=False),
    _A("anomalies.page_down", "pagedown,ctrl+d", "page_down", "Page down", "Move one page down.", show=False),
    _A("anomalies.page_up", "pageup,ctrl+u", "page_up", "Page up", "Move one page up.", show=False),
    _A("anomalies.scroll_left", "left,h", "scroll_columns(-1)", "Cols left", "Scroll the system columns left.", show=False),
    _A("anomalies.scroll_right", "right,l", "scroll_columns(1)", "Cols right", "Scroll the system columns right.", show=False),
    _A("anomalies.system", "m", "choose_system", "System", "Choose the ranking: model x modality x method, or a fusion."),
    _A("anomalies.sort", "s", "choose_sort", "Sort", "Sort by any column (rank, score, label, object id, any system)."),
    _A("anomalies.reverse", "S", "reverse_sort", "Reverse", "Reverse the sort order.", show=False),
    _A("anomalies.filter", "f", "filter", "Filter", "Filter by label, score range and object id text."),
    _A("anomalies.search", "slash", "search", "Find id", "Filter by object id text.", show=False),
    _A("anomalies.clear_filter", "x", "clear_filter", "No filter", "Remove every filter.", show=False),
    _A("anomalies.jump", "colon", "jump", "Go to rank", "Jump to a rank of the current system."),
    _A("anomalies.rerank", "a", "rerank", "Re-rank",
       "Re-rank by the labels (discover rerank, in the background), show that order, go to its best unlabelled candidate."),
    _A("anomalies.preview", "p", "toggle_preview", "Preview", "Show or hide the spectrum and image preview.", show=False),
    _A("anomalies.reload", "r", "reload", "Reload", "Reload the ranking and labels from disk.", show=False),
    # object
    _A("object.back", "escape", "back", "Back", "Back to the previous screen."),
    _A("object.zoom_in", "plus,equals_sign", "zoom(0.5)", "Zoom in", "Zoom into the spectrum (around its centre)."),
    _A("object.zoom_out", "minus", "zoom(2.0)", "Zoom out", "Zoom out of the spectrum."),
    _A("object.pan_left", "left,h", "pan(-0.25)", "Pan left", "Pan the spectrum to shorter wavelengths.", show=False),
    _A("object.pan_right", "right,l", "pan(0.25)", "Pan right", "Pan the spectrum to longer wavelengths.", show=False),
    _A("object.reset", "r", "reset_view", "Reset", "Show the whole spectrum again.", show=False),
    _A("object.smooth", "s", "smooth", "Smooth", "Cycle the smoothing width (1, 3, 5, 9, 15, 25 pixels)."),
    _A("object.band", "b", "cycle_band", "Band", "Cycle the image: colour composite, VIS, NISP Y, J, H."),
    _A("object.neighbours", "v", "focus_neighbours", "Neighbours", "Focus the neighbour list (enter opens one).", show=False),
    # jobs
    _A("jobs.next", "j", "cursor_next", "Next", "Next job.", show=False),
    _A("jobs.previous", "k", "cursor_previous", "Prev", "Previous job.", show=False),
    _A("jobs.cancel", "c", "cancel_job", "Cancel", "Cancel the selected job (asks first; partial outputs are kept)."),
    _A("jobs.resubmit", "r", "resubmit_job", "Resubmit", "Resubmit the selected job when it failed, timed out or was cancelled (asks first)."),
    _A("jobs.stream", "e", "toggle_stream", "stdout/err", "Show the job's stdout or stderr."),
    _A("jobs.poll", "p", "poll_now", "Poll", "Poll the job states now."),
    # runs
    _A("runs.submit", "ctrl+s", "submit", "Submit", "Submit the stage with the form's values and executor."),
    _A("runs.reset", "ctrl+r", "reset_form", "Reset form", "Reset the form to the configured values."),
    # workspace
    _A("workspace.reload", "r", "reload", "Reload", "Read the workspace again."),
    # compare
    _A("compare.toggle", "t", "toggle_matrix", "Spearman/Jaccard", "Switch between the Spearman and Jaccard matrices."),
    _A("compare.reload", "r", "reload", "Reload", "Read the matrices again."),
    _A("compare.left", "h", "move(0,-1)", "Left", "Move to the cell on the left (← too; the system names stay put).", show=False),
    _A("compare.right", "l", "move(0,1)", "Right", "Move to the cell on the right (→ too).", show=False),
    _A("compare.down", "j", "move(1,0)", "Down", "Move to the cell below (↓ too).", show=False),
    _A("compare.up", "k", "move(-1,0)", "Up", "Move to the cell above (↑ too).", show=False),
    # figures
    _A("figures.export", "ctrl+s", "export", "Export", "Render the chosen figure for the chosen objects."),
)

BY_ID: dict[str, Action] = {a.id: a for a in ACTIONS}


#: shown first in every screen's footer, so that the key to all the others is visible even at 80 columns
LEAD = ("app.help",)


def bindings(*scopes: str, lead: Iterable[str] = ()):
    """Textual ``Binding`` objects of ``lead`` (action ids) and then of the given scopes.

    Textual is imported lazily: this module is docs-safe.
    """
    from textual.binding import Binding

    chosen = [BY_ID[i] for i in lead] + [a for a in ACTIONS if a.scope in scopes]
    return [Binding(a.key, a.action, a.description, show=a.show, id=a.id, priority=a.priority) for a in chosen]


def check_keymap(keymap: dict[str, str]) -> dict[str, str]:
    """Reject unknown action ids (with the closest valid id); returns the keymap."""
    for action_id in keymap:
        if action_id not in BY_ID:
            close = difflib.get_close_matches(action_id, list(BY_ID), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"tui.keymap: unknown action id {action_id!r}.{hint} "
                              "`fmb-tui --keys` lists every action id and its key.")
    return keymap


def display_key(keys: str) -> str:
    """``question_mark,f1`` -> ``? / F1``."""
    names = {"question_mark": "?", "slash": "/", "colon": ":", "plus": "+", "minus": "-", "equals_sign": "=",
             "escape": "Esc", "enter": "Enter", "pagedown": "PgDn", "pageup": "PgUp", "home": "Home", "end": "End",
             "left": "←", "right": "→", "up": "↑", "down": "↓"}
    out = []
    for key in keys.split(","):
        key = key.strip()
        if key in names:
            out.append(names[key])
        elif key.startswith("ctrl+"):
            out.append("Ctrl+" + key[5:].upper() if len(key) == 6 else "Ctrl+" + key[5:])
        elif len(key) > 1 and key[0] == "f" and key[1:].isdigit():
            out.append(key.upper())
        else:
            out.append(key)
    return " / ".join(out)


def label_of(action: Action, labels: Sequence[str]) -> str | None:
    """The label name that ``triage.label_<i>`` sets with these ``labels``; None for any other action or an unused number."""
    if not action.id.startswith("triage.label_"):
        return None
    i = int(action.id.rsplit("_", 1)[1])
    return labels[i - 1] if i <= len(labels) else None


def rows(keymap: dict[str, str] | None = None, labels: Iterable[str] = DEFAULT_LABELS,
         scopes: Iterable[str] | None = None) -> list[tuple[str, str, str, str]]:
    """(scope title, keys, action id, help) for the help screen, with the effective keys and label names."""
    keymap = keymap or {}
    labels = list(labels)
    wanted = list(scopes) if scopes is not None else list(SCOPES)
    out = []
    for scope in wanted:
        for a in ACTIONS:
            if a.scope != scope:
                continue
            text = a.help
            if a.id.startswith("triage.label_"):
                label = label_of(a, labels)
                if label is None:
                    continue
                text = f"Label the current object {label!r}."
            out.append((SCOPES[scope], display_key(keymap.get(a.id, a.key)), a.id, text))
    return out


def markdown_table() -> str:
    """The default key table of ``docs/tui.md``."""
    lines = ["| where | keys | action id | does |", "|---|---|---|---|"]
    for scope, keys, action_id, text in rows():
        shown = keys.replace("|", "\\|")
        lines.append(f"| {scope} | {shown} | `{action_id}` | {text} |")
    return "\n".join(lines) + "\n"
