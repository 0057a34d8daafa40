"""Which config sections exist and where each schema lives, imported only when a section is used.

Standard library only, so front doors can name the sections (help texts, ``config show``'s
list) without importing pydantic or any stage; a schema module (pydantic) is imported when
its section is read, validated or shown. Nothing registers itself on import: this table is
the one list.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


class SectionRegistry(Mapping[str, "type[BaseModel]"]):
    """Section name -> schema, importing a schema's module only when the section is used.

    ``places`` maps a top-level section to ``"module:attribute"``: the attribute is either
    the schema, or (for a family of dotted sections such as ``embed.<embedder>``) a mapping
    child name -> schema, so the children are named once, in their own light module.
    Reading, validating or showing a section imports that module and nothing else; no
    module registers anything when it is imported.
    """

    def __init__(self, places: dict[str, str], families: tuple[str, ...] = ()):
        self._places = places
        self._families = families

    def top_level(self) -> list[str]:
        """The top-level section names, in ``config show`` order (imports nothing)."""
        return list(self._places)

    def outline(self) -> list[str]:
        """Section names for a help text, a family as ``embed.<name>`` (imports nothing)."""
        return [f"{top}.<name>" if top in self._families else top for top in self._places]

    def _load(self, top: str) -> Any:
        module, _, attribute = self._places[top].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def children(self, top: str) -> list[str]:
        """Child names of a family (``embed`` -> ``aion``, ``pca``...); [] for a plain section."""
        found = self._load(top) if top in self._places else None
        return list(found) if isinstance(found, Mapping) else []

    def __getitem__(self, name: str) -> type[BaseModel]:
        top, _, child = name.partition(".")
        if top not in self._places:
            raise KeyError(name)
        found = self._load(top)
        if isinstance(found, Mapping):
            if not child or child not in found:
                raise KeyError(name)
            return found[child]
        if child:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        top, _, child = name.partition(".")
        if top not in self._places:
            return False
        return child in self.children(top) if child else not self.children(top)

    def __iter__(self) -> Iterator[str]:
        for top in self._places:
            children = self.children(top)
            yield from (f"{top}.{child}" for child in children) if children else (top,)

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: Section name -> schema. The order is the order of ``config show``. Dotted names
#: (``embed.pca``) are nested mappings in YAML (``embed: {pca: {...}}``).
SECTIONS = SectionRegistry({
    "general": "fmb_engine.config.schemas:GeneralConfig",
    "mock": "fmb_engine.config.schemas:MockConfig",
    "import": "fmb_engine.config.schemas:ImportConfig",
    "analyze": "fmb_engine.analyze.config:AnalyzeConfig",
    "jobs": "fmb_engine.jobs.config:JobsConfig",
    "tui": "fmb_engine.config.tui:TuiConfig",
    "embed": "fmb_engine.embed.config:SCHEMAS",
    "retrain": "fmb_engine.retrain.config:SCHEMAS",
    "detect": "fmb_engine.detect.config:DetectConfig",
    "discover": "fmb_engine.discover.config:DiscoverConfig",
}, families=("embed", "retrain"))
