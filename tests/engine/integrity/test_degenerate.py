"""Degenerate data is flagged, never ranked in row order (issue 12).

Identical vectors stop detection with an error naming the file, the modality and
the count; duplicates, constant vectors, zero-variance features and tied scores
are loud warnings (manifest + CLI); tied scores get tied ranks in the score
tables, the systems table and fusion; evaluation and the rankings comparison
explain what a constant score means instead of crashing or printing a bare NaN.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fmb_engine.analyze.rankings import RankMatrix, compare, spearman
from fmb_engine.config import load
from fmb_engine.detect.degenerate import describe_vectors, tie_share
from fmb_engine.detect.metrics import evaluate_scores
from fmb_engine.detect.evaluation import evaluate_workspace
from fmb_engine.detect.fusion import fuse
from fmb_engine.detect.run import detect
from fmb_engine.detect.tables import anomaly_table, rank_ascending, rank_descending
from fmb_engine.embed.run import embed_survey
from fmb_engine.embed.store import EmbeddingReader, write_embeddings
from fmb_engine.errors import DataError
from fmb_engine.workspace import Workspace

FAST = {"epochs": 2, "iforest_trees": 20, "baselines": False}


# ---------------------------------------------------------------- ranks of tied scores
def test_tied_scores_share_the_smallest_rank_never_row_order():
    assert rank_descending(np.array([0.5, 0.5, 0.5, 0.5])).tolist() == [1, 1, 1, 1]
    assert rank_descending(np.array([1.0, 3.0, 3.0, 2.0, 0.0])).tolist() == [4, 1, 1, 3, 5]
    assert rank_ascending(np.array([2.0, 1.0, 2.0, 5.0])).tolist() == [2, 1, 2, 4]
    # without ties: the ordinal ranking 1..N of the reference, unchanged
    rng = np.random.default_rng(0)
    score = rng.normal(size=500)
    assert sorted(rank_descending(score)) == list(range(1, 501))
    assert (np.argsort(rank_descending(score)) == np.argsort(-score, kind="stable")).all()
    table = anomaly_table(list("abcd"), np.zeros(4), "embedding_images")
    assert table["rank"].tolist() == [1, 1, 1, 1] and (table["anomaly_sigma"] == 0).all()


def test_fusion_of_a_constant_system_is_decided_by_the_others():
    ids = list("abcde")
    rank_img, rank_spec = [5, 1, 3, 2, 4], [4, 2, 1, 3, 5]
    constant = [1, 1, 1, 1, 1]  # a mismatch whose score is constant: every object tied at rank 1
    for method in ("geo", "min", "avg", "fisher"):
        df = fuse(ids, rank_img, rank_spec, constant, 5, 5, 5, method=method)
        assert (df["p_mis"] == 1.0).all()
        assert df["rank_fused"].tolist() != [1, 2, 3, 4, 5]
    geo = fuse(ids, rank_img, rank_spec, constant, 5, 5, 5, method="geo")
    np.testing.assert_allclose(geo["score_mm_geo"], np.sqrt(geo["p_img"] * geo["p_spec"]))
    # every system constant: everything is tied, nothing is ranked by row order
    flat = fuse(ids, constant, constant, constant, 5, 5, 5, method="fisher")
    assert flat["rank_fused"].tolist() == [1, 1, 1, 1, 1]
    # tied fused scores tie (here a and d, min fusion) instead of taking their row order
    mn = fuse(list("abcd"), [1, 2, 3, 4], [2, 1, 4, 3], [4, 3, 1, 2], 4, 4, 4, method="min")
    assert mn["rank_fused"].tolist() == [3, 1, 2, 3]


def test_fusion_without_ties_is_unchanged_by_the_tie_rule():
    """Unique ranks: p, every fused score and rank_fused are the ordinal ranking's, bit for bit."""
    rng = np.random.default_rng(1)
    n = 300
    r = {k: rng.permutation(n) + 1 for k in ("img", "spec", "mis")}
    df = fuse(np.arange(n), r["img"], r["spec"], r["mis"], n, n, n, method="geo")
    np.testing.assert_array_equal(df["p_img"], (n - r["img"] + 1.0) / n)
    geo = df["p_mis"] * np.sqrt(df["p_img"] * df["p_spec"])
    np.testing.assert_array_equal(df["score_mm_geo"], geo)
    ordinal = np.empty(n, dtype=np.int64)
    ordinal[np.argsort(-geo.to_numpy(), kind="stable")] = np.arange(1, n + 1)
    np.testing.assert_array_equal(df["rank_fused"], ordinal)


# ---------------------------------------------------------------- vectors
def test_describe_vectors_counts_duplicates_constant_rows_and_dead_features():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    x[:, 2] = 3.0  # a dead feature
    x[10:20] = x[0]  # ten duplicates of row 0
    x[30] = 3.0  # a constant vector (every feature equal)
    report = describe_vectors(x)
    assert (report.rows, report.features, report.duplicates, report.constant_vectors) == (50, 6, 10, 1)
    assert report.distinct == 40 and report.zero_variance_features == 1 and report.relative_spread > 0.1
    same = describe_vectors(np.tile(x[:1], (20, 1)))
    assert same.distinct == 1 and same.relative_spread == 0.0


def test_check_scores_flags_constant_near_constant_and_mostly_tied(tmp_path):
    from fmb_engine.detect.degenerate import check_scores
    from fmb_engine.manifest import RunManifest

    manifest = RunManifest(Workspace.init(tmp_path / "ws"), "detect.test", {})
    rng = np.random.default_rng(5)
    flagged = check_scores({
        "m/image/flow": rng.normal(size=100),  # fine
        "m/image/knn": np.full(100, 2.5),  # constant
        "m/cross/mismatch": 1.0 - np.where(np.arange(100) % 2, 1.0, 1.0 - 1.2e-7),  # constant up to rounding
        "m/spectrum/flow": np.r_[np.zeros(60), rng.normal(size=40)],  # 60 % tied
    }, manifest)
    assert set(flagged) == {"m/image/knn", "m/cross/mismatch", "m/spectrum/flow"}
    assert flagged["m/image/knn"] == 1.0 and flagged["m/spectrum/flow"] == 0.6
    warnings = manifest.data["warnings"]
    assert any("m/image/knn: constant score over its 100 objects" in w for w in warnings)
    assert any("m/cross/mismatch: constant score over its 100 objects up to rounding" in w for w in warnings)
    assert any("m/spectrum/flow: 60% of its 100 objects share their score" in w for w in warnings)
    assert manifest.data["counts"]["tied_scores"] == flagged


def test_tie_share():
    assert tie_share(np.array([1.0, 2.0, 3.0])) == 0.0
    assert tie_share(np.array([1.0, 1.0, 1.0, 1.0])) == 1.0
    assert tie_share(np.array([1.0, 1.0, 2.0, 3.0])) == 0.5


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, small_survey):
    """The 120-object mock embedded with cca; tests write doctored copies of cca.h5."""
    ws = Workspace.init(tmp_path_factory.mktemp("degenerate") / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    embed_survey(ws, survey, "cca", load("embed.cca", ws))
    path = ws.folder("embeddings") / "cca.h5"
    with EmbeddingReader(path) as reader:
        original = (reader.meta, reader.object_ids, reader.load_all(), {m: reader.valid(m) for m in reader.modalities})
    return ws, original


def _workspace_with(embedded, tmp_path, change) -> Workspace:
    """A copy of the embedded workspace whose cca.h5 holds ``change(vectors)``."""
    ws0, (meta, ids, vectors, valid) = embedded
    root = tmp_path / "ws"
    shutil.copytree(ws0.root, root)
    ws = Workspace(root)
    new = change({m: v.copy() for m, v in vectors.items()})
    write_embeddings(ws.folder("embeddings") / "cca.h5", ids, new, meta, valid=valid)
    return ws


def _manifest(result) -> dict:
    return json.loads(result.manifest.read_text())


def test_identical_vectors_are_an_error_naming_file_modality_and_count(embedded, tmp_path):
    def identical(v):
        v["image"][:] = v["image"][0]
        return v

    ws = _workspace_with(embedded, tmp_path, identical)
    with pytest.raises(DataError) as info:
        detect(ws, load("detect", ws, cli=FAST))
    message = str(info.value)
    n = int(embedded[1][3]["image"].sum())
    assert "cca.h5: image" in message and f"all {n} usable vectors are identical" in message
    assert "embed cca --force" in message
    assert not (ws.folder("scores") / "systems.parquet").exists()
    failed = [json.loads(p.read_text()) for p in ws.folder("runs").glob("*detect*.json")]
    assert [m["status"] for m in failed] == ["failed"]


def test_near_constant_vectors_are_an_error(embedded, tmp_path):
    def near(v):
        base = v["spectrum"][0].astype(np.float64)
        jitter = np.random.default_rng(3).normal(scale=1e-9, size=v["spectrum"].shape)
        v["spectrum"][:] = (base + np.abs(base).max() * jitter).astype(np.float32)
        return v

    ws = _workspace_with(embedded, tmp_path, near)
    with pytest.raises(DataError, match=r"cca\.h5: spectrum: the \d+ usable vectors are near-constant"):
        detect(ws, load("detect", ws, cli=FAST))


def test_duplicates_and_a_constant_score_are_loud_warnings_with_tied_ranks(embedded, tmp_path):
    """A third of the image vectors duplicated, and spectrum vectors equal to the image ones:
    the aligned cosine mismatch is 1 for every object, a constant score."""
    def doctored(v):
        v["image"][1:40] = v["image"][0]
        v["spectrum"][:] = v["image"]
        return v

    ws = _workspace_with(embedded, tmp_path, doctored)
    result = detect(ws, load("detect", ws, cli=FAST))
    manifest = _manifest(result)
    warnings = "\n".join(manifest["warnings"])
    assert "cca/image: 39 of 120 vectors (32.5%) duplicate another vector" in warnings
    assert "detect.max_duplicate_fraction = 0.05" in warnings
    assert "cca/cross/mismatch: constant score over its 120 objects" in warnings
    assert manifest["counts"]["vectors:cca/image"]["duplicates"] == 39
    assert manifest["counts"]["tied_scores"]["cca/cross/mismatch"] == 1.0
    systems = pd.read_parquet(ws.folder("scores") / "systems.parquet").set_index("object_id")
    # 1 - cos of identical vectors is 0 up to rounding: a few distinct values, tied ranks, never 1..N
    mismatch_rank = systems["rank:cca/cross/mismatch"]
    assert mismatch_rank.nunique() <= 5 and mismatch_rank.min() == 1
    # duplicated image vectors: tied flow scores, one shared rank
    image_rank = systems.loc[systems.index[:40], "rank:cca/image/flow"]
    assert image_rank.nunique() == 1
    fused = systems["rank:cca/fused/fisher"]
    assert fused.tolist() != list(range(1, len(fused) + 1))
    mismatch = pd.read_csv(ws.folder("scores") / "cosine_scores_cca.csv")
    assert mismatch.groupby("mismatch_score")["rank"].nunique().eq(1).all()
    # evaluation still runs, says the mismatch is chance level by construction, and explains it in the report
    evaluated = evaluate_workspace(ws, ws.folder("survey") / "mock.h5")
    note = "cca/cross/mismatch: score constant up to rounding over its 120 labelled objects; it ranks nothing"
    assert any(note in w for w in evaluated.summary["warnings"])
    report = evaluated.outputs["report"].read_text()
    assert "## Notes" in report and note in report
    # a higher threshold silences the duplicate warning, not the constant-score one
    quiet = detect(ws, load("detect", ws, cli=FAST | {"max_duplicate_fraction": 0.5}))
    warnings = "\n".join(_manifest(quiet)["warnings"])
    assert "duplicate another vector" not in warnings and "constant score" in warnings


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def test_the_cli_prints_degenerate_warnings_and_errors(embedded, tmp_path):
    def doctored(v):
        v["spectrum"][:] = v["image"]
        return v

    ws = _workspace_with(embedded, tmp_path, doctored)
    (ws.root / "fmb.yaml").write_text("detect:\n  epochs: 2\n  baselines: false\n")
    proc = _cli("detect", "all", cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    assert "warning: cca/cross/mismatch: constant score over its 120 objects" in " ".join(proc.stdout.split())

    def identical(v):
        v["image"][:] = 0.0
        return v

    ws = _workspace_with(embedded, tmp_path / "two", identical)
    proc = _cli("detect", "flows", cwd=ws.root)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1 and "Traceback" not in output
    assert "cca.h5: image: all 120 usable vectors are identical" in output


# ---------------------------------------------------------------- evaluation and comparisons
def test_evaluate_on_a_constant_score_is_chance_level_not_row_order():
    labels = np.array([""] * 90 + ["merger"] * 10, dtype=object)
    constant = np.zeros(100)
    metrics = evaluate_scores(labels, constant, ks=(10,)).set_index(["subset", "metric"])
    assert metrics.loc[("all", "auroc"), "value"] == 0.5
    # the top 10 of a tie is any 10 objects: the expected precision, 10 %, not the first 10 rows'
    labels_first = np.array(["merger"] * 10 + [""] * 90, dtype=object)
    for lab in (labels, labels_first):
        m = evaluate_scores(lab, constant, ks=(10,)).set_index(["subset", "metric"])
        assert m.loc[("all", "precision@k"), "value"] == pytest.approx(0.1)
        assert m.loc[("all", "recall@k"), "value"] == pytest.approx(0.1)


def test_rankings_comparison_explains_a_constant_ranking():
    ids = [f"o{i}" for i in range(50)]
    rng = np.random.default_rng(4)
    ranks = pd.DataFrame({"a": rng.permutation(50) + 1, "b": rng.permutation(50) + 1,
                          "flat": np.ones(50, dtype=np.int64)}, index=ids)
    res = compare(RankMatrix(ranks))
    assert np.isnan(res["spearman"].loc["a", "flat"])
    notes = res["notes"]
    assert any("flat" in n and "Spearman" in n and "every object" in n for n in notes["note"])
    assert np.isfinite(res["spearman"].loc["a", "b"])
    # the tie-corrected Spearman equals the textbook formula when nothing ties
    a, b = ranks["a"].to_numpy(), ranks["b"].to_numpy()
    assert res["spearman"].loc["a", "b"] == spearman(a, b)
    # ties are kept (not ordered by row): a ranking with two tied halves correlates with its scores' halves
    halves = np.r_[np.ones(25), np.full(25, 26)].astype(np.int64)
    assert spearman(halves, np.arange(1, 51)) == pytest.approx(np.corrcoef(np.r_[np.full(25, 13.0), np.full(25, 38.0)],
                                                                             np.arange(1, 51))[0, 1])
