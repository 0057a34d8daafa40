"""Why an object's vector is not valid: the reasons found while embedding, and their summary for the manifest.

Not embeddable objects still get a row (their vector is computed from imputed
input: NaN pixels -> 0 for the foundation models, the train mean for the
baselines) but are flagged per modality (``valid/<modality>`` False) with a
reason: ``missing_band:<BAND>``, ``no_spectrum``, ``no_valid_spectrum_pixels``,
``non_finite_<modality>``. Counts per reason go into the run manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.survey.bands import BANDS
from fmb_engine.survey.batch import SurveyBatch

#: Object ids listed in the manifest per reason (the full list is in the file).
_MANIFEST_IDS = 100
_REASON_MODALITIES = {"missing_band": ("image", "joint"), "no_spectrum": ("spectrum", "joint"),
                      "no_valid_spectrum_pixels": ("spectrum", "joint")}


def embeddability(batch: SurveyBatch, modalities: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per modality a (B,) valid flag, and per object the reasons it is not (fully) embeddable."""
    n = len(batch)
    missing = ~np.asarray(batch.has_bands, dtype=bool)
    if batch.images is not None:
        missing |= ~np.isfinite(batch.images).any(axis=(2, 3))
    no_spec = ~np.asarray(batch.has_spectrum, dtype=bool)
    no_pix = np.zeros(n, bool)
    if batch.flux is not None:
        good = np.isfinite(batch.flux)
        if batch.ivar is not None:
            good &= np.isfinite(batch.ivar) & (batch.ivar > 0)
        if batch.mask is not None:
            good &= ~np.asarray(batch.mask, dtype=bool)
        no_pix = ~no_spec & ~good.any(axis=1)
    img_ok = ~missing.any(axis=1)
    spec_ok = ~no_spec & ~no_pix
    valid = {"image": img_ok, "spectrum": spec_ok, "joint": img_ok & spec_ok}
    reasons = np.full(n, "", dtype=object)
    for i in np.flatnonzero(~(img_ok & spec_ok)):
        parts = [f"missing_band:{BANDS[b]}" for b in np.flatnonzero(missing[i])]
        if no_spec[i]:
            parts.append("no_spectrum")
        elif no_pix[i]:
            parts.append("no_valid_spectrum_pixels")
        reasons[i] = ";".join(parts)
    return {m: valid.get(m, np.ones(n, bool)).copy() for m in modalities}, reasons


def add_reason(reasons: np.ndarray, rows: np.ndarray, reason: str) -> None:
    """Append ``reason`` to the reasons of ``rows`` (``;``-separated)."""
    for i in rows:
        reasons[i] = f"{reasons[i]};{reason}" if reasons[i] else reason


def _concerns(part: str, modality: str) -> bool:
    """Whether a reason part explains why ``modality``'s vector is not valid (``non_finite_<m>`` only its own)."""
    if part.startswith("non_finite_"):
        return part == f"non_finite_{modality}"
    return modality in _REASON_MODALITIES.get(part.split(":", 1)[0], (modality,))


def not_embeddable_summary(path: Path) -> dict[str, Any]:
    """Counts per reason, and per modality how many vectors are valid and why the others are not.

    An object without a spectrum is not embeddable *as a spectrum* only: its image is
    embedded and scored, so the per-modality view is what a user needs to read.
    """
    with EmbeddingReader(path) as r:
        reasons = r.reasons()
        ids = r.object_ids
        valid = {m: r.valid(m) for m in r.modalities}
    per_mod = {m: int((~v).sum()) for m, v in valid.items()}
    modalities = {}
    for m, v in valid.items():
        why = Counter(part for reason in reasons[~v] for part in str(reason).split(";") if _concerns(part, m))
        modalities[m] = {"embedded": int(v.sum()), "missing": int((~v).sum()), "by_reason": dict(why)}
    counter: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for i in np.flatnonzero(reasons != ""):
        for part in str(reasons[i]).split(";"):
            counter[part] += 1
            lst = examples.setdefault(part, [])
            if len(lst) < _MANIFEST_IDS:
                lst.append(str(ids[i]))
    return {"objects": int((reasons != "").sum()), "by_reason": dict(counter), "invalid_per_modality": per_mod,
            "modalities": modalities, "examples": examples}
