"""Every stage rerun in the same workspace gives the outputs of the first run.

The whole pipeline runs twice through the CLI (in-process, plus the local executor's
subprocesses for a sharded embedding): mock, embed pca/cca in-process, embed with
the local executor sharded, detect all, evaluate, analyze rankings, figures. Every
output is reduced to a digest of its content (arrays, tables, pixels; not the
timestamps inside manifests and PDFs) and the two runs must agree file by file.
Also: ``--out-of-fold K`` through the CLI for ``detect flows`` and ``detect all``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmb_engine.cli.main import app
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import DataError
from fmb_engine.jobs import monitor
from fmb_engine.jobs.states import State
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace

TASK = "detect:\n  epochs: 2\n  iforest_trees: 20\n  n_jobs: 1\n  top_k: 20\n"


def cli(*args, ws: Path) -> str:
    result = CliRunner().invoke(app, [*map(str, args), "-w", str(ws)], env={"COLUMNS": "200"})
    if result.exit_code != 0:
        raise AssertionError(f"fmb-engine {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}") \
            from result.exception
    return result.output


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:16]


def digest(path: Path) -> str | None:
    """Content digest of one output; None for files whose bytes hold times (manifests, PDFs, logs)."""
    if path.suffix == ".csv":
        return _sha(pd.read_csv(path).to_csv(index=False).encode())
    if path.suffix == ".parquet":
        return _sha(pd.read_parquet(path).to_csv(index=False).encode())
    if path.suffix == ".npz":
        with np.load(path) as z:
            return _sha(*(k.encode() + np.ascontiguousarray(z[k]).tobytes() for k in sorted(z.files)))
    if path.suffix == ".png":
        import matplotlib.image

        return _sha(np.ascontiguousarray(matplotlib.image.imread(path)).tobytes())
    if path.suffix == ".h5" and path.parent.name == "embeddings":
        with EmbeddingReader(path) as r:
            state = r.state()
            return _sha(np.asarray(r.object_ids).astype(str).tobytes(),
                        *(r.load(m).tobytes() + r.valid(m).tobytes() for m in r.modalities),
                        *(k.encode() + np.asarray(state[k]).tobytes() for k in sorted(state)))
    if path.suffix == ".h5" and path.parent.name == "survey":
        with SurveyReader(path) as r:
            return r.digest
    return None


def outputs(ws: Path) -> dict[str, str]:
    found = {}
    for folder in ("survey", "embeddings", "scores", "analysis", "figures"):
        for path in sorted((ws / folder).rglob("*")):
            if path.is_file() and (d := digest(path)) is not None:
                found[str(path.relative_to(ws))] = d
    return found


def sharded_embed(model: str, ws: Path, force: bool) -> None:
    out = cli("embed", model, "--executor", "local", "--shards", "2", *(["--force"] if force else []), ws=ws)
    run_id = re.search(r"run (\S+):", out).group(1)
    jobs = monitor.wait(Workspace(ws), run_id, timeout_s=600, poll_s=0.5)
    assert [j.state for j in jobs] == [State.COMPLETED, State.COMPLETED], [(j.state, j.reason) for j in jobs]


def pipeline(ws: Path, again: bool) -> dict[str, str]:
    cli("data", "mock", "--objects", 60, "--image-size", 16, ws=ws)
    cli("embed", "pca", *(["--force"] if again else []), ws=ws)  # a forced rerun recomputes: same vectors
    sharded_embed("cca", ws, force=again)  # computed by 2 array tasks both times (the rerun discards the first)
    cli("detect", "all", "-c", ws / "task.yaml", ws=ws)
    cli("evaluate", ws=ws)
    cli("analyze", "rankings", ws=ws)
    cli("figures", "heatmaps", ws=ws)
    cli("figures", "outlier-grid", "--system", "cca/fused/fisher", "--top-k", 4, ws=ws)
    return outputs(ws)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    ws = tmp_path_factory.mktemp("rerun") / "ws"
    Workspace.init(ws)
    (ws / "task.yaml").write_text(TASK)
    return ws, pipeline(ws, again=False)


def test_every_stage_rerun_gives_the_same_outputs(first_run):
    ws, first = first_run
    kinds = {Path(p).parts[0] for p in first}
    assert kinds == {"survey", "embeddings", "scores", "analysis", "figures"}, kinds
    assert "embeddings/cca.h5" in first and "scores/systems.parquet" in first
    second = pipeline(ws, again=True)
    assert second.keys() == first.keys()
    changed = [p for p in first if first[p] != second[p]]
    assert not changed, f"outputs that differ on a rerun: {changed}"


def test_sharded_embedding_rerun_keeps_the_fit(first_run, tmp_path):
    """The reported failure: a second and third sharded pca run over a finished one
    (no up-to-date shortcut: the shards are recomputed and merged each time)."""
    from fmb_engine.config import load
    from fmb_engine.embed.merge import merge_shards
    from fmb_engine.embed.run import embed_shard
    from fmb_engine.embed.shards import shard_range

    src, _ = first_run
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src / "survey", ws.root / "survey")
    Workspace.init(ws.root, exist_ok=True)
    survey = ws.folder("survey") / "mock.h5"
    resolved = load("embed.pca", ws)
    seen = []
    for _ in range(3):
        for shard in range(2):
            embed_shard(ws, survey, "pca", resolved, *shard_range(60, shard, 2))
        path, _ = merge_shards(ws, "pca")
        with EmbeddingReader(path) as r:
            assert r.state(), "the merged file lost the fitted state"
        seen.append(digest(path))
    assert len(set(seen)) == 1
    with EmbeddingReader(path) as r:
        two = {m: r.load(m) for m in r.modalities}
    from fmb_engine.embed.shards import discard

    discard(ws, "pca")  # another shard count: other batch cuts, the same vectors up to float32 rounding
    for shard in range(3):
        embed_shard(ws, survey, "pca", resolved, *shard_range(60, shard, 3))
    path, _ = merge_shards(ws, "pca")
    with EmbeddingReader(path) as r:
        for m, vectors in two.items():
            np.testing.assert_allclose(r.load(m), vectors, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("part", ["flows", "all"])
def test_out_of_fold_through_the_cli(first_run, tmp_path, part):
    src, first = first_run
    ws = tmp_path / "ws"
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("jobs", "runs"))
    for folder in ("jobs", "runs"):
        (ws / folder).mkdir()
    cli("detect", part, "-m", "pca", "--out-of-fold", 3, "-c", ws / "task.yaml", ws=ws)
    table = pd.read_csv(ws / "scores" / "anomaly_scores_pca.csv", dtype={"object_id": str})
    assert len(table) == 3 * 60 and np.isfinite(table["neg_log_prob"]).all()
    assert digest(ws / "scores" / "anomaly_scores_pca.csv") != first["scores/anomaly_scores_pca.csv"]
    manifest = sorted((ws / "runs").glob("*-detect.*.json"))[-1].read_text()
    assert '"out_of_fold": 3' in manifest
    too_many = CliRunner().invoke(app, ["detect", part, "-m", "pca", "--out-of-fold", "40", "-c", str(ws / "task.yaml"),
                                        "-w", str(ws)])
    assert isinstance(too_many.exception, DataError) and "at least 2 rows per fold" in str(too_many.exception)
