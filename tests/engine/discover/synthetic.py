"""Small synthetic surveys for the discovery tests."""

from __future__ import annotations

import numpy as np


def clustered(seed: int = 0, n: int = 3000):
    """Normal objects in one blob; two compact anomaly clusters far out: artefacts (more anomalous) and
    interesting objects (a little less anomalous), so the base order shows artefacts first."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    kind = np.zeros(n, dtype=int)
    art, good = np.arange(0, 60), np.arange(60, 100)
    X[art] = rng.normal(size=(art.size, 8)) * 0.3 + 6.0
    X[good] = rng.normal(size=(good.size, 8)) * 0.3 - 6.0
    kind[art], kind[good] = 1, 2
    base = np.linalg.norm(X, axis=1) + rng.normal(scale=0.2, size=n)
    base[art] += 3.0
    return X, base, kind == 2
