"""The embedder interface and the lookup of an embedder by name.

An embedder turns a :class:`~fmb_engine.survey.batch.SurveyBatch` into one
vector per object per modality. It declares which modalities it produces and
whether its image and spectrum vectors live in one space (``aligned``): only
then may a cosine between them be computed downstream.

Weight-free embedders that need fitting (PCA, CCA) implement ``fit`` and carry
their fitted state through ``state_dict``/``load_state_dict`` as plain arrays.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from fmb_engine.embed.catalog import EMBEDDERS
from fmb_engine.embed.config import SCHEMAS, EmbedderConfig
from fmb_engine.errors import ConfigError
from fmb_engine.survey.batch import SurveyBatch


class Embedder(ABC):
    """Base class of all embedders; see the module docstring."""

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]]
    aligned: ClassVar[bool]
    config_model: ClassVar[type[EmbedderConfig]] = EmbedderConfig
    #: True when ``fit`` must run (on the train split) before ``embed``.
    needs_fit: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class naming an embedder takes its config model and its descriptive attributes from
        its entry in :data:`fmb_engine.embed.catalog.EMBEDDERS`, so they are written once."""
        super().__init_subclass__(**kwargs)
        info = EMBEDDERS.get(cls.__dict__.get("name", ""))
        if info is not None:
            cls.config_model, cls.modalities, cls.aligned, cls.needs_fit = (
                SCHEMAS[cls.name], info.modalities, info.aligned, info.needs_fit)

    def __init__(self, config: EmbedderConfig | dict[str, Any] | None = None):
        if config is None:
            config = self.config_model()
        elif isinstance(config, dict):
            config = self.config_model.model_validate(config)
        self.config = config

    def fit(self, batches: Iterable[SurveyBatch]) -> Embedder:
        """Fit on ``batches`` (train split). Pretrained models need no fit."""
        return self

    @abstractmethod
    def embed(self, batch: SurveyBatch) -> dict[str, np.ndarray]:
        """Return ``{modality: (B, D) float32}`` for every modality in ``self.modalities``."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays (empty for pretrained models)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""


def names() -> list[str]:
    """Every embedder's name (imports no implementation)."""
    return list(EMBEDDERS)


def get(name: str) -> type[Embedder]:
    """The implementation class of embedder ``name`` (imported now: torch for the foundation models)."""
    if name not in EMBEDDERS:
        raise ConfigError(f"unknown embedder {name!r}; available: {', '.join(names())}")
    module, _, attribute = EMBEDDERS[name].implementation.partition(":")
    return getattr(importlib.import_module(module), attribute)
