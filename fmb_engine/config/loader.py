"""Layered configuration with the provenance of every value.

Layers, lowest to highest: built-in defaults < workspace ``fmb.yaml`` < task
config (``--config FILE``) < command-line flags. Every layer is a mapping of
section name -> {key: value}. Unknown sections and keys are rejected with the
file that holds them and the closest valid name; type and range errors name the
layer that supplied the bad value.

When a section is resolved, every file layer's values of that section are also
validated on their own (:func:`check_values`), so a bad value in ``fmb.yaml`` or
a ``--config`` file is reported with its file and key even when a higher layer
(another file, a flag, a TUI form) overrides it and the merged result would be
valid: a value that is wrong today is never silently kept for the day the flag
is dropped. Reading a file checks its structure and key names only, so a bad
value in one section does not stop the commands (or the TUI's catalogue) that
use other sections; ``config validate`` and ``config show`` resolve every
section and so check every value.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fmb_engine.config.registry import SECTIONS
from fmb_engine.config.schemas import Section
from fmb_engine.errors import ConfigError

DEFAULT_ORIGIN = "default"
CLI_ORIGIN = "command line"


@dataclass(frozen=True)
class Layer:
    """One source of configuration values."""

    origin: str  # a file path, or "command line"
    data: dict[str, dict[str, Any]]


@dataclass
class Resolved:
    """A validated section plus where each value came from."""

    section: str
    values: Section
    sources: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, str]]:
        dumped = self.values.model_dump(mode="json")
        return [(key, dumped[key], self.sources[key]) for key in type(self.values).model_fields]


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def read_layer_file(path: str | Path) -> Layer:
    """Read and structurally check one YAML config file (``yaml.safe_load``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (general:, mock:, ...), got {type(data).__name__}")
    return check_layer(Layer(str(path), data))


def section_body(data: dict[str, Any], section: str) -> dict[str, Any]:
    """The mapping of a (possibly dotted, e.g. ``embed.pca``) section in a layer; {} if absent."""
    node: Any = data
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return {}
    return node


def _check_body(origin: str, section: str, body: Any) -> None:
    if body is None:
        return
    if not isinstance(body, dict):
        raise ConfigError(f"{origin}: section {section!r} must be a mapping of keys, got {body!r}")
    children = SECTIONS.children(section) if "." not in section else []
    if not children:
        valid_keys = list(SECTIONS[section].model_fields)
        for key in body:
            if key not in valid_keys:
                raise ConfigError(
                    f"{origin}: unknown key {section}.{key}.{_suggest(str(key), valid_keys)} "
                    f"Valid keys of {section!r}: {', '.join(valid_keys)}"
                )
        return
    for key, sub in body.items():
        if str(key) not in children:
            raise ConfigError(
                f"{origin}: unknown section {section}.{key}.{_suggest(str(key), children)} "
                f"Valid sections under {section!r}: {', '.join(children)}"
            )
        _check_body(origin, f"{section}.{key}", sub)


def check_layer(layer: Layer) -> Layer:
    """Reject unknown sections and keys, naming the layer and suggesting the closest name."""
    top = sorted(SECTIONS.top_level())
    for section, body in layer.data.items():
        if section not in top:
            raise ConfigError(
                f"{layer.origin}: unknown section {section!r}.{_suggest(str(section), top)} "
                f"Valid sections: {', '.join(top)}"
            )
        _check_body(layer.origin, str(section), body)
    return layer


def check_values(layer: Layer, section: str, overridden: dict[str, str] | None = None) -> None:
    """Validate the values ``layer`` sets in ``section`` on their own (types and ranges).

    Only errors of the keys this layer sets are reported (rules that combine several keys
    are checked on the merged result by :func:`resolve`). ``overridden`` maps a key to the
    layer that overrides it, to say so in the message.
    """
    body = section_body(layer.data, section)
    if not isinstance(body, dict) or not body or section not in SECTIONS:
        return
    schema = SECTIONS[section]
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else None
            if key not in body:
                continue
            problem = _problem(layer.origin, section, schema, key, body[key], err["msg"])
            if overridden and key in overridden:
                problem += f"; overridden by {overridden[key]}, but the value in {layer.origin} must be valid too"
            problems.append(problem)
        if problems:
            raise ConfigError("\n".join(problems)) from None


def _problem(origin: str, section: str, schema: type[BaseModel], key: str, got: Any, msg: str) -> str:
    """One line naming where a bad value comes from, what it is and what was expected."""
    return (f"{origin}: {section}.{key} = {got!r} is invalid: {msg} "
            f"(expected {_expected(schema, key) if key in schema.model_fields else '?'}, got {type(got).__name__})")


def _expected(schema: type[BaseModel], key: str) -> str:
    annotation = schema.model_fields[key].annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def resolve(section: str, layers: list[Layer]) -> Resolved:
    """Merge ``layers`` (lowest first) over the defaults of ``section`` and validate."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}.{_suggest(section, list(SECTIONS))}")
    schema = SECTIONS[section]
    raw: dict[str, Any] = {}
    sources = {key: DEFAULT_ORIGIN for key in schema.model_fields}
    for layer in layers:
        for key, value in section_body(layer.data, section).items():
            if value is None and layer.origin == CLI_ORIGIN:
                continue  # a flag that was not given
            raw[key] = value
            sources[key] = layer.origin
    for layer in layers:  # each file on its own: a bad value hidden by a higher layer is still an error
        if layer.origin != CLI_ORIGIN:
            check_values(layer, section, {k: o for k, o in sources.items() if o != layer.origin})
    try:
        values = schema.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(_problem(sources.get(key, DEFAULT_ORIGIN), section, schema, key,
                                     raw.get(key, "<missing>"), err["msg"]))
        raise ConfigError("\n".join(problems)) from None
    return Resolved(section, values, sources)


def template(section: str) -> str:
    """A commented YAML template of ``section`` with every key and its default."""
    schema = SECTIONS[section]
    parts = section.split(".")
    lines = [f"# {schema.__doc__.strip().splitlines()[0]}" if schema.__doc__ else f"# {section}"]
    lines += [f"{'  ' * depth}{part}:" for depth, part in enumerate(parts)]
    indent = "  " * len(parts)
    defaults = schema().model_dump(mode="json")
    for key, info in schema.model_fields.items():
        if info.description:
            lines.append(f"{indent}# {info.description}")
        dumped = yaml.safe_dump({key: defaults[key]}, default_flow_style=True, sort_keys=False, width=1000).strip()
        lines.append(f"{indent}{dumped[1:-1].strip()}")
    return "\n".join(lines) + "\n"
