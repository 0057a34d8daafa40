"""The fault suite's scope and its uninterrupted baseline.

``FMB_FAULT_STAGES`` (comma-separated stage names, or ``all``) chooses the stages; by default
the first two, which keeps the default run near a minute and a half. ``FMB_FAULT_SEED`` fixes
the kill points (default 17); a failure prints the line that replays it.
"""

from __future__ import annotations

import os

import pytest

from tests.faults import harness

_chosen = os.environ.get("FMB_FAULT_STAGES", "mock,embed-pca")
SELECTED = harness.STAGE_NAMES if _chosen == "all" else tuple(s.strip() for s in _chosen.split(",") if s.strip())
_unknown = set(SELECTED) - set(harness.STAGE_NAMES)
if _unknown:
    raise pytest.UsageError(f"FMB_FAULT_STAGES: unknown stages {sorted(_unknown)}; known: {harness.STAGE_NAMES}")
SEED = int(os.environ.get("FMB_FAULT_SEED", "17"))


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> harness.Baseline:
    """The pipeline run once, uninterrupted, up to the last selected stage."""
    last = max(SELECTED, key=harness.STAGE_NAMES.index)
    return harness.build_baseline(tmp_path_factory.mktemp("faults-baseline"), upto=last)
