"""`fmb-engine triage ...`: the labels given in fmb-tui, for scripts and papers (read-only)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from fmb_engine.cli.common import ConfigOpt, Typer, WorkspaceOpt, console, find_workspace, section
from fmb_engine.cli.output import Column, Format, FormatOpt, emit, table
from fmb_engine.errors import DataError

app = Typer(help="Triage labels given in fmb-tui: counts, who labelled what, CSV export.", no_args_is_help=True)


def _store(workspace, config):
    from fmb_engine.triage.labels import LabelStore, labels_path

    ws = find_workspace(workspace)
    path = labels_path(ws)
    if not path.is_file():
        raise DataError(f"no labels yet: {path} does not exist (label objects in `fmb-tui {ws.root}`)")
    tui = section("tui", ws, config).values
    return ws, LabelStore.for_workspace(ws, journal=tui.label_journal), list(tui.labels)


def check_labels(wanted: list[str], configured: list[str], used: list[str]) -> None:
    """Refuse a label that is neither in the label set (``tui.labels``) nor given to any object.

    A typo would otherwise export an empty file that looks like "nothing labelled that yet".
    """
    known = list(dict.fromkeys([*configured, *used]))
    unknown = [lbl for lbl in wanted if lbl not in known]
    if unknown:
        raise DataError(f"unknown label(s) {', '.join(map(repr, unknown))}; known labels: {', '.join(known)} "
                        "(the tui.labels set and every label given so far); nothing written")


@app.command()
def summary(workspace: WorkspaceOpt = None, config: ConfigOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Objects per label, and the people and sessions that labelled them."""
    ws, store, _ = _store(workspace, config)
    with store:
        counts = store.counts()
        events = store.history()
    labels = [{"label": label, "objects": n} for label, n in counts.items()]
    data = {"labels": labels, "changes": len(events), "users": sorted({e.user for e in events}),
            "sessions": len({e.session for e in events})}

    def shown():
        columns = (Column("label"), Column("objects", cell="{:,}".format, justify="right"))
        return [table(labels, columns, title=f"labels in {escape(str(ws.root))}", show_edge=False),
                f"{data['changes']:,} changes by {', '.join(map(escape, data['users'])) or 'nobody'} "
                f"in {data['sessions']} session(s)"]

    emit(fmt, data, shown, rows=labels)


@app.command()
def export(
    out: Path = typer.Argument(..., help="CSV file to write (atomically)."),
    history: bool = typer.Option(False, "--history", help="Every change (append-only history) instead of the current labels."),
    labels: list[str] = typer.Option(None, "--label", "-l", help="Only objects whose current label is this (repeatable)."),
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the current labels (object_id, label, note, who, when) or the whole history as CSV."""
    _, store, configured = _store(workspace, config)
    with store:
        if labels:
            check_labels(labels, configured, list(store.counts()))
        path = store.export_csv(out, history=history, labels=labels or None)
    console.print(f"written: [bold]{escape(str(path))}[/]")
