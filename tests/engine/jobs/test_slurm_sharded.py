"""Sharded detect on a real SLURM (the one-node cluster of `.ci/slurm.sh`): the chain, one run, resume.

Skipped when `sinfo` does not answer, like test_slurm_integration.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from fmb_engine.config import load
from fmb_engine.detect.run import detect
from fmb_engine.detect.shards import work_folder
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.jobs import slurm as slurm_cli
from fmb_engine.jobs import submission
from fmb_engine.jobs.chain import SHARDED_STAGE, submit_sharded_detect
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State
from fmb_engine.workspace import Workspace

from .test_slurm_integration import CFG, done, poll_until

_OK, _SAID = slurm_cli.sinfo_responds(timeout_s=5)
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _OK, reason=f"no SLURM controller answers here ({_SAID}); start one with .ci/slurm.sh"),
]

FAST = {"epochs": 2, "iforest_trees": 20, "n_jobs": 1, "top_k": 20, "chunk_rows": 64, "fit_max_objects": 200}
PARTS = ("flows", "mismatch", "fuse")


@pytest.fixture
def embedded(workspace: Workspace):
    """Tiny synthetic embeddings (two modalities: two flow fit jobs and the learned mismatch's)
    and the one-node run's systems table to compare with."""
    write_synthetic(workspace, SyntheticSpec(600, {"image": 8, "spectrum": 8}, seed=2, outlier_fraction=0.03))
    resolved = load("detect", workspace, cli=FAST)
    detect(workspace, resolved)
    return workspace, resolved, _systems(workspace)


def _systems(ws: Workspace) -> pd.DataFrame:
    return pd.read_parquet(ws.folder("scores") / "systems.parquet")


def test_chain_of_three_shards_completes_as_one_run_with_the_one_node_ranks(embedded):
    ws, resolved, one = embedded
    sub = submit_sharded_detect(ws, resolved, PARTS, 3, "slurm", CFG.model_copy(update={"array_parallelism": 3}))
    jobs = poll_until(ws, sub.run_id, done, timeout_s=150)
    assert [j.state for j in jobs] == [State.COMPLETED] * 7, [(j.job_id, j.state, j.error) for j in jobs]
    with open_registry(ws) as reg:
        runs = reg.runs()
        run = reg.run(sub.run_id)
    assert [r.stage for r in runs] == [SHARDED_STAGE]
    assert [run.phase_of(j.task_index) for j in jobs] == ["fit"] * 3 + [f"shard {i}/3" for i in range(3)] + ["merge"]
    script = next((sub.folder / "merge").glob("*_submission.sh")).read_text()
    assert "#SBATCH --dependency=afterok:" in script
    pd.testing.assert_frame_equal(one, _systems(ws), check_exact=True)
    assert not work_folder(ws, sub.run_id).exists()


def test_a_cancelled_shard_is_resubmitted_alone_with_a_new_merge(embedded, monkeypatch):
    from fmb_engine.jobs import executors

    # SLURM keeps no accounting record of an array task cancelled before it started: the registry
    # calls it cancelled once squeue and sacct have not known it for the grace period (shortened here)
    monkeypatch.setattr(executors, "VANISH_GRACE_S", 3.0)
    ws, resolved, one = embedded
    sub = submit_sharded_detect(ws, resolved, PARTS, 3, "slurm", CFG)  # array_parallelism=1: shards wait in turn
    with open_registry(ws) as reg:
        last_shard = next(j for j in reg.jobs(sub.run_id) if reg.run(sub.run_id).phase_of(j.task_index) == "shard 2/3")
    submission.cancel(ws, last_shard.job_id)
    jobs = poll_until(ws, sub.run_id, lambda js: js[5].state is State.CANCELLED and js[4].state is State.COMPLETED
                      and js[6].state is State.PENDING and js[6].reason == "DependencyNeverSatisfied", timeout_s=150)
    again = submission.resubmit(ws, sub.run_id, jobs=CFG)
    assert "resubmitted task(s) 5, 6" in again.notes[-1]
    jobs = poll_until(ws, sub.run_id, done, timeout_s=150)
    assert [j.state for j in jobs] == [State.COMPLETED] * 7
    assert [j.attempt for j in jobs] == [1] * 5 + [2, 2]  # the shard and the merge, nothing else
    with open_registry(ws) as reg:
        assert len(reg.runs()) == 1
    pd.testing.assert_frame_equal(one, _systems(ws), check_exact=True)
