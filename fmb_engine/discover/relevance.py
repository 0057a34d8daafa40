"""Label names -> relevance in [0, 1]: what the user is hunting for.

The default table says the physically rare objects (interesting, AGN, lens, merger) are what matters and
artefacts and normal objects are not; ``skip`` says nothing and is ignored. A workspace changes the table in
the ``discover`` config section. Names are matched case-insensitively (the label set has ``AGN``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fmb_engine.discover.config import DEFAULT_IGNORED, DEFAULT_RELEVANCE


@dataclass
class LabelTargets:
    """The labelled rows of one embedding run and their relevance, with what was left out and why."""

    rows: np.ndarray  # int64 (L,) row indices into the run's objects
    relevance: np.ndarray  # float64 (L,)
    ignored: dict[str, int] = field(default_factory=dict)  # label -> count (skip, unmapped names)
    not_in_run: list[str] = field(default_factory=list)  # labelled object ids the run does not hold


def targets(labels: Mapping[str, str], object_ids: np.ndarray, table: Mapping[str, float] | None = None,
            ignored: tuple[str, ...] = DEFAULT_IGNORED) -> LabelTargets:
    """Map ``labels`` (object id -> label name) onto the rows of ``object_ids``.

    Labels in ``ignored`` and names missing from ``table`` are counted, not used; labelled objects the run
    does not hold are listed (a label on an object without a finite embedding is not an error).
    """
    table = {k.lower(): float(v) for k, v in (DEFAULT_RELEVANCE if table is None else table).items()}
    skip = {name.lower() for name in ignored}
    position = {str(oid): i for i, oid in enumerate(object_ids)}
    rows, values, left, missing = [], [], {}, []
    for oid in sorted(labels):
        name = labels[oid].lower()
        if name in skip or name not in table:
            left[labels[oid]] = left.get(labels[oid], 0) + 1
        elif oid not in position:
            missing.append(oid)
        else:
            rows.append(position[oid])
            values.append(table[name])
    return LabelTargets(np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=np.float64), left, missing)
