"""Text from users, configs, files and exceptions is shown as text, never parsed as markup.

Textual parses a ``str`` given to ``Static``, ``notify``, a ``DataTable`` cell or a
palette command as markup: ``[/]`` in a label name or ``[Errno 2]`` in a message would
crash the render or vanish. Widgets get ``rich.text.Text`` from :func:`plain` /
:func:`styled`; the few APIs that only take markup strings get :func:`escape`.
"""

from __future__ import annotations

from rich.text import Text


def escape(text: object) -> str:
    """Markup that shows ``text`` literally (every ``[`` escaped, which Textual's own escape leaves as is for ``[X]``)."""
    return str(text).replace("[", "\\[")


def plain(text: object) -> Text:
    return Text(str(text))


def styled(*parts: str | tuple[object, str]) -> Text:
    """``styled("a ", ("b", "bold"))``: literal pieces, some with a style (no markup parsed)."""
    out = Text()
    for part in parts:
        if isinstance(part, tuple):
            out.append(str(part[0]), style=part[1])
        else:
            out.append(str(part))
    return out
