"""A form generated from a config section's pydantic schema.

One row per key: the editor (a switch for booleans, a choice for ``Literal`` types, a text
field otherwise), the layer the value comes from (``default``, the workspace ``fmb.yaml``,
a task config, or ``TUI form`` once edited), the schema's description, and the engine's own
validation message under the field when the value is invalid.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union

import yaml
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

FORM_ORIGIN = "TUI form"
_ERROR_LINE = re.compile(r"^(?P<origin>.*?): (?P<section>[\w.]+)\.(?P<key>\w+) = .* is invalid: (?P<msg>.*)$")


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def is_optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in _args(annotation)


def base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in _args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def choices(annotation: Any) -> list[str] | None:
    t = base_type(annotation)
    if typing.get_origin(t) is Literal:
        return [str(a) for a in _args(t)]
    return None


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def parse(annotation: Any, text: str) -> Any:
    """Text of an input field -> the value handed to the schema (which does the checking)."""
    t = base_type(annotation)
    text = text.strip()
    if text == "":
        return None if is_optional(annotation) else ("" if t is str else None)
    if t is str:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot read {text!r}: {str(exc).splitlines()[0]}") from None


def error_lines(message: str) -> tuple[dict[str, str], list[str]]:
    """Split a ConfigError message into per-key messages (``key -> text``) and the rest."""
    per_key: dict[str, str] = {}
    other: list[str] = []
    for line in str(message).splitlines():
        m = _ERROR_LINE.match(line)
        if m:
            per_key[m["key"]] = m["msg"]
        elif line.strip():
            other.append(line)
    return per_key, other


class ConfigForm(VerticalScroll):
    """Fields of one section; :meth:`values` returns what the user typed (parsed), per key."""

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm .field { height: auto; margin-bottom: 1; }
    ConfigForm .field-row { height: auto; }
    ConfigForm .field-key { width: 20; text-style: bold; }
    ConfigForm .field-editor { width: 1fr; }
    ConfigForm Switch.field-editor { width: 10; height: 1; border: none; padding: 0; }
    ConfigForm .field-origin { width: 16; padding-left: 1; color: $text-muted; }
    ConfigForm .field-origin.-edited { color: $warning; }
    ConfigForm .field-help { color: $text-muted; padding-left: 20; }
    ConfigForm .field-error { color: $error; padding-left: 20; display: none; }
    ConfigForm .field-error.-shown { display: block; }
    """

    class Changed(Message):
        """A field was edited."""

    def __init__(self, section: str, schema: type, rows: list[tuple[str, Any, str]], id: str | None = None,
                 override_all: bool = False) -> None:
        super().__init__(id=id)
        self.section, self.schema = section, schema
        self.override_all = override_all
        self.base = {key: (value, origin) for key, value, origin in rows}

    def compose(self) -> ComposeResult:
        for key, info in self.schema.model_fields.items():
            value, origin = self.base.get(key, (None, "default"))
            with Vertical(classes="field", id=f"field-{key}"):
                with Horizontal(classes="field-row"):
                    yield Label(key, classes="field-key")
                    yield self._editor(key, info.annotation, value)
                    yield Static(self._short(origin), classes="field-origin", id=f"origin-{key}", markup=False)
                if info.description:
                    yield Static(info.description or "", classes="field-help", markup=False)
                yield Static("", classes="field-error", id=f"error-{key}", markup=False)

    @staticmethod
    def _short(origin: str) -> str:
        if "/" in origin:
            return "…/" + origin.rsplit("/", 1)[1]
        return origin

    def _editor(self, key: str, annotation: Any, value: Any):
        wid = f"edit-{key}"
        t = base_type(annotation)
        if t is bool:
            return Switch(bool(value), id=wid, classes="field-editor")
        options = choices(annotation)
        if options is not None:
            return Select([(o, o) for o in options], value=str(value) if value is not None else Select.NULL,
                          allow_blank=is_optional(annotation), id=wid, classes="field-editor", compact=True)
        return Input(to_text(value), id=wid, classes="field-editor", compact=True,
                     placeholder="(none)" if is_optional(annotation) else "")

    def raw(self) -> dict[str, Any]:
        """key -> parsed value, or a ValueError for text that could not be read."""
        out: dict[str, Any] = {}
        for key, info in self.schema.model_fields.items():
            widget = self.query_one(f"#edit-{key}")
            if isinstance(widget, Switch):
                out[key] = widget.value
            elif isinstance(widget, Select):
                out[key] = None if widget.value is Select.NULL else widget.value
            else:
                try:
                    out[key] = parse(info.annotation, widget.value)  # type: ignore[union-attr]
                except ValueError as exc:
                    out[key] = exc
        return out

    def changed(self) -> dict[str, Any]:
        """Only the keys whose value differs from the configured one (these form the ``TUI form`` layer).

        When the configured values themselves are invalid (``override_all``), every field is
        part of the form layer, so correcting the form is enough to submit.
        """
        out = {}
        for key, value in self.raw().items():
            if self.override_all:
                out[key] = value
                continue
            configured = self.base.get(key, (None, "default"))[0]
            if isinstance(value, ValueError) or value != configured:
                out[key] = value
        return out

    def mark(self, sources: dict[str, str], errors: dict[str, str]) -> None:
        for key in self.schema.model_fields:
            origin = self.query_one(f"#origin-{key}", Static)
            src = sources.get(key, self.base.get(key, (None, "default"))[1])
            origin.update(self._short(src))
            origin.set_class(src == FORM_ORIGIN, "-edited")
            err = self.query_one(f"#error-{key}", Static)
            err.update(errors.get(key, ""))
            err.set_class(key in errors, "-shown")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())  # validation is cheap and idempotent: the mount-time events are harmless

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())  # validation is cheap and idempotent: the mount-time events are harmless

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())  # validation is cheap and idempotent: the mount-time events are harmless
