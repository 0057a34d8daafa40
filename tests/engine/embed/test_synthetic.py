"""`embed synthetic`: deterministic whatever the chunk size, a standard embedding file with its truth,
and a survey-free workspace that detect and evaluate work on."""

import json
import shutil

import numpy as np
import pytest

from fmb_engine import lineage
from fmb_engine.config import load
from fmb_engine.detect.evaluation import evaluate_workspace, synthetic_runs
from fmb_engine.detect.run import detect
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.embed.synthetic import BLOCK, KINDS, SyntheticModel, SyntheticSpec, parse_dims
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.errors import ConfigError, StaleError
from fmb_engine.workspace import Workspace
from tests.engine.cli.test_exit_codes import cli  # noqa: F401 - the fixture: fmb-engine in this process

DIMS = {"image": 12, "spectrum": 10, "joint": 20}
FAST = {"epochs": 3, "iforest_trees": 50, "n_jobs": 1}


def _contents(path):
    with EmbeddingReader(path) as r:
        return (list(r.object_ids), {m: r.load(m) for m in r.modalities},
                {k: np.asarray(v) for k, v in r.columns().items()}, r.survey_digest)


def test_same_seed_same_file_whatever_the_chunk(workspace):
    spec = SyntheticSpec(2 * BLOCK + 300, DIMS, seed=7, outlier_fraction=0.03)
    a = write_synthetic(workspace, spec, "a", chunk=333).outputs["embeddings"]
    b = write_synthetic(workspace, spec, "b", chunk=5000).outputs["embeddings"]
    ids_a, vec_a, col_a, dig_a = _contents(a)
    ids_b, vec_b, col_b, dig_b = _contents(b)
    assert ids_a == ids_b and dig_a == dig_b
    for m in DIMS:
        assert np.array_equal(vec_a[m], vec_b[m])
    for k in ("anomaly_class", "is_anomaly"):
        assert np.array_equal(col_a[k], col_b[k])
    other = write_synthetic(workspace, SyntheticSpec(spec.objects, DIMS, seed=8, outlier_fraction=0.03), "c").outputs
    assert not np.array_equal(_contents(other["embeddings"])[1]["image"], vec_a["image"])


def test_rows_of_any_range_are_the_rows_of_the_whole():
    model = SyntheticModel(SyntheticSpec(3000, DIMS, seed=1, outlier_fraction=0.05))
    whole = SyntheticModel(model.spec).rows(0, 3000)
    for start, stop in ((0, 1), (1000, 1100), (1023, 2049), (2999, 3000), (5, 5)):
        part = model.rows(start, stop)
        assert np.array_equal(part.vectors["joint"], whole.vectors["joint"][start:stop])
        assert np.array_equal(part.anomaly_class, whole.anomaly_class[start:stop])
        assert list(part.object_ids) == list(whole.object_ids[start:stop])


def test_the_file_is_a_standard_embedding_file_with_its_truth(workspace):
    spec = SyntheticSpec(2000, DIMS, seed=3, outlier_fraction=0.05)
    result = write_synthetic(workspace, spec)
    path = result.outputs["embeddings"]
    assert path == workspace.folder("embeddings") / "synthetic.h5"
    with EmbeddingReader(path) as r:
        assert r.modalities == ("image", "spectrum", "joint") and r.dims == DIMS and r.n_objects == 2000
        assert r.embedder == "synthetic" and not r.aligned and r.extra["survey_free"] is True
        assert r.extra["synthetic"]["seed"] == 3 and r.survey_digest == spec.population_digest()
        assert r.object_ids[0] == "syn-000000001" and r.object_ids[-1] == "syn-000002000"
        assert (r.rows() == -1).all() and r.valid("joint").all() and (r.reasons() == "").all()
        assert all(np.isfinite(r.load(m)).all() for m in DIMS)
        columns = r.columns()
    classes, flags = columns["anomaly_class"], columns["is_anomaly"]
    assert flags.sum() == spec.n_outliers == 100  # exactly floor(N * F)
    assert np.array_equal(flags, classes != "")
    kinds, counts = np.unique(classes[flags], return_counts=True)
    assert list(kinds) == sorted(KINDS) and set(counts) == {25}  # dealt in turn: an equal share each
    assert result.summary["outliers"] == dict.fromkeys(KINDS, 25)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["status"] == "completed" and manifest["survey_free"] is True
    assert manifest["counts"]["outliers"] == dict.fromkeys(KINDS, 25)


def test_an_interrupted_write_leaves_nothing_under_the_final_name(workspace, monkeypatch):
    def interrupted(self, start, stop):
        if start:
            raise KeyboardInterrupt
        return original(self, start, stop)

    original = SyntheticModel.rows
    monkeypatch.setattr(SyntheticModel, "rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(workspace, SyntheticSpec(3000, {"image": 4}), chunk=1000)
    assert list(workspace.folder("embeddings").iterdir()) in ([], [workspace.folder("embeddings") / ".synthetic.h5.lock"])


def test_the_truth_does_not_depend_on_the_dimensions(workspace):
    small = write_synthetic(workspace, SyntheticSpec(1500, {"image": 4}, seed=5), "small").outputs["embeddings"]
    large = write_synthetic(workspace, SyntheticSpec(1500, {"image": 9, "joint": 6}, seed=5), "large").outputs["embeddings"]
    _, _, col_s, dig_s = _contents(small)
    _, _, col_l, dig_l = _contents(large)
    assert dig_s == dig_l and np.array_equal(col_s["anomaly_class"], col_l["anomaly_class"])


def test_off_manifold_outliers_leave_only_their_own_modality():
    """The distance off a modality's manifold (the span of its map) grows only for that modality's outliers."""
    model = SyntheticModel(SyntheticSpec(4000, {"image": 64, "spectrum": 64}, seed=2, outlier_fraction=0.1))
    rows = model.rows(0, 4000)
    normal = rows.anomaly_class == b""
    off = {}
    for m, x in rows.vectors.items():
        basis = np.linalg.qr(model.maps[m].T)[0]  # (D, 16): the manifold's directions
        off[m] = np.linalg.norm(x - (x @ basis) @ basis.T, axis=1)
    for kind, seen, unseen in (("off_manifold_image", "image", "spectrum"), ("off_manifold_spectrum", "spectrum", "image")):
        odd = rows.anomaly_class == kind.encode()
        assert np.median(off[seen][odd]) > 2 * np.median(off[seen][normal])
        assert np.median(off[unseen][odd]) < 1.1 * np.median(off[unseen][normal])


@pytest.mark.parametrize("text, message", [
    ("image:768", "is not MODALITY=DIMS"), ("image=768,,joint=3", "is not MODALITY=DIMS"),
    ("colour=3", "unknown modality 'colour'"), ("image=x", "whole number"), ("image=0", ">= 1"),
    ("image=3,image=4", "given twice"),
])
def test_bad_dims_are_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_dims(text)


def test_parse_dims_keeps_the_canonical_order():
    assert list(parse_dims("joint=6, image=2")) == ["image", "joint"]


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "--objects must be >= 1"), (["-n", "-5"], "--objects must be >= 1"),
    (["-n", "10", "--dims", "image"], "is not MODALITY=DIMS"),
    (["-n", "10", "--outlier-fraction", "0.7"], "--outlier-fraction must be in [0, 0.5]"),
    (["-n", "10", "--chunk", "0"], "--chunk must be >= 1"),
])
def test_cli_refuses_bad_arguments_and_writes_nothing(cli, workspace, args, message):
    code, out, err = cli("embed", "synthetic", "-w", workspace.root, *args)
    assert code == 1 and message in err and out == ""
    assert not list(workspace.folder("embeddings").glob("*.h5"))


def test_cli_round_trip_and_no_silent_overwrite(cli, workspace):
    args = ("embed", "synthetic", "-w", workspace.root, "-n", "1200", "--dims", "image=6,spectrum=5", "--seed", "4")
    code, out, _ = cli(*args, "--chunk", "500")
    assert code == 0 and "1,200 objects" in " ".join(out.split()) and "3 rare_cluster" in out
    path = workspace.folder("embeddings") / "synthetic.h5"
    before = _contents(path)
    code, _, err = cli(*args[:-1], "9")
    assert code == 1 and "pass --force" in err
    assert np.array_equal(_contents(path)[1]["image"], before[1]["image"])
    code, _, _ = cli(*args, "--force")
    assert code == 0 and np.array_equal(_contents(path)[1]["image"], before[1]["image"])


def test_detect_all_and_evaluate_on_a_survey_free_workspace(cli, workspace):
    # dimensions above the latent's 16, so that "off the manifold" exists
    write_synthetic(workspace, SyntheticSpec(3000, {"image": 32, "spectrum": 32, "joint": 48}, seed=11,
                                             outlier_fraction=0.04))
    result = detect(workspace, load("detect", workspace, cli=FAST | {"epochs": 10}))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["survey_free"] is True
    import pyarrow.parquet as pq

    record = lineage.systems_record(pq.read_schema(result.outputs["systems"]).metadata)
    assert lineage.SURVEY not in record and "embeddings/synthetic.h5" in record  # made from no survey
    assert synthetic_runs(workspace) == [workspace.folder("embeddings") / "synthetic.h5"]
    overview = evaluate_workspace(workspace, None).summary["overview"]
    assert overview.loc["synthetic/joint/flow", "auroc"] > 0.8
    assert overview.loc["synthetic/cross/mismatch", "mismatch"] > 0.8  # the kind only the cross-modal system sees
    assert overview.loc["synthetic/image/flow", "off_manifold_image"] > 0.8
    # the CLI finds the truth without a survey (fmb.yaml names one that does not exist)
    code, out, err = cli("evaluate", "-w", workspace.root, "--format", "json")
    assert code == 0, err
    systems = {row["system"]: row for row in json.loads(out)["systems"]}
    assert systems["synthetic/joint/flow"]["auroc"] > 0.8


def test_synthetic_files_of_two_populations_are_not_scored_together(workspace):
    write_synthetic(workspace, SyntheticSpec(300, {"image": 4}, seed=1), "one")
    write_synthetic(workspace, SyntheticSpec(300, {"image": 4}, seed=2), "two")
    with pytest.raises(StaleError, match="different synthetic populations"):
        detect(workspace, load("detect", workspace, cli=FAST))


def test_survey_and_synthetic_runs_are_never_mixed(analysed, tmp_path):
    src, survey = analysed
    shutil.copytree(src.root, tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    write_synthetic(ws, SyntheticSpec(400, DIMS, seed=1, outlier_fraction=0.05))
    with pytest.raises(StaleError, match="cannot be scored or compared with embeddings made from a survey"):
        detect(ws, load("detect", ws, cli=FAST))
    # scoring the synthetic run alone drops the survey runs' systems from the table, saying why
    result = detect(ws, load("detect", ws, cli=FAST | {"models": ["synthetic"]}))
    assert all(s.startswith("synthetic/") for s in result.summary["systems"])
    assert any("cca dropped" in w and "survey-free" in w for w in result.summary["warnings"])
    with pytest.raises(Exception, match="leave out --survey"):
        evaluate_workspace(ws, survey)


def test_a_survey_embedding_next_to_the_survey_is_refused_as_survey_free_partner(workspace):
    """An embedding file made from a survey and a synthetic one, no survey file present: still not mixed."""
    write_synthetic(workspace, SyntheticSpec(200, {"image": 4}, seed=1))
    ids = [f"obj{i}" for i in range(50)]
    write_embeddings(workspace.folder("embeddings") / "pca.h5", ids, {"image": np.zeros((50, 4), np.float32)},
                     EmbeddingMeta("pca", False, ("image",), survey_digest="abc123"))
    with pytest.raises(StaleError, match="survey-free synthetic embeddings"):
        detect(workspace, load("detect", workspace, cli=FAST))
