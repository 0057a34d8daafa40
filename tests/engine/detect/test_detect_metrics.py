"""Evaluation against labels: AUROC/AP/precision@k/recall@k overall and per class; Markdown output."""

import numpy as np
import pytest

from fmb_engine.detect.metrics import evaluate_scores, to_markdown


def _value(df, subset, metric, k=None):
    rows = df[(df["subset"] == subset) & (df["metric"] == metric)]
    if k is not None:
        rows = rows[rows["k"] == k]
    assert len(rows) == 1
    return rows["value"].iloc[0]


def test_perfect_and_reversed_scores():
    labels = np.array(["", "", "", "lens", "agn", ""])
    perfect = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.0])
    df = evaluate_scores(labels, perfect, ks=(2,))
    assert _value(df, "all", "auroc") == 1.0
    assert _value(df, "all", "average_precision") == 1.0
    assert _value(df, "all", "precision@k", 2) == 1.0 and _value(df, "all", "recall@k", 2) == 1.0
    rev = evaluate_scores(labels, -perfect, ks=(2,))
    assert _value(rev, "all", "auroc") == 0.0
    assert _value(rev, "all", "precision@k", 2) == 0.0


def test_per_class_uses_normals_only_as_negatives():
    labels = ["", "a", "b", "", "a", ""]
    score = np.array([0.1, 0.5, 0.9, 0.6, 0.95, 0.0])
    df = evaluate_scores(labels, score, ks=(1, 2, 10))
    assert set(df["subset"]) == {"all", "a", "b"}
    # class a vs normals: scores a = {0.5, 0.95}, normals = {0.1, 0.6, 0.0}: pairs won 5 of 6
    assert _value(df, "a", "auroc") == pytest.approx(5 / 6)
    # class b (0.9) beats every normal even though class a has a higher score elsewhere
    assert _value(df, "b", "auroc") == 1.0
    # all: top-2 = [0.95 (a), 0.9 (b)] -> precision 1; top-1 holds 1 of the 3 positives
    assert _value(df, "all", "precision@k", 2) == 1.0
    assert _value(df, "all", "recall@k", 1) == pytest.approx(1 / 3)
    # k larger than the subset: precision over the subset size (4 objects in subset b: 1 positive)
    assert _value(df, "b", "precision@k", 10) == pytest.approx(1 / 4)
    row = df[(df["subset"] == "a") & (df["metric"] == "auroc")].iloc[0]
    assert (row["n_positive"], row["n_negative"]) == (2, 3)
    assert list(df.columns) == ["subset", "metric", "k", "value", "n_positive", "n_negative"]


def test_ties_at_the_cutoff_count_their_expected_share_not_object_order():
    df = evaluate_scores(["", "x", ""], np.array([1.0, 1.0, 0.0]), ks=(1,))
    assert _value(df, "all", "precision@k", 1) == 0.5  # one place for a tie of a normal and a positive
    swapped = evaluate_scores(["x", "", ""], np.array([1.0, 1.0, 0.0]), ks=(1,))
    assert _value(swapped, "all", "precision@k", 1) == 0.5


def test_no_positives_gives_nan_not_an_error():
    df = evaluate_scores(["", "", ""], np.array([0.1, 0.2, 0.3]), ks=(1,))
    assert np.isnan(_value(df, "all", "auroc")) and np.isnan(_value(df, "all", "recall@k", 1))


def test_input_validation():
    with pytest.raises(ValueError, match="labels"):
        evaluate_scores(["", "a"], np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(["", "a"], np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="k must"):
        evaluate_scores(["", "a"], np.array([1.0, 2.0]), ks=(0,))


def test_to_markdown_renders_a_pipe_table():
    df = evaluate_scores(["", "a|b", ""], np.array([0.0, 2.0, 1.0]), ks=(1,))
    md = to_markdown(df, floatfmt=".2f")
    lines = md.strip().splitlines()
    assert lines[0].startswith("| subset") and set(lines[1]) <= set("|-: ")
    assert len(lines) == 2 + len(df)
    assert "a\\|b" in md  # pipe escaped inside a cell
    assert all(line.count("|") == lines[0].count("|") for line in lines if "a\\|b" not in line)
    auroc_line = next(line for line in lines if "| all" in line and "auroc" in line)
    assert "1.00" in auroc_line and auroc_line.split("|")[3].strip() == ""  # k empty for AUROC
