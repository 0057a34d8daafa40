"""Configuration: typed schemas per section, layered loading with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmb_engine.config.loader import CLI_ORIGIN, Layer, Resolved, check_layer, read_layer_file, resolve, template
from fmb_engine.config.schemas import SECTIONS, Section
from fmb_engine.workspace import Workspace


def layers_for(
    workspace: Workspace | None,
    config_file: str | Path | None = None,
    cli: dict[str, dict[str, Any]] | None = None,
) -> list[Layer]:
    """The configuration layers above the defaults, lowest first."""
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
    nested: dict[str, Any] | None = None
    if cli:
        nested = cli
        for part in reversed(section.split(".")):
            nested = {part: nested}
    return resolve(section, layers_for(workspace, config_file, nested))


__all__ = ["SECTIONS", "Layer", "Resolved", "Section", "layers_for", "load", "resolve", "template"]
