"""Degenerate detection inputs, flagged before they become a ranking that only reflects row order.

Why: a density flow, a k-NN distance or a cosine fed with identical vectors
returns (nearly) the same score for every object, and a ranking of equal
scores used to be the file's row order, presented as a result. The checks here
run per model x modality on the usable rows (valid and finite) and per scored
system; docs/science.md ("Ties and degenerate inputs") has the rules.

Embedding vectors (:func:`check_embeddings`):

* every vector identical, or the vectors' spread below :data:`NEAR_CONSTANT_SPREAD`
  of their typical norm (they differ at float32 rounding level only, which
  standardisation would blow up to unit variance): nothing can be ranked, a
  :class:`~fmb_engine.errors.DataError` naming the file, the modality and the count;
* more duplicate vectors than ``max_duplicate_fraction`` of the rows: a warning;
* vectors that are constant across their features (e.g. all zeros, a failed
  embedding): a warning with their count;
* features with zero variance over the rows: a warning; they are kept (not
  dropped), PCA gives them no weight and without PCA they add the same amount to
  every object's score, so they cannot change a ranking.

Scores (:func:`check_scores`): a constant score (every object tied, so every
object gets rank 1), one constant up to rounding (its range below
:data:`NEAR_CONSTANT_SPREAD` times its magnitude, at least 1: e.g. ``1 - cos``
of identical image and spectrum vectors) or one where more than
:data:`MOSTLY_TIED` of the objects share their score with another object is a
warning. Ties get tied ranks
(:mod:`fmb_engine.detect.tables`), never the row order.

Each finding is a line in the manifest's ``warnings`` (the CLI prints them) and
the numbers go to the manifest's counts (``vectors:<model>/<modality>`` and
``tied_scores``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmb_engine.detect.preprocess import CHUNK_ROWS, column_stats, finite_rows
from fmb_engine.errors import DataError
from fmb_engine.manifest import RunManifest

#: Vectors whose root-mean-square distance from their mean is below this fraction of their
#: root-mean-square norm differ only at float32 rounding level (float32 resolves ~6e-8).
NEAR_CONSTANT_SPREAD = 1e-6
#: A score where more than this share of the objects ties with another object is "mostly ties".
MOSTLY_TIED = 0.5


@dataclass(frozen=True)
class VectorReport:
    """What :func:`describe_vectors` found in one modality's usable vectors."""

    rows: int
    features: int
    distinct: int
    duplicates: int  # rows equal to an earlier row
    constant_vectors: int  # rows whose features are all equal
    zero_variance_features: int
    relative_spread: float  # rms distance from the mean / rms norm (0 for identical rows)


def describe_vectors(x: np.ndarray) -> VectorReport:
    """Duplicates, constant rows, zero-variance columns and relative spread of ``x`` (finite, 2-D)."""
    n, d = x.shape
    x = np.ascontiguousarray(x)
    rows = x.view(np.dtype((np.void, x.dtype.itemsize * d))).ravel() if d else np.zeros(n, dtype="V1")
    distinct = int(np.unique(rows).shape[0]) if n else 0
    constant_rows = 0
    squared_norm = 0.0
    for start in range(0, n, CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        constant_rows += int((chunk.max(axis=1) == chunk.min(axis=1)).sum()) if d else chunk.shape[0]
        squared_norm += float(np.einsum("ij,ij->", chunk, chunk, dtype=np.float64))
    if n >= 2 and d:
        _, std, constant = column_stats(x)
        total_variance = float(np.sum(std**2)) * (n - 1) / n
        zero_variance = int(constant.sum())
    else:
        total_variance, zero_variance = 0.0, d if n else 0
    mean_square = squared_norm / n if n else 0.0
    spread = float(np.sqrt(total_variance / mean_square)) if mean_square > 0 else 0.0
    return VectorReport(n, d, distinct, n - distinct, constant_rows, zero_variance, spread)


def check_embeddings(path: Path, vectors: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray],
                     max_duplicate_fraction: float, manifest: RunManifest, min_rows: int = 2) -> None:
    """Flag degenerate vectors of every modality of one embedding file (see the module docstring).

    Only rows that are valid and finite count (the others are dropped and counted elsewhere);
    a modality with fewer than ``min_rows`` of them is left to the caller's too-few-rows rule.
    Raises DataError when a modality's vectors cannot be ranked at all.
    """
    model = path.stem
    for modality, x in vectors.items():
        usable = np.asarray(valid[modality], dtype=bool) & finite_rows(x)
        n = int(usable.sum())
        if n < max(min_rows, 2):
            continue
        report = describe_vectors(np.asarray(x)[usable])
        manifest.count(f"vectors:{model}/{modality}", asdict(report))
        what = f"{path}: {modality}"
        if report.distinct == 1:
            raise DataError(f"{what}: all {n} usable vectors are identical, so every object would get the same "
                            "score and no ranking means anything. Re-embed (`fmb-engine embed "
                            f"{model} --force`) or check the survey's {modality} data")
        if report.relative_spread < NEAR_CONSTANT_SPREAD:
            raise DataError(f"{what}: the {n} usable vectors are near-constant (they differ by "
                            f"{report.relative_spread:.1e} of their norm, float32 rounding level), so any ranking "
                            f"would rank noise. Re-embed (`fmb-engine embed {model} --force`) or check the "
                            f"survey's {modality} data")
        if report.duplicates > max_duplicate_fraction * n:
            manifest.warn(f"{model}/{modality}: {report.duplicates} of {n} vectors ({report.duplicates / n:.1%}) "
                          f"duplicate another vector (more than detect.max_duplicate_fraction = "
                          f"{max_duplicate_fraction:g}); duplicated objects get tied scores and ranks")
        if report.constant_vectors:
            manifest.warn(f"{model}/{modality}: {report.constant_vectors} of {n} vectors are constant across their "
                          f"{report.features} features (e.g. all zeros: a failed embedding?)")
        if report.zero_variance_features:
            manifest.warn(f"{model}/{modality}: {report.zero_variance_features} of {report.features} features have "
                          "zero variance over the objects; kept, they add the same to every score "
                          "(PCA gives them no weight)")


def tie_share(score: np.ndarray) -> float:
    """Share of the objects whose score equals another object's score (0 = no ties, 1 = constant)."""
    s = np.asarray(score, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.shape[0] < 2:
        return 0.0
    _, counts = np.unique(s, return_counts=True)
    return float(counts[counts > 1].sum() / s.shape[0])


def constancy(values: np.ndarray) -> str | None:
    """"constant", "constant up to rounding" (range <= NEAR_CONSTANT_SPREAD x max(1, |largest|)) or None.

    ``values`` are finite; the rounding rule catches e.g. ``1 - cos`` of identical vectors."""
    if values.shape[0] < 2:
        return None
    if values.min() == values.max():
        return "constant"
    if np.ptp(values) <= NEAR_CONSTANT_SPREAD * max(1.0, float(np.abs(values).max())):
        return "constant up to rounding"
    return None


def check_scores(scores: Mapping[str, pd.Series | np.ndarray], manifest: RunManifest) -> dict[str, float]:
    """Warn about every system whose score is constant or mostly ties; returns {system: tie share} of those."""
    flagged: dict[str, float] = {}
    for system, score in scores.items():
        values = np.asarray(score, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.shape[0] < 2:
            continue
        share = tie_share(values)
        kind = constancy(values)
        if kind == "constant":
            manifest.warn(f"{system}: constant score over its {values.shape[0]} objects; every object is tied at "
                          "rank 1, the system ranks nothing")
        elif kind:
            manifest.warn(f"{system}: constant score over its {values.shape[0]} objects up to rounding (range "
                          f"{np.ptp(values):.1e}); its ranks order rounding noise, the system ranks nothing")
        elif share > MOSTLY_TIED:
            manifest.warn(f"{system}: {share:.0%} of its {values.shape[0]} objects share their score with another "
                          "object (tied objects share a rank)")
        else:
            continue
        flagged[system] = round(share, 6)
    if flagged:
        manifest.count("tied_scores", flagged)
    return flagged
