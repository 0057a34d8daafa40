"""write_csv writes the bytes of DataFrame.to_csv: on real detect tables, hostile values and every fallback."""

import shutil

import numpy as np
import pandas as pd
import pytest

from bench.csv_tables import random_doubles
from fmb_engine import csv_tables
from fmb_engine.csv_tables import write_csv

#: Values at and around every edge of the float rule (module docstring), positive and negative.
HOSTILE = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, 5e-324, -5e-324, 2.2250738585072014e-308,
                    1.7976931348623157e308, -1.7976931348623157e308, 1e300, 1e-5, 1e-4, 9.999999999999999e-05,
                    0.00010000000000000002, 1e16, 9999999999999998.0, 1e15, 1e13 + 0.5, 123456789012.0, 3.0, -3.0,
                    100.0, 0.1, 0.30000000000000004, 1 / 3, 2.0 ** 53, 2.0 ** 60, -130.72589111328125,
                    0.050640815900000004, 1e22, 1.5e-7])


def _random_floats(n: int, seed: int) -> np.ndarray:
    """``n`` doubles of each kind the bench's fuzz draws (bit patterns, float32 values, p-values, integers...)."""
    return np.concatenate(list(random_doubles(n, seed).values()))


def _table(values: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """A per-object table like scores/baseline_scores_<model>.csv with ``values`` in its float columns."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    return pd.DataFrame({
        "object_id": [f"syn-{i:09d}" for i in range(n)],
        "embedding_key": np.array(["embedding_images", "embedding_spectra"], dtype=object)[np.arange(n) % 2],
        "log_prob": values, "neg_log_prob": -values, "anomaly_sigma": rng.permutation(values),
        "rank": rng.permutation(n).astype(np.int64) + 1, "passes": rng.random(n) < 0.5,
        "method": "iforest"})


def _same_bytes(df: pd.DataFrame, tmp_path, index: bool = False) -> bool:
    """Whether write_csv writes exactly what ``to_csv`` writes for ``df`` (the fast path or not)."""
    df.to_csv(tmp_path / "pandas.csv", index=index)
    write_csv(df, tmp_path / "fast.csv", index=index)
    return (tmp_path / "pandas.csv").read_bytes() == (tmp_path / "fast.csv").read_bytes()


def test_arrow_float_text_agrees_here():
    """This pyarrow formats as the rule expects, so the float fast path is what the other tests check."""
    assert csv_tables._arrow_floats_agree()


def test_hostile_floats(tmp_path):
    df = _table(np.concatenate([HOSTILE, -HOSTILE]))
    assert csv_tables._columns(df) is not None
    assert _same_bytes(df, tmp_path)


def test_random_floats_over_several_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_tables, "CHUNK_ROWS", 40_000)
    df = _table(_random_floats(10_000, seed=1), seed=1)
    assert csv_tables._columns(df) is not None
    assert _same_bytes(df, tmp_path)


def test_many_values_formatted_by_numpy():
    """A column of values only numpy formats (pyarrow converts that much numpy text to several chunks)."""
    values = np.random.default_rng(3).random(1_000_000) * 1e-5
    assert csv_tables.format_floats(values).to_pylist() == csv_tables._numpy_text(values).tolist()


def test_numpy_floats_when_arrow_formats_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_tables, "_arrow_floats_agree", lambda: False)
    assert _same_bytes(_table(np.concatenate([HOSTILE, _random_floats(500, seed=2)])), tmp_path)


@pytest.mark.parametrize("ids, fast", [
    (["a,b", "c"], False), (['say "hi"', "c"], False), (["line\nbreak", "c"], False), (["cr\rid", "c"], False),
    (["é", "天体-42"], True), (["🔭 7", " lead and trail "], True), (["", "x"], True)])
def test_object_ids(tmp_path, ids, fast):
    """Ids csv.writer would quote go to pandas; unicode and empty ids take the fast path."""
    df = pd.DataFrame({"object_id": ids, "score": [0.5, np.nan]})
    assert (csv_tables._columns(df) is not None) is fast
    assert _same_bytes(df, tmp_path)
    assert _same_bytes(df.astype({"object_id": object}), tmp_path)


@pytest.mark.parametrize("storage", ["python", "pyarrow"])
def test_missing_strings(tmp_path, storage):
    df = pd.DataFrame({"object_id": ["a", None, "c"], "method": pd.array(["x", pd.NA, "z"], dtype=pd.StringDtype(storage)),
                       "score": [1.0, 2.0, 3.0]})
    assert csv_tables._columns(df) is not None
    assert _same_bytes(df, tmp_path)
    assert _same_bytes(df.astype({"object_id": object}), tmp_path)


@pytest.mark.parametrize("df", [
    pd.DataFrame(columns=["object_id", "cosine_similarity", "mismatch_score", "method", "rank"]),
    pd.DataFrame({"object_id": ["a", "b"]}),
    pd.DataFrame({"object_id": ["a", "b"], "n": pd.array([1, None], dtype="Int64")}),
    pd.DataFrame({"object_id": ["a", "b"], "x": np.array([0.1, 1e-5], dtype=np.float32)}),
    pd.DataFrame({"object_id": ["a", "b"], "c": pd.Categorical(["u", "v"])}),
    pd.DataFrame({"object_id": ["a", "b"], "mixed": [1, "one"]}),
    pd.DataFrame({0: ["a", "b"], 1: [0.5, 1.5]}),
    pd.DataFrame({"object,id": ["a", "b"], "x": [0.5, 1.5]}),
], ids=["empty", "one-column", "nullable-int", "float32", "categorical", "mixed-object", "int-names", "quoted-name"])
def test_tables_left_to_pandas(tmp_path, df):
    assert _same_bytes(df, tmp_path)


def test_index_goes_to_pandas(tmp_path):
    df = pd.DataFrame({"a": [0.1, 0.2], "b": [1e-5, 3.0]}, index=["x", "y"])
    assert _same_bytes(df, tmp_path, index=True)


def test_atomic(tmp_path, monkeypatch):
    path = tmp_path / "scores.csv"
    path.write_text("old\n")

    def fail(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(csv_tables, "_write_rows", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_csv(_table(HOSTILE), path)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_detect_tables_are_pandas_bytes(tmp_path, small_survey, monkeypatch):
    """Every table a real detect run writes (cosine and ridge mismatch, fusion) is what to_csv writes."""
    from fmb_engine.config import load
    from fmb_engine.detect import run
    from fmb_engine.embed.run import embed_survey
    from fmb_engine.workspace import Workspace

    written = []

    def checked(df, path, index=False):
        out = write_csv(df, path, index)
        written.append((path.name, csv_tables._columns(df) is not None, out.read_bytes() == df.to_csv(index=index).encode()))
        return out

    monkeypatch.setattr(run, "write_csv", checked)
    ws = Workspace.init(tmp_path / "ws")
    survey = ws.folder("survey") / "mock.h5"
    shutil.copy(small_survey, survey)
    for model in ("cca", "pca"):
        embed_survey(ws, survey, model, load(f"embed.{model}", ws))
    run.detect(ws, load("detect", ws, cli={"epochs": 2, "iforest_trees": 50}))
    assert len(written) == 2 * 5 + 1
    assert all(same for _, _, same in written), written
    assert all(fast for _, fast, _ in written), written  # every score table takes the fast path
