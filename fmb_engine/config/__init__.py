"""Configuration: typed schemas per section, layered loading with provenance.

The section table (:mod:`fmb_engine.config.registry`) is imported eagerly and is cheap; the
loader (pydantic, PyYAML) is imported on first use of one of its names, so a command that
reads no config pays nothing for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmb_engine.config.registry import SECTIONS

if TYPE_CHECKING:
    from fmb_engine.config.loader import CLI_ORIGIN, Layer, Resolved, check_layer, read_layer_file, resolve, template
    from fmb_engine.config.schemas import Section
    from fmb_engine.workspace import Workspace

#: Names served by the loader and the schemas, imported when first asked for (PEP 562).
_LAZY = {
    "CLI_ORIGIN": "fmb_engine.config.loader", "Layer": "fmb_engine.config.loader",
    "Resolved": "fmb_engine.config.loader", "check_layer": "fmb_engine.config.loader",
    "read_layer_file": "fmb_engine.config.loader", "resolve": "fmb_engine.config.loader",
    "template": "fmb_engine.config.loader", "Section": "fmb_engine.config.schemas",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def layers_for(
    workspace: Workspace | None,
    config_file: str | Path | None = None,
    cli: dict[str, dict[str, Any]] | None = None,
) -> list[Layer]:
    """The configuration layers above the defaults, lowest first."""
    from fmb_engine.config.loader import CLI_ORIGIN, Layer, check_layer, read_layer_file

    layers: list[Layer] = []
    if workspace is not None and workspace.config_file.is_file():
        layers.append(read_layer_file(workspace.config_file))
    if config_file is not None:
        layers.append(read_layer_file(config_file))
    if cli:
        layers.append(check_layer(Layer(CLI_ORIGIN, cli)))
    return layers


def load(
    section: str,
    workspace: Workspace | None = None,
    config_file: str | Path | None = None,
    cli: dict[str, Any] | None = None,
) -> Resolved:
    """Effective config of one section; ``cli`` holds that section's flags (None = not given)."""
    from fmb_engine.config.loader import resolve

    nested: dict[str, Any] | None = None
    if cli:
        nested = cli
        for part in reversed(section.split(".")):
            nested = {part: nested}
    return resolve(section, layers_for(workspace, config_file, nested))


__all__ = ["SECTIONS", "Layer", "Resolved", "Section", "layers_for", "load", "resolve", "template"]
