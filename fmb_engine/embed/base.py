"""The embedder interface and its registry.

An embedder turns a :class:`~fmb_engine.survey.batch.SurveyBatch` into one
vector per object per modality. It declares which modalities it produces and
whether its image and spectrum vectors live in one space (``aligned``): only
then may a cosine between them be computed downstream.

Weight-free embedders that need fitting (PCA, CCA) implement ``fit`` and carry
their fitted state through ``state_dict``/``load_state_dict`` as plain arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fmb_engine.errors import ConfigError
from fmb_engine.survey.batch import SurveyBatch

#: Canonical modality names, everywhere (config, columns, store datasets, docs).
MODALITIES: tuple[str, ...] = ("image", "spectrum", "joint")


class EmbedderConfig(BaseModel):
    """Settings every embedder understands; embedders extend this."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_size: int = Field(64, ge=1, description="Objects per forward pass.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    amp: bool = Field(False, description="Mixed precision on CUDA (ignored on CPU).")
    weights: str | None = Field(
        None, description="Local weights directory or Hugging Face cache holding the checkpoint."
    )
    seed: int = Field(42, ge=0, description="Seed for anything random inside the embedder.")


class Embedder(ABC):
    """Base class of all embedders; see the module docstring."""

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]]
    aligned: ClassVar[bool]
    config_model: ClassVar[type[EmbedderConfig]] = EmbedderConfig
    #: True when ``fit`` must run (on the train split) before ``embed``.
    needs_fit: ClassVar[bool] = False

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


_REGISTRY: dict[str, Callable[[], type[Embedder]]] = {}


def register(name: str, loader: Callable[[], type[Embedder]]) -> None:
    """Register an embedder class lazily (heavy imports happen on first use)."""
    _REGISTRY[name] = loader


def _load_builtins() -> None:
    """Import the modules that register the built-in embedders (once; cheap, no model packages)."""
    import fmb_engine.embed.baselines  # noqa: F401  (pca, cca)
    import fmb_engine.embed.registry_models  # noqa: F401  (astropt, aion, astroclip)


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> type[Embedder]:
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown embedder {name!r}; available: {', '.join(names())}")
    return _REGISTRY[name]()


def resolve_device(device: str) -> str:
    """Map 'auto' to 'cuda' when a GPU is visible, else 'cpu'; check explicit CUDA requests."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device; use device: auto or cpu")
    return device
