"""Replace, never delete; inputs that belong together; one-set publication; stage-output locks.

Each test copies the session's scored workspace (small mock, cca + pca, detect with 2 epochs),
breaks one thing the way the fault battery did, and checks that the old outputs are intact
(byte for byte) or that the reader refuses with StaleError (exit 4) naming what to rerun.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmb_engine import lineage, locks, rankings
from fmb_engine.config import load
from fmb_engine.detect import run as detect_run
from fmb_engine.detect.evaluation import evaluate_workspace
from fmb_engine.embed import base
from fmb_engine.embed.run import embed_survey, up_to_date
from fmb_engine.embed.shards import FORCED, discard
from fmb_engine.embed.store import EmbeddingReader, write_embeddings
from fmb_engine.errors import BusyError, StaleError
from fmb_engine.workspace import Workspace

ROOT = Path(__file__).resolve().parents[3]
FAST = {"epochs": 2, "iforest_trees": 20, "n_jobs": 1}


@pytest.fixture
def ws(analysed, tmp_path) -> tuple[Workspace, Path]:
    src, survey = analysed
    shutil.copytree(src.root, tmp_path / "ws")
    w = Workspace(tmp_path / "ws")
    return w, w.folder("survey") / survey.name


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden lock files aside) -> SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _raising_embed(monkeypatch, model: str, after: int = 1) -> None:
    """Make ``model``'s embedder fail on its ``after``-th batch (a fault half-way through the recompute)."""
    cls = base.get(model)
    calls = {"n": 0}
    real = cls.embed

    def embed(self, batch):
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError("injected fault while embedding")
        return real(self, batch)

    monkeypatch.setattr(cls, "embed", embed)


# -- 1. replace, never delete ----------------------------------------------------------------------

def test_failed_forced_embed_keeps_the_old_embeddings(ws, monkeypatch):
    w, survey = ws
    final = w.folder("embeddings") / "pca.h5"
    before = final.read_bytes()
    resolved = load("embed.pca", w, cli={"batch_size": 16})
    _raising_embed(monkeypatch, "pca", after=2)  # the first shard (2 batches) lands, then the fault
    with pytest.raises(RuntimeError, match="injected fault"):
        embed_survey(w, survey, "pca", resolved, force=True, shard_size=32)
    assert final.read_bytes() == before  # readable and unchanged
    with EmbeddingReader(final) as r:
        assert r.n_objects == 120
    # the forced recompute is still pending: a plain rerun finishes it instead of calling the old file current
    assert not up_to_date(w, survey, "pca", resolved)
    monkeypatch.undo()
    result = embed_survey(w, survey, "pca", resolved, shard_size=32)
    assert result.summary["complete"] and result.summary["resumed"] > 0
    assert not (w.folder("embeddings") / "pca.shards").exists()
    assert up_to_date(w, survey, "pca", resolved)


def test_force_before_an_array_submission_keeps_the_final_file(ws):
    w, survey = ws
    final = w.folder("embeddings") / "cca.h5"
    before = final.read_bytes()
    discard(w, "cca")  # what `embed cca --force --executor ...` does before submitting
    assert final.read_bytes() == before
    assert (w.folder("embeddings") / "cca.shards" / FORCED).is_file()
    assert not up_to_date(w, survey, "cca", load("embed.cca", w))  # the array tasks recompute


def test_failed_detect_leaves_the_published_set_intact(ws, monkeypatch):
    w, _ = ws
    before = snapshot(w.folder("scores"))

    def fail(*args, **kwargs):
        raise RuntimeError("injected fault after the score tables were written")

    monkeypatch.setattr(detect_run, "fuse_run", fail)
    with pytest.raises(RuntimeError, match="injected fault"):
        detect_run.detect(w, load("detect", w, cli=FAST))
    assert snapshot(w.folder("scores")) == before
    assert not list(w.folder("scores").glob(".staging-*"))
    assert rankings.list_systems(w)  # still the complete, current set


def test_failed_analysis_keeps_the_old_tables(ws, monkeypatch):
    from fmb_engine.analyze import run as analyze_run

    w, _ = ws
    resolved = load("analyze", w)
    analyze_run.analyze_rankings(w, resolved)
    before = snapshot(w.folder("analysis") / "rankings")
    real = analyze_run._write

    def write(df, path, index=False):
        if path.name == "disagreement.csv":
            raise OSError(28, "No space left on device", str(path))
        return real(df, path, index)

    monkeypatch.setattr(analyze_run, "_write", write)
    with pytest.raises(OSError):
        analyze_run.analyze_rankings(w, resolved)
    assert snapshot(w.folder("analysis") / "rankings") == before


# -- 2. inputs must belong together --------------------------------------------------------------

def _foreign_copy(src: Path, dest: Path, survey_digest: str = "f" * 64, keep: int | None = None) -> None:
    """``src`` rewritten as if embedded from another survey (another digest, optionally fewer objects)."""
    with EmbeddingReader(src) as r:
        meta = r.meta
        n = r.n_objects if keep is None else keep
        ids = np.asarray(r.object_ids)[:n]
        vectors = {m: r.load(m)[:n] for m in r.modalities}
        valid = {m: r.valid(m)[:n] for m in r.modalities}
        state = r.state()
    meta.survey_digest = survey_digest
    meta.extra = {**meta.extra, "run_key": "another-run"}
    write_embeddings(dest, ids, vectors, meta, valid=valid, state=state)


def test_detect_refuses_an_embedding_file_of_another_survey(ws):
    w, _ = ws
    before = snapshot(w.folder("scores"))
    _foreign_copy(w.folder("embeddings") / "cca.h5", w.folder("embeddings") / "cca.h5")
    with pytest.raises(StaleError, match=r"embeddings/cca\.h5 was embedded from another survey.*fmb-engine embed cca"):
        detect_run.detect(w, load("detect", w, cli=FAST))
    assert snapshot(w.folder("scores")) == before
    # the ranking built from the old cca embeddings is stale now, for every reader
    with pytest.raises(StaleError, match=r"embeddings/cca\.h5 was rewritten.*fmb-engine detect all"):
        rankings.load_rankings(w)


def test_embedding_files_of_different_surveys_are_refused_without_a_survey(ws):
    w, survey = ws
    survey.unlink()  # no active survey to compare with: the files must agree with each other
    _foreign_copy(w.folder("embeddings") / "pca.h5", w.folder("embeddings") / "pca.h5")
    with pytest.raises(StaleError, match="different surveys"):
        detect_run.detect(w, load("detect", w, cli=FAST))


def test_a_replaced_survey_makes_every_later_stage_refuse(ws, tmp_path):
    from fmb_engine.analyze import run as analyze_run
    from fmb_engine.figures import run as figures_run
    from fmb_engine.survey.stages import make_mock

    w, survey = ws
    analyze_run.analyze_rankings(w, load("analyze", w))
    other = Workspace.init(tmp_path / "other")
    replacement = make_mock(other, load("mock", cli={"objects": 60, "image_size": 32, "batch_size": 30,
                                                     "workers": -1, "seed": 5})).outputs["survey"]
    shutil.copy(replacement, survey)  # what `data mock --force` with other settings leaves behind

    with pytest.raises(StaleError, match="fmb-engine embed"):
        detect_run.detect(w, load("detect", w, cli=FAST))
    with pytest.raises(StaleError, match="the survey was replaced.*fmb-engine detect all"):
        evaluate_workspace(w, survey)
    with pytest.raises(StaleError, match="detect all"):
        rankings.list_systems(w)  # what the explorer reads
    with pytest.raises(StaleError):
        analyze_run.analyze_rankings(w, load("analyze", w))
    with pytest.raises(StaleError, match="fmb-engine embed"):
        analyze_run.analyze_similarity(w, load("analyze", w))
    with pytest.raises(StaleError):
        figures_run.outlier_grid_figure(w, survey, top_k=4)


def test_analysis_made_from_an_older_ranking_is_stale_for_figures(ws):
    from fmb_engine.analyze import run as analyze_run
    from fmb_engine.figures import run as figures_run

    w, _ = ws
    analyze_run.analyze_rankings(w, load("analyze", w))
    detect_run.detect(w, load("detect", w, cli=FAST | {"seed": 7}))  # a new ranking
    with pytest.raises(StaleError, match=r"analysis/rankings/spearman\.csv.*fmb-engine analyze rankings"):
        figures_run.heatmap_figures(w)
    with pytest.raises(StaleError, match="fmb-engine analyze rankings"):
        rankings.load_comparison(w, "spearman")  # what the explorer's Compare screen reads
    analyze_run.analyze_rankings(w, load("analyze", w))
    assert figures_run.heatmap_figures(w).outputs


def test_stale_ranking_exits_4_through_the_cli(ws):
    w, _ = ws
    table = w.folder("scores") / "anomaly_scores_cca.csv"
    frame = pd.read_csv(table, dtype={"object_id": str})
    frame["neg_log_prob"] = frame["neg_log_prob"][::-1].to_numpy()  # another run's scores
    frame.to_csv(table, index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", "evaluate", "-w", str(w.root)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "scores/anomaly_scores_cca.csv was rewritten" in out and "fmb-engine detect all" in out
    assert "Traceback" not in out


# -- 3. one-set publication ------------------------------------------------------------------------

_DETECT_SCRIPT = """
import sys
from pathlib import Path
from fmb_engine.config import load
from fmb_engine.detect.run import detect
from fmb_engine.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
detect(ws, load("detect", ws, cli={"epochs": 400, "iforest_trees": 20, "n_jobs": 1, "seed": 9}))
"""


def test_detect_killed_mid_run_leaves_the_complete_old_set(ws):
    w, survey = ws
    scores = w.folder("scores")
    before = snapshot(scores)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _DETECT_SCRIPT, str(w.root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once some of the new score tables are written
            if any(scores.glob(".staging-*/*.csv")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"detect ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    published = {k: v for k, v in snapshot(scores).items() if not k.startswith(".staging-")}
    assert published == before
    result = evaluate_workspace(w, survey)  # the complete old set, never a mix
    assert result.summary["overview"]["auroc"].notna().any()
    detect_run.detect(w, load("detect", w, cli=FAST | {"models": ["cca"]}, ), parts=("flows",))
    assert not list(scores.glob(".staging-*"))  # the next run removed the unpublished set


def test_a_kill_between_two_renames_is_refused_not_mixed(ws, monkeypatch):
    w, survey = ws
    replaced: list[str] = []
    real = os.replace

    def replace(src, dst):  # die after the first file is published, before systems.parquet
        if ".staging-" in str(src) and ".staging-" not in str(dst):
            if replaced:
                raise KeyboardInterrupt
            replaced.append(str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        detect_run.detect(w, load("detect", w, cli=FAST | {"seed": 3}))
    monkeypatch.undo()
    assert replaced and not replaced[0].endswith("systems.parquet")
    with pytest.raises(StaleError, match="fmb-engine detect all"):
        evaluate_workspace(w, survey)
    with pytest.raises(StaleError):
        rankings.load_table(w)


def test_systems_table_records_its_inputs(ws):
    import pyarrow.parquet as pq

    w, survey = ws
    record = lineage.systems_record(pq.read_schema(rankings.systems_path(w)).metadata)
    assert record[lineage.SURVEY] == lineage.survey_digest(survey)
    assert record["embeddings/cca.h5"] == lineage.embedding_identity(w.folder("embeddings") / "cca.h5")
    for name in ("anomaly_scores_cca.csv", "baseline_scores_pca.csv", "cosine_scores_cca.csv",
                 "multimodal/all_scores.csv"):
        assert record[f"scores/{name}"] == lineage.file_digest(w.folder("scores") / name)


def _count_hashing(monkeypatch) -> list[str]:
    """Record every file lineage hashes from now on (its digest cache emptied first)."""
    from fmb_engine import manifest

    lineage._digest.cache_clear()
    hashed: list[str] = []
    real = manifest.file_digest
    monkeypatch.setattr(manifest, "file_digest", lambda path, *a, **k: hashed.append(str(path)) or real(path, *a, **k))
    return hashed


def test_an_unchanged_input_is_not_hashed_again(ws, monkeypatch):
    """The record keeps each file's size and mtime beside its digest: a check of unchanged inputs reads
    none of them (at 10^6 objects the explorer re-hashed ~0.5 GB at every start)."""
    import pyarrow.parquet as pq

    w, _ = ws
    meta = pq.read_schema(rankings.systems_path(w)).metadata
    stamps = lineage.systems_stamps(meta)
    assert set(stamps) == {k for k in lineage.systems_record(meta) if k.startswith("scores/")}
    hashed = _count_hashing(monkeypatch)
    rankings.check_current(w)
    assert hashed == []
    table = w.folder("scores") / "anomaly_scores_cca.csv"
    os.utime(table)  # touched, same bytes: hashed once, still current
    rankings.check_current(w)
    assert hashed == [str(table.absolute())]


def test_a_rewritten_input_is_hashed_and_found_stale(ws, monkeypatch):
    w, _ = ws
    table = w.folder("scores") / "anomaly_scores_cca.csv"
    frame = pd.read_csv(table, dtype={"object_id": str})
    frame["neg_log_prob"] = frame["neg_log_prob"][::-1].to_numpy()
    frame.to_csv(table, index=False)
    hashed = _count_hashing(monkeypatch)
    with pytest.raises(StaleError, match="anomaly_scores_cca.csv was rewritten"):
        rankings.check_current(w)
    assert hashed == [str(table.absolute())]


def test_analysis_records_keep_stamps_and_a_record_without_them_is_hashed(ws, monkeypatch):
    import json

    from fmb_engine.analyze import run as analyze_run
    from fmb_engine.figures import run as figures_run

    w, _ = ws
    analyze_run.analyze_rankings(w, load("analyze", w))
    record_file = w.folder("analysis") / "rankings" / lineage.RECORD_FILE
    records = json.loads(record_file.read_text())
    entry = records["spearman.csv"]
    assert entry[lineage.STAMPS] == {"scores/systems.parquet": lineage.stamp(rankings.systems_path(w))}
    hashed = _count_hashing(monkeypatch)
    figures_run.heatmap_figures(w)
    assert str(rankings.systems_path(w).absolute()) not in hashed
    for value in records.values():  # a record written before stamps existed: checked by hashing
        value.pop(lineage.STAMPS)
    record_file.write_text(json.dumps(records))
    lineage._digest.cache_clear()
    figures_run.heatmap_figures(w)
    assert str(rankings.systems_path(w).absolute()) in hashed


def test_a_file_changing_while_hashed_gets_no_stamp(tmp_path, monkeypatch):
    from fmb_engine import manifest

    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    assert lineage.hashed(path)[1] == lineage.stamp(path)
    real = manifest.file_digest

    def digest_while_written(p, *a, **k):
        out = real(p, *a, **k)
        Path(p).write_text("a,b\n1,2\n3,4\n")
        return out

    monkeypatch.setattr(manifest, "file_digest", digest_while_written)
    lineage._digest.cache_clear()
    assert lineage.hashed(path)[1] is None


# -- 4. stage-output locks -------------------------------------------------------------------------

def _hold(target: Path, ready: Path) -> subprocess.Popen:
    script = textwrap.dedent(f"""
        import pathlib, time
        from fmb_engine import locks
        with locks.hold(pathlib.Path({str(target)!r}), "test holder"):
            pathlib.Path({str(ready)!r}).write_text("held")
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the holder did not take the lock"
    return proc


@pytest.mark.parametrize("stage", ["embed", "detect"])
def test_a_second_writer_is_busy_and_the_first_ones_outputs_stay(ws, tmp_path, stage):
    w, survey = ws
    target = w.folder("embeddings") / "pca.h5" if stage == "embed" else w.folder("scores")
    folder = w.folder("embeddings") if stage == "embed" else w.folder("scores")
    before = snapshot(folder)
    holder = _hold(target, tmp_path / "ready")
    try:
        with pytest.raises(BusyError, match=r"busy: .* is being written by PID \d+") as caught:
            if stage == "embed":
                embed_survey(w, survey, "pca", load("embed.pca", w), force=True)
            else:
                detect_run.detect(w, load("detect", w, cli=FAST))
        assert caught.value.exit_code == 3
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(folder) == before
    assert locks.holder(target) is None


def test_staged_set_publishes_together_with_the_recording_file_last(tmp_path, monkeypatch):
    from fmb_engine.publish import StagedSet, clean

    root = tmp_path / "out"
    root.mkdir()
    (root / "a.csv").write_text("old a")
    (root / "gone.csv").write_text("old, dropped by the run")
    moved: list[str] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(Path(dst).name), real(src, dst)))
    with StagedSet(root, "run1") as stage:
        stage.path(root / "table.parquet").write_text("new record")
        stage.path(root / "a.csv").write_text("new a")
        stage.path(root / "sub" / "b.csv").write_text("new b")
        stage.remove(root / "gone.csv")
        assert stage.read_path(root / "a.csv").read_text() == "new a"  # later steps read the run's own version
        assert (root / "a.csv").read_text() == "old a" and (root / "gone.csv").exists()  # nothing published yet
        stage.publish(last=(root / "table.parquet",))
    assert moved == ["a.csv", "b.csv", "table.parquet"]
    assert (root / "a.csv").read_text() == "new a" and (root / "sub" / "b.csv").read_text() == "new b"
    assert not (root / "gone.csv").exists() and not list(root.glob(".staging-*"))
    left = root / ".staging-killed-1"
    (left / "x").mkdir(parents=True)
    assert clean(root) == [left] and not left.exists()
