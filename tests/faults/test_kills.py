"""Kill each stage at a seeded point (SIGKILL, SIGINT, SIGTERM), run it again: the outputs of a run never interrupted.

The default run kills the selected stages once each, with the signal the seed picks;
``FMB_FAULT_SIGNALS=all`` tries the three signals on every stage. The long seeded form
(many kill points per stage, a summary table) is ``bench/faults.py``.
"""

from __future__ import annotations

import os

import pytest

from tests.faults import harness
from tests.faults.conftest import SEED, SELECTED

_ALL_SIGNALS = os.environ.get("FMB_FAULT_SIGNALS") == "all"
CASES = [(stage, sig) for stage in SELECTED for sig in (sorted(harness.SIGNALS) if _ALL_SIGNALS else [None])]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "signal_name"), CASES, ids=[f"{s}-{g or 'seeded'}" for s, g in CASES])
def test_kill_then_rerun_gives_the_uninterrupted_outputs(baseline, tmp_path, stage, signal_name):
    trial = harness.kill_trial(baseline, harness.plan(SEED, stage, signal_name, baseline.seconds[stage]), tmp_path)
    print(trial)
    assert not trial.problems, f"{trial}\nreplay: {trial.replay()}"


def test_the_comparison_sees_a_changed_byte_and_ignores_only_the_listed_volatile_parts(baseline, tmp_path):
    """The digests are worth trusting: equal workspaces agree, one flipped value is found."""
    import shutil

    import h5py

    first = SELECTED[0]
    after = harness.STAGE_NAMES[harness.STAGE_NAMES.index(first) + 1] if len(SELECTED) > 1 else None
    source = baseline.before[after] if after in baseline.before else baseline.root / "ws"
    ws = tmp_path / "copy"
    shutil.copytree(source, ws)
    expected = baseline.after[first]
    assert harness.compare(expected, harness.digests(ws)) == []
    h5 = next(ws.rglob("*.h5"))
    with h5py.File(h5, "a") as f:
        f.attrs["created"] = "another time"  # volatile: ignored
    assert harness.compare(expected, harness.digests(ws)) == []
    numeric: list[str] = []
    with h5py.File(h5, "a") as f:
        f.visititems(lambda name, obj: numeric.append(name)
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu" and obj.size else None)
        dataset = f[numeric[0]]
        corner = (0,) * dataset.ndim
        dataset[corner] = dataset[corner] + 1
    rel = str(h5.relative_to(ws))
    assert harness.compare(expected, harness.digests(ws)) == [f"differs from the uninterrupted run: {rel}"]


def test_sigterm_inside_a_command_exits_143_and_the_rerun_completes(baseline, tmp_path):
    """scancel's SIGTERM once the command is at work: 143 and its message (Typer used to return a silent 130)."""
    if "embed-pca" not in baseline.before:
        pytest.skip("needs embed-pca among FMB_FAULT_STAGES")
    trial = harness.Trial(seed=0, stage="embed-pca", signal="SIGTERM", after_files=1, delay_s=0.0)
    trial = harness.kill_trial(baseline, trial, tmp_path)
    assert trial.killed and not trial.problems, str(trial)
    assert trial.rc == 143, str(trial)
