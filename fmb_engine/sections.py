"""Every stage's config section, registered in one place.

The config package is the bottom layer and cannot import the stages, so each
stage registers its own schema; front doors (CLI, TUI) call :func:`register_all`
once at start-up so that any layer may hold any section.
"""

from __future__ import annotations


def register_all() -> None:
    from fmb_engine.embed.run import register_embed_sections

    register_embed_sections()
