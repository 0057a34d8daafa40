"""Sharded detect: the chained phases give the one-node run's ranks and scores bit for bit, and resume."""


import numpy as np
import pandas as pd
import pytest
import torch

from fmb_engine.config import load
from fmb_engine.detect import shards
from fmb_engine.detect.run import detect
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.errors import FMBError
from fmb_engine.jobs.chain import SHARDED_STAGE, submit_sharded_detect
from fmb_engine.jobs.config import JobsConfig
from fmb_engine.jobs.registry import open_registry
from fmb_engine.jobs.states import State
from fmb_engine.stage_run import config_record
from fmb_engine.workspace import Workspace
from tests.engine.detect.manifests import detect_manifests

OBJECTS = 1100
FAST = {"epochs": 2, "iforest_trees": 30, "n_jobs": 1, "top_k": 20, "chunk_rows": 128}
DEBUG = JobsConfig(executor="debug")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One synthetic run (the unaligned learned mismatch, a fitted sample and scored rows outside it)."""
    ws = Workspace.init(tmp_path_factory.mktemp("sharded"))
    write_synthetic(ws, SyntheticSpec(OBJECTS, {"image": 16, "spectrum": 16, "joint": 24}, seed=5,
                                      outlier_fraction=0.03))
    return ws


def _tables(ws: Workspace) -> dict[str, pd.DataFrame]:
    out = ws.folder("scores")
    paths = sorted(p for p in out.rglob("*.csv")) + [out / "systems.parquet"]
    return {str(p.relative_to(out)): (pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)) for p in paths}


def _flows(ws: Workspace) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted((ws.folder("scores") / "models").rglob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            out[path.name] = {k: data[k] for k in data.files}
    return out


@pytest.mark.parametrize("fit_max, k, knn", [(400, 3, "exact"), (400, 1, "exact"), (5000, 3, "exact"), (400, 3, "approx")])
def test_sharded_run_writes_the_one_node_outputs_bit_for_bit(embedded, fit_max, k, knn):
    """Also with the k-NN baseline's approximate index, which every shard task rebuilds from the same rows and seed."""
    if knn == "approx":
        pytest.importorskip("faiss")
    resolved = load("detect", embedded, cli=FAST | {"fit_max_objects": fit_max, "knn_backend": knn})
    detect(embedded, resolved)
    one, one_flows = _tables(embedded), _flows(embedded)
    sub = submit_sharded_detect(embedded, resolved, ("flows", "mismatch", "fuse"), k, "debug", DEBUG)
    assert [j.state for j in sub.records] == [State.COMPLETED] * len(sub.records)
    sharded, sharded_flows = _tables(embedded), _flows(embedded)
    assert sorted(one) == sorted(sharded) and len(one) >= 6
    for name, table in one.items():
        pd.testing.assert_frame_equal(table, sharded[name], check_exact=True, obj=name)
    assert one_flows.keys() == sharded_flows.keys()
    for name, state in one_flows.items():
        assert state.keys() == sharded_flows[name].keys()
        assert all(np.array_equal(v, sharded_flows[name][k]) for k, v in state.items()), name
    assert not shards.work_folder(embedded, sub.run_id).exists()  # removed after a successful merge
    one_node, manifest = detect_manifests(embedded)[-2:]
    assert manifest["counts"]["fit_rows:synthetic"]["image"] == min(fit_max, OBJECTS)
    assert one_node["knn_baseline"]["synthetic/image"]["backend"] == knn


def test_more_shards_than_chunks_are_announced_not_refused(embedded):
    """1,100 objects in chunks of 128 rows are 9 chunks: 12 shards leave 3 tasks with nothing to score, and say so."""
    resolved = load("detect", embedded, cli=FAST | {"fit_max_objects": 400})
    assert shards.idle_shards_note(embedded, resolved, 9) is None
    note = shards.idle_shards_note(embedded, resolved, 12)
    assert "9 chunk(s) of detect.chunk_rows=128" in note and "3 of the 12 shard tasks have nothing to score" in note


def test_sharded_run_is_one_registry_run_whose_tasks_name_their_phase(embedded):
    resolved = load("detect", embedded, cli=FAST | {"fit_max_objects": 400})
    sub = submit_sharded_detect(embedded, resolved, ("flows", "mismatch", "fuse"), 2, "debug", DEBUG)
    with open_registry(embedded) as reg:
        run = reg.run(sub.run_id)
        jobs = reg.jobs(sub.run_id)
    assert run.stage == SHARDED_STAGE
    phases = [run.phase_of(j.task_index) for j in jobs]
    assert phases == ["fit"] * 4 + ["shard 0/2", "shard 1/2", "merge"]  # 3 flows + the learned mismatch


def test_a_task_whose_output_exists_returns_at_once(embedded, monkeypatch):
    resolved = load("detect", embedded, cli=FAST | {"fit_max_objects": 400})
    record = config_record(resolved)
    args = (str(embedded.root), "resume-test")
    for modality in ("image", "spectrum", "joint"):
        fit = shards.fit_modality(*args, "synthetic", modality, record["values"], record["sources"], True)
        assert fit["fitted"] and not fit.get("reused")
        assert fit["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    first = shards.score_shard(*args, ["synthetic"], record["values"], record["sources"], True, False, 0, 2)
    assert first["rows"] > 0

    def no_reading(*a, **kw):
        raise AssertionError("a finished task read the embeddings again")

    monkeypatch.setattr(shards, "EmbeddingReader", no_reading)
    assert shards.fit_modality(*args, "synthetic", "image", record["values"], record["sources"], True)["reused"]
    assert shards.score_shard(*args, ["synthetic"], record["values"], record["sources"], True, False, 0, 2)["rows"] == 0


def test_shard_ranges_are_whole_chunks_covering_every_row():
    ranges = shards.shard_ranges(1000, 3, 128)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % 128 == 0 for start, _ in ranges)
    few = shards.shard_ranges(100, 4, 128)  # more shards than chunks: some are empty
    assert [r for r in few if r[0] < r[1]] == [(0, 100)] and len(few) == 4


def test_shards_need_an_executor_and_something_to_shard(embedded):
    resolved = load("detect", embedded, cli=FAST)
    with pytest.raises(FMBError, match="nothing to shard"):
        submit_sharded_detect(embedded, resolved, ("fuse",), 2, "debug", DEBUG)
    with pytest.raises(FMBError, match=">= 1"):
        submit_sharded_detect(embedded, resolved, ("flows",), 0, "debug", DEBUG)


def test_cli_shards_need_an_executor_and_show_their_phases(embedded, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from fmb_engine.cli import common
    from fmb_engine.cli.main import app
    from fmb_engine.errors import ConfigError

    monkeypatch.setattr(common.console, "width", 220)
    runner = CliRunner()
    task = tmp_path / "task.yaml"
    task.write_text("detect:\n  epochs: 2\n  iforest_trees: 20\n  n_jobs: 1\n  fit_max_objects: 400\n")
    ws = ["--workspace", str(embedded.root), "--config", str(task)]
    refused = runner.invoke(app, ["detect", "all", "--shards", "2", *ws])
    assert isinstance(refused.exception, ConfigError) and "--executor" in str(refused.exception)
    done = runner.invoke(app, ["detect", "flows", "--shards", "2", "-x", "debug", *ws])
    assert done.exit_code == 0, done.output
    run_id = done.output.split("run ", 1)[1].split(":", 1)[0].strip()
    shown = runner.invoke(app, ["jobs", "show", run_id, "--workspace", str(embedded.root)])
    assert shown.exit_code == 0 and "shard 1/2" in shown.output and "merge" in shown.output
    assert "FAILED" not in shown.output
