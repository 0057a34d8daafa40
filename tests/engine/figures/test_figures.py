"""Figures: one style, PNG + PDF, deterministic bytes, no LaTeX; every family draws from a small workspace."""

import hashlib

import matplotlib
import numpy as np
import pandas as pd

from fmb_engine.figures.style import STYLE_FILE, fmb_style, pyplot, save

SYSTEMS = ["cca/image/flow", "cca/joint/flow", "pca/joint/flow"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_style_has_no_latex_and_leaves_global_state(tmp_path):
    before = dict(matplotlib.rcParams)
    with fmb_style():
        assert matplotlib.rcParams["text.usetex"] is False
        assert matplotlib.rcParams["savefig.dpi"] == 200
    assert matplotlib.rcParams["font.family"] == before["font.family"]
    assert "usetex: False" in STYLE_FILE.read_text()


def test_save_is_deterministic_png_and_pdf(tmp_path):
    plt = pyplot()
    paths = []
    for name in ("a", "b"):
        with fmb_style():
            fig, ax = plt.subplots()
            ax.plot([0, 1], [1, 0])
            ax.set_title("top 1 % — Å, $\\alpha$")
            paths.append(save(fig, tmp_path / name))
    assert [p.suffix for p in paths[0]] == [".png", ".pdf"]
    assert _sha(paths[0][0]) == _sha(paths[1][0]) and _sha(paths[0][1]) == _sha(paths[1][1])


def test_top_ids_from_any_ranked_table():
    from fmb_engine.figures.objects import top_ids

    wide = pd.DataFrame({"object_id": ["a", "b", "c"], "rank:m/x/flow": pd.array([2, pd.NA, 1], dtype="Int64"),
                         "score:m/x/flow": [1.0, np.nan, 3.0]})
    assert top_ids(wide, 5).object_id.tolist() == ["c", "a"]
    long = pd.DataFrame({"object_id": ["a", "b"], "rank": [2, 1], "neg_log_prob": [0.1, 0.9]})
    t = top_ids(long, 1)
    assert t.object_id.tolist() == ["b"] and t.score.tolist() == [0.9]
    assert top_ids(pd.DataFrame({"object_id": ["z", "y"]}), 5).object_id.tolist() == ["z", "y"]


def test_cluster_order_groups_similar_systems():
    from fmb_engine.figures.heatmaps import cluster_order

    m = pd.DataFrame([[1, .9, .1, .1], [.9, 1, .1, .1], [.1, .1, 1, .8], [.1, .1, .8, 1]], index=list("abcd"), columns=list("abcd"))
    order = cluster_order(m.iloc[[0, 2, 1, 3], [0, 2, 1, 3]])
    names = [list("acbd")[i] for i in order]
    assert abs(names.index("a") - names.index("b")) == 1 and abs(names.index("c") - names.index("d")) == 1


def test_every_figure_family(analysed):
    from fmb_engine.analyze.run import analyze_neighbor_ranks, analyze_rankings, analyze_regression, analyze_similarity, analyze_umap
    from fmb_engine.config import load
    from fmb_engine.figures import run as fig

    ws, survey = analysed
    cfg = load("analyze", ws, cli={"systems": SYSTEMS, "models": ["cca"], "k": 3, "targets": ["logM"],
                                   "modalities": ["joint"], "bootstrap": 10, "gbm_iter": 5, "min_train": 20})
    analyze_rankings(ws, cfg)
    analyze_similarity(ws, cfg)
    analyze_neighbor_ranks(ws, cfg)
    analyze_regression(ws, cfg, survey)
    analyze_umap(ws, cfg, projector=lambda x, p: np.asarray(x[:, :2], np.float32))

    grid = fig.outlier_grid_figure(ws, survey, system="cca/joint/flow", top_k=3)
    files = grid.summary["files"]
    assert [p.suffix for p in files] == [".png", ".pdf"] and files[0].parent == ws.folder("figures") / "outliers"
    again = fig.outlier_grid_figure(ws, survey, system="cca/joint/flow", top_k=3)
    assert _sha(files[0]) == _sha(again.summary["files"][0])  # deterministic
    assert grid.manifest.is_file()
    oid = pd.read_parquet(ws.folder("scores") / "systems.parquet")["object_id"].iloc[0]
    by_id = fig.outlier_grid_figure(ws, survey, ids=[oid, oid], system="cca/joint/flow")
    assert by_id.summary["files"][0].name == "outliers_ids.png"
    produced = [
        fig.object_fig(ws, survey, oid, smooth=0),
        fig.heatmap_figures(ws),
        fig.displacement_figure(ws, SYSTEMS),
        fig.regression_figures(ws),
        fig.umap_figures(ws, survey, ["redshift"]),
        fig.similarity_figures(ws, survey, [oid]),
    ]
    for result in produced:
        for path in result.summary["files"]:
            assert path.is_file() and path.stat().st_size > 1000, path
    assert len(produced[1].summary["files"]) == 4 and len(produced[-1].summary["files"]) == 4
