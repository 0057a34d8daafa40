"""Reading the rankings contract: scores/systems.parquet and the comparison matrices."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmb_engine import rankings
from fmb_engine.rankings import RankingsError, parse_system
from fmb_tui.synthetic import write_comparisons, write_neighbours, write_rankings

SYSTEMS = ["astropt/image/flow", "astropt/fused/geo", "aion/cross/mismatch"]


def test_missing_ranking_says_what_to_run(workspace):
    with pytest.raises(RankingsError, match="fmb-engine detect all"):
        rankings.list_systems(workspace)
    with pytest.raises(RankingsError, match="fmb-engine detect all"):
        rankings.load_rankings(workspace)


def test_systems_columns_and_default(workspace):
    ids = [f"o{i}" for i in range(50)]
    write_rankings(workspace, ids, SYSTEMS)
    assert rankings.list_systems(workspace) == SYSTEMS
    assert rankings.default_system(SYSTEMS) == "astropt/fused/geo"
    assert rankings.default_system(SYSTEMS, "aion/cross/mismatch") == "aion/cross/mismatch"
    with pytest.raises(RankingsError, match="Did you mean 'aion/cross/mismatch'"):
        rankings.default_system(SYSTEMS, "aion/cross/mismatc")
    df = rankings.load_rankings(workspace)
    assert list(df.columns[:3]) == ["object_id", "rank:astropt/image/flow", "score:astropt/image/flow"]
    for s in SYSTEMS:
        r, sc = df[f"rank:{s}"].to_numpy(), df[f"score:{s}"].to_numpy()
        assert sorted(r) == list(range(1, 51))
        assert np.all(np.diff(sc[np.argsort(r)]) <= 0)  # rank 1 = highest score
    only = rankings.load_table(workspace, ["aion/cross/mismatch"])
    assert only.column_names == ["object_id", "rank:aion/cross/mismatch", "score:aion/cross/mismatch"]
    with pytest.raises(RankingsError, match="unknown system"):
        rankings.load_table(workspace, ["nope"])


def test_parse_system():
    s = parse_system("astroclip/spectrum/knn")
    assert (s.model, s.modality, s.method, s.fused) == ("astroclip", "spectrum", "knn", False)
    assert parse_system("aion/fused/min").fused
    assert s.rank_column == "rank:astroclip/spectrum/knn"


def test_system_names_round_trip_for_every_modality():
    for modality in rankings.MODALITIES:
        s = parse_system(rankings.system_name("aion", modality, "m"))
        assert (s.model, s.modality, s.method) == ("aion", modality, "m")
    with pytest.raises(ValueError, match="'spectra' is not one of"):
        rankings.system_name("aion", "spectra", "flow")


def test_malformed_ranking_files(workspace):
    path = rankings.systems_path(workspace)
    pq.write_table(pa.table({"object_id": ["a"], "rank:x": [1]}), path)
    with pytest.raises(RankingsError, match="do not pair up"):
        rankings.list_systems(workspace)
    pq.write_table(pa.table({"id": ["a"], "rank:x": [1], "score:x": [0.1]}), path)
    with pytest.raises(RankingsError, match="no object_id"):
        rankings.list_systems(workspace)
    path.write_text("not parquet")
    with pytest.raises(RankingsError, match="not a readable parquet"):
        rankings.list_systems(workspace)


def test_comparisons(workspace):
    with pytest.raises(RankingsError, match="no spearman matrix yet"):
        rankings.load_comparison(workspace, "spearman")
    write_comparisons(workspace, SYSTEMS)
    rho = rankings.load_comparison(workspace, "spearman")
    assert list(rho.index) == SYSTEMS == list(rho.columns)
    assert np.allclose(np.diag(rho.to_numpy()), 1.0)
    bad = rankings.comparison_path(workspace, "jaccard")
    pd.DataFrame([[1.0, 0.2]], index=["a"], columns=["a", "b"]).to_csv(bad)
    with pytest.raises(RankingsError, match="not a square matrix"):
        rankings.load_comparison(workspace, "jaccard")


def test_neighbours(workspace):
    ids = [f"o{i}" for i in range(20)]
    with pytest.raises(RankingsError, match="no similarity analysis yet"):
        rankings.load_neighbours(workspace, "o1")
    write_neighbours(workspace, ids, k=4)
    nb = rankings.load_neighbours(workspace, "o3")
    assert len(nb) == 8 and set(nb["model"]) == {"astropt", "aion"}
    assert "o3" not in set(nb["neighbour_id"])
    assert list(nb[nb.model == "aion"]["neighbour"]) == [1, 2, 3, 4]
