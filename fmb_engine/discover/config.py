"""The ``discover`` config section: how triage labels re-rank the candidates, and the simulation.

A light schema module (pydantic only): ``config show discover`` and the TUI read it without
importing the strategies (scikit-learn, scipy).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fmb_engine.config.schemas import Section

#: The strategies, by name (fmb_engine.discover.strategies.STRATEGIES holds the classes).
STRATEGY_NAMES = ("static", "astronomaly", "gp", "evidence")
#: Orders the simulation can compare: the strategies and a random order (the floor).
SIMULATED = ("random", *STRATEGY_NAMES)
DEFAULT_STRATEGY = "evidence"
#: Label name -> relevance in [0, 1] (case-insensitive): the physically rare objects are what is hunted.
DEFAULT_RELEVANCE = {"interesting": 1.0, "agn": 1.0, "lens": 1.0, "merger": 1.0, "artefact": 0.0, "normal": 0.0}
#: Labels that say nothing about relevance: counted, not learned from.
DEFAULT_IGNORED = ("skip",)
#: The mock survey's anomaly classes the simulation's oracle calls interesting (the physical rarities).
DEFAULT_INTERESTING = ("broad_line_agn", "extreme_emission_line", "lensed_arc", "merger")
MODALITY_NAMES = ("image", "spectrum", "joint")


class DiscoverConfig(Section):
    """`fmb-engine discover rerank|simulate`: labels re-rank the remaining candidates (docs/science.md)."""

    model: str = Field("", description="Embedding run (embeddings/<model>.h5) the strategy learns on; empty = the base system's run.")
    system: str = Field("", description="Base system (model/modality/method) whose scores the strategy starts from; empty = the run's fusion by detect.fusion (else its first fused system).")
    modalities: list[Literal["image", "spectrum", "joint"]] = Field(
        default_factory=lambda: list(MODALITY_NAMES),
        description="Embedding modalities concatenated into the features (those the run holds).")
    strategy: Literal["static", "astronomaly", "gp", "evidence"] = Field(DEFAULT_STRATEGY, description="Re-ranking strategy (docs/science.md, Active discovery).")
    params: dict[str, float] = Field(default_factory=dict, description="Overrides of the strategy's parameters (name -> value; see docs/science.md).")
    dims: int = Field(32, ge=1, le=1024, description="Whitened PCA components of the features.")
    fit_rows: int = Field(10_000, ge=100, description="Rows the feature PCA is fitted on at most (seeded subsample above).")
    seed: int = Field(42, ge=0, description="Seed of the feature subsample, the strategy and tie-breaks.")
    relevance: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RELEVANCE),
                                        description="Label name -> relevance in [0, 1]; labels not listed are counted and not used.")
    ignored: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORED), description="Labels that say nothing about relevance (counted, not used).")
    auto_every: int = Field(0, ge=0, description="Explorer: re-rank by itself after this many new labels (0 = only on the key).")
    interesting: list[str] = Field(default_factory=lambda: list(DEFAULT_INTERESTING),
                                   description="Simulation: anomaly_class values the oracle calls interesting (everything else is not).")
    strategies: list[Literal["random", "static", "astronomaly", "gp", "evidence"]] = Field(
        default_factory=lambda: list(SIMULATED), description="Simulation: orders compared (random = the floor).")
    seeds: int = Field(5, ge=1, le=1000, description="Simulation: seeds per strategy.")
    budget: int = Field(200, ge=1, description="Simulation: inspections per run of the loop.")
    batch: int = Field(10, ge=1, description="Simulation: objects the oracle labels per round before the strategy refits.")

    @field_validator("relevance")
    @classmethod
    def _in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"relevance values must be in [0, 1]; got {bad}")
        return value


__all__ = ["DiscoverConfig"]
