"""The in-memory batch every consumer of the survey store receives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SurveyBatch:
    """A batch of objects as plain arrays; B objects, 4 bands, L spectral bins.

    Missing data is explicit: a missing band is NaN with ``has_bands`` False; a
    missing spectrum has ``ivar`` 0, ``mask`` True everywhere and ``has_spectrum``
    False. ``mask`` True marks a bad pixel (ivar is 0 there too).
    """

    indices: np.ndarray  # (B,) int64 row numbers in the store
    object_ids: np.ndarray  # (B,) str
    redshift: np.ndarray  # (B,) float32
    images: np.ndarray | None  # (B, 4, H, W) float32
    rgb: np.ndarray | None  # (B, H, W, 3) uint8
    flux: np.ndarray | None  # (B, L) float32
    ivar: np.ndarray | None  # (B, L) float32
    mask: np.ndarray | None  # (B, L) bool
    wavelength: np.ndarray  # (L,) float64, observed frame, Angstrom
    has_bands: np.ndarray  # (B, 4) bool
    has_spectrum: np.ndarray  # (B,) bool

    def __len__(self) -> int:
        return int(self.indices.shape[0])
