"""Approximate k-NN: recall against exact search, the report, determinism, the backend choice
(threshold, explicit approx/exact, no faiss) and the similarity door's manifest."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

from fmb_engine.analyze.ann import ApproxSettings, approx_knn, recall_at_k
from fmb_engine.analyze.similarity import choose_backend, knn, normalise
from fmb_engine.config import load
from fmb_engine.errors import ConfigError
from fmb_engine.workspace import Workspace

pytest.importorskip("faiss")  # the ann extra; .ci/run installs it (the no-faiss paths are simulated below)


def clustered(n: int = 20_000, d: int = 64, clusters: int = 200, seed: int = 0) -> np.ndarray:
    """Points around random centres plus a shared low-rank spread (embedding-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    basis = rng.standard_normal((8, d), dtype=np.float32) / np.sqrt(8)
    spread = rng.standard_normal((n, 8), dtype=np.float32) @ basis
    return centres[rng.integers(clusters, size=n)] + spread + 0.3 * rng.standard_normal((n, d), dtype=np.float32)


@pytest.fixture(scope="module")
def searched():
    x = clustered()
    rows = np.arange(len(x))
    return x, approx_knn(x, x, 10, self_rows=rows, settings=ApproxSettings(seed=7))


def test_recall_at_10_against_exact_search(searched):
    x, (idx, sims, report) = searched
    sample = np.random.default_rng(3).choice(len(x), 2000, replace=False)  # not the run's own check sample
    exact, _ = knn(x, x[sample], 10, self_rows=sample, backend="torch", symmetric=False)
    assert recall_at_k(idx[sample], exact) >= 0.95
    assert not (idx == np.arange(len(x))[:, None]).any()  # the query itself is never a neighbour
    # similarities are the exact float32 cosines of the neighbours found, best first
    xn = normalise(x)
    assert np.allclose(sims, np.einsum("qd,qkd->qk", xn, xn[idx]), atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_report_records_index_timings_and_measured_recall(searched):
    x, (_, _, report) = searched
    assert report["backend"] == "approx" and report["objects"] == report["queries"] == len(x)
    assert report["nlist"] == round(np.sqrt(len(x))) and 1 <= report["nprobe"] <= report["nlist"]
    assert report["train_rows"] == 64 * report["nlist"]
    assert report["recall_queries"] == 1000 and report["recall_at_10"] >= report["min_recall"] == 0.95
    steps = report["tuning"]["steps"]
    assert report["tuning"]["separate_from_check"] and steps[-1]["nprobe"] == report["nprobe"]
    assert steps[-1]["recall"] >= 0.95 and all(s["recall"] < 0.95 for s in steps[:-1])
    for key in ("build_s", "train_s", "search_s", "exact_sample_s"):
        assert report[key] >= 0


def test_same_seed_same_neighbours(searched):
    x, (idx, sims, report) = searched
    again_i, again_s, again = approx_knn(x, x, 10, self_rows=np.arange(len(x)), settings=ApproxSettings(seed=7))
    assert np.array_equal(idx, again_i) and np.array_equal(sims, again_s)
    assert again["recall_at_10"] == report["recall_at_10"]


def test_fixed_nprobe_and_padding_of_small_tables():
    x = clustered(n=300, d=16, clusters=10, seed=2)
    idx, sims, report = approx_knn(x, x[:5], 4, self_rows=np.arange(5), settings=ApproxSettings(nlist=4, nprobe=4))
    assert report["nprobe"] == 4 and "tuning" not in report and report["recall_at_4"] == 1.0  # all cells = exact
    exact, _ = knn(x, x[:5], 4, self_rows=np.arange(5), backend="torch", symmetric=False)
    assert np.array_equal(idx, exact)


def test_backend_choice_threshold_and_explicit_values():
    assert choose_backend("auto", 1000, 1000, 5000) == ("faiss", None)  # exact below the threshold
    assert choose_backend("auto", 5000, 5000, 5000) == ("approx", None)
    assert choose_backend("auto", 10**6, 3, 5000) == ("faiss", None)  # a few queries: exact is cheaper
    assert choose_backend("exact", 10**6, 10**6, 5000) == ("faiss", None)
    assert choose_backend("approx", 10, 10, 5000) == ("approx", None)
    assert choose_backend("torch", 10**6, 10**6, 5000) == ("torch", None)


def hide_faiss(monkeypatch):
    """find_spec("faiss") answers None, as on a machine without the ann extra."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))


@pytest.fixture
def no_faiss(monkeypatch):
    hide_faiss(monkeypatch)


def test_without_faiss_auto_falls_back_and_approx_says_how_to_install(no_faiss):
    engine, note = choose_backend("auto", 5000, 5000, 5000)
    assert engine == "torch" and "faiss-cpu is not installed" in note and "pip install" in note
    assert choose_backend("exact", 5000, 5000, 5000) == ("torch", None)
    for backend in ("approx", "faiss"):
        with pytest.raises(ConfigError, match=r"faiss-cpu.*pip install 'fmb\[ann\]'"):
            choose_backend(backend, 10, 10, 5000)


@pytest.fixture
def ws(analysed, tmp_path):
    src, _ = analysed
    shutil.copytree(src.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def _knn_record(result):
    return json.loads(result.manifest.read_text())


def test_similarity_door_records_the_approximate_search(ws):
    from fmb_engine.analyze.run import analyze_similarity

    cfg = load("analyze", ws, cli={"k": 4, "models": ["cca"], "modalities": ["image"], "approx_threshold": 2})
    result = analyze_similarity(ws, cfg)
    manifest = _knn_record(result)
    search = manifest["knn"]["cca/image"]
    assert manifest["counts"]["backend"] == "approx" and search["backend"] == "approx"
    assert {"nlist", "nprobe", "train_rows", "build_s", "search_s", "recall_at_4", "recall_queries"} <= set(search)
    assert search["recall_queries"] == search["objects"] == search["queries"]  # small table: every query checked
    table = result.summary["neighbours"]
    assert (table["object_id"] != table["neighbour_id"]).all() and set(table["neighbour"]) == {1, 2, 3, 4}
    # below the threshold (the default) the search stays exact, with no recall to report
    exact = _knn_record(analyze_similarity(ws, load("analyze", ws, cli={"k": 4, "models": ["cca"], "modalities": ["image"]})))
    assert exact["knn"]["cca/image"]["backend"] in ("faiss", "torch") and "recall_at_4" not in exact["knn"]["cca/image"]


def test_similarity_door_warns_on_low_recall_and_on_the_fallback(ws, monkeypatch):
    from fmb_engine.analyze.run import analyze_similarity

    cli = {"k": 4, "models": ["cca"], "modalities": ["image"], "approx_threshold": 2, "approx_nlist": 16,
           "approx_nprobe": 1, "approx_min_recall": 1.0}
    low = _knn_record(analyze_similarity(ws, load("analyze", ws, cli=cli)))
    assert low["knn"]["cca/image"]["recall_at_4"] < 1.0
    assert any("approximate recall@4" in w for w in low["warnings"])
    hide_faiss(monkeypatch)
    fell = _knn_record(analyze_similarity(ws, load("analyze", ws, cli={**cli, "approx_min_recall": 0.95})))
    assert fell["knn"]["cca/image"]["backend"] == "torch" and "faiss-cpu is not installed" in fell["knn"]["cca/image"]["fallback"]
    assert any("faiss-cpu is not installed" in w for w in fell["warnings"])
