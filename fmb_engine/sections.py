"""Every stage's config section, registered in one place.

The config package is the bottom layer and cannot import the stages, so each
stage registers its own schema; front doors (CLI, TUI) call :func:`register_all`
once at start-up so that any layer may hold any section.
"""

from __future__ import annotations


def register_all() -> None:
    from fmb_engine.analyze.config import AnalyzeConfig
    from fmb_engine.config import SECTIONS, register_section
    from fmb_engine.detect.run import DetectConfig
    from fmb_engine.embed.run import register_embed_sections
    from fmb_engine.jobs.config import JobsConfig
    from fmb_engine.retrain.run import register_retrain_sections

    import fmb_engine.triage.config  # noqa: F401  (registers `tui`: keymap, label set)

    register_embed_sections()
    register_retrain_sections()
    for name, schema in (("detect", DetectConfig), ("jobs", JobsConfig), ("analyze", AnalyzeConfig)):
        if name not in SECTIONS:
            register_section(name, schema)
