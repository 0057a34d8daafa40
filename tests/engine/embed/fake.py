"""A random SurveyBatch with real shapes (4 bands, the 7,781-bin grid) for embedder tests."""

import numpy as np

from fmb_engine.survey import bands
from fmb_engine.survey.batch import SurveyBatch


def make_batch(n: int = 4, size: int = 64, seed: int = 0) -> SurveyBatch:
    rng = np.random.default_rng(seed)
    wave = bands.wavelength_grid()
    return SurveyBatch(
        indices=np.arange(n, dtype=np.int64),
        object_ids=np.array([f"obj{i}" for i in range(n)]),
        redshift=rng.uniform(0, 1, n).astype(np.float32),
        images=rng.normal(0, 1, (n, 4, size, size)).astype(np.float32),
        rgb=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        flux=(rng.normal(0, 1, (n, wave.size)) + 3).astype(np.float32),
        ivar=rng.uniform(0.5, 2, (n, wave.size)).astype(np.float32),
        mask=rng.random((n, wave.size)) < 0.01,
        wavelength=wave,
        has_bands=np.ones((n, 4), bool),
        has_spectrum=np.ones(n, bool),
    )
