"""The Object screen's history line: who changed what, newest first."""

from fmb_engine.triage.labels import LabelEvent
from fmb_tui.screens.object import describe_history


def _event(i, field, value, user, undoes=None):
    return LabelEvent(i, "obj", field, value, None, undoes, None, None, user, "host", "s", 1_800_000_000.0 + 60 * i)


def test_history_names_the_author_of_every_change():
    text = describe_history([_event(3, "label", None, "ana", undoes=2), _event(2, "note", "odd", "bo"),
                             _event(1, "label", "lens", "bo")])
    parts = text.removeprefix("history: ").split(" · ")
    assert parts[0].startswith("label cleared (undo) by [b]ana[/] ")
    assert parts[1].startswith("note by [b]bo[/] ") and parts[2].startswith("label lens by [b]bo[/] ")
    assert describe_history([]) == "history: never labelled"
