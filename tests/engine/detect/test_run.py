"""The detection stage end to end on a small mock survey: tables, fusion, systems, evaluation."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fmb_engine.config import load
from fmb_engine.detect.evaluation import evaluate_workspace
from fmb_engine.detect.run import detect
from fmb_engine.embed.run import embed_survey
from fmb_engine.errors import DataError

FAST = {"epochs": 2, "iforest_trees": 50}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, small_survey):
    from fmb_engine.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("detect") / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    for model in ("cca", "pca"):
        embed_survey(ws, survey, model, load(f"embed.{model}", ws))
    result = detect(ws, load("detect", ws, cli=FAST))
    return ws, survey, result


def test_reference_compatible_tables(scored):
    ws, _, result = scored
    scores = ws.folder("scores")
    flows = pd.read_csv(scores / "anomaly_scores_cca.csv", dtype={"object_id": str})
    assert list(flows.columns) == ["object_id", "embedding_key", "log_prob", "neg_log_prob", "anomaly_sigma", "rank"]
    assert set(flows["embedding_key"]) == {"embedding_images", "embedding_spectra", "embedding_joint"}
    for _, part in flows.groupby("embedding_key"):
        assert sorted(part["rank"]) == list(range(1, len(part) + 1))
        top = part.sort_values("rank").iloc[0]
        assert top["neg_log_prob"] == part["neg_log_prob"].max()
        assert abs(part["anomaly_sigma"].mean()) < 1e-6
    cos = pd.read_csv(scores / "cosine_scores_cca.csv")
    assert set(cos["method"]) == {"cosine"} and cos.iloc[0]["cosine_similarity"] == cos["cosine_similarity"].min()
    learned = pd.read_csv(scores / "cosine_scores_pca.csv")
    assert set(learned["method"]) == {"ridge_residual"} and learned["cosine_similarity"].isna().all()
    assert (scores / "models" / "cca" / "flow_image.npz").is_file()
    assert (scores / "multimodal" / "ranked" / "top200_cca_fisher.csv").is_file()


def test_fusion_percentiles_and_systems_table(scored):
    ws, _, result = scored
    fused = pd.read_csv(ws.folder("scores") / "multimodal" / "all_scores.csv")
    for col in ("p_img", "p_spec", "p_mis"):
        assert fused[col].between(0, 1, inclusive="right").all()
    assert set(fused["model"]) == {"cca", "pca"}
    systems = pd.read_parquet(ws.folder("scores") / "systems.parquet")
    assert len(systems) == 120 and systems["object_id"].is_unique
    for name in ("cca/image/flow", "cca/cross/mismatch", "cca/fused/fisher", "pca/joint/knn", "pca/spectrum/iforest"):
        assert name in result.summary["systems"]
        ranks = systems[f"rank:{name}"]
        assert sorted(ranks.dropna().astype(int)) == list(range(1, ranks.notna().sum() + 1))
        best = systems.loc[ranks == 1, f"score:{name}"].iloc[0]
        assert best == systems[f"score:{name}"].max()


def test_every_system_names_a_known_modality(scored):
    """The readers (rankings, the explorer) know every modality detect writes, cross and fused included."""
    from fmb_engine.rankings import MODALITIES, list_systems, parse_system

    ws, survey, result = scored
    written = {parse_system(s).modality for s in list_systems(ws, survey)}
    assert written == set(MODALITIES)


def test_same_seed_same_ranks(scored, tmp_path):
    """Same seed, same ranks -- also when the flows train in one process instead of side by side."""
    ws, _, _ = scored
    assert load("detect", ws, cli=FAST).values.flow_jobs() >= 1
    before = pd.read_parquet(ws.folder("scores") / "systems.parquet")
    detect(ws, load("detect", ws, cli=FAST | {"models": ["cca"], "n_jobs": 1}), parts=("flows",))
    after = pd.read_parquet(ws.folder("scores") / "systems.parquet")
    for col in (c for c in before.columns if c.startswith("rank:cca/") and "/fused/" not in c):
        assert before[col].equals(after[col]), col


def test_evaluation_reports_every_system(scored):
    ws, survey, _ = scored
    result = evaluate_workspace(ws, survey)
    table = pd.read_csv(result.outputs["evaluation"])
    assert {"auroc", "average_precision", "precision@k", "recall@k"} <= set(table["metric"])
    assert "cross_match" in set(table["subset"]) and "cca/fused/fisher" in set(table["system"])
    auroc = table[(table.metric == "auroc") & (table.subset == "all")].set_index("system")["value"]
    from sklearn.metrics import roc_auc_score

    from fmb_engine.survey.store import SurveyReader

    systems = pd.read_parquet(ws.folder("scores") / "systems.parquet")
    with SurveyReader(survey) as r:
        truth = systems[["object_id"]].merge(r.table()[["object_id", "anomaly_class"]], on="object_id")
    expected = roc_auc_score(truth["anomaly_class"] != "", systems["score:cca/fused/fisher"])
    assert auroc["cca/fused/fisher"] == pytest.approx(expected)
    assert "cca/fused/fisher" in result.outputs["report"].read_text()
    manifest = json.loads(result.manifest.read_text())
    assert manifest["stage"] == "evaluate"


def test_missing_inputs_are_clear_errors(workspace):
    with pytest.raises(DataError, match="no embeddings in .*run `fmb-engine embed cca`"):
        detect(workspace, load("detect", workspace))
    with pytest.raises(DataError, match="no embeddings for nope"):
        detect(workspace, load("detect", workspace, cli={"models": ["nope"]}))


def test_objects_missing_a_modality_are_counted_not_silently_dropped(scored, tmp_path):
    from fmb_engine.embed.store import EmbeddingReader

    ws, _, result = scored
    manifest = json.loads(result.manifest.read_text())
    with EmbeddingReader(ws.folder("embeddings") / "cca.h5") as r:
        invalid = int((~r.valid("image")).sum())
    assert manifest["dropped"].get("cca/image:invalid_or_nonfinite", 0) == invalid
    assert manifest["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # where the flows ran
    assert np.isfinite(pd.read_parquet(ws.folder("scores") / "systems.parquet")["score:cca/image/flow"]).sum() == 120 - invalid
