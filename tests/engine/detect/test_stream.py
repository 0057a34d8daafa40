"""Detection in bounded memory: the seeded fit sample, chunked reads, and ranks that do not depend on the chunk size."""


import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fmb_engine.config import load
from fmb_engine.detect.baselines import IsolationForestDetector, KNNDistanceDetector
from fmb_engine.detect.flows import FlowDensity
from fmb_engine.detect.mismatch import LearnedMismatch
from fmb_engine.detect.preprocess import Preprocessor
from fmb_engine.detect.run import detect
from fmb_engine.detect.preprocess import finite_rows
from fmb_engine.detect.stream import fit_sample, gather, row_chunks, sample_keys, usable_sample
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.detect.tables import rank_descending
from fmb_engine.workspace import Workspace
from tests.engine.detect.manifests import detect_manifests

FAST = {"epochs": 2, "iforest_trees": 30, "n_jobs": 1, "top_k": 20}
DIMS = {"image": 24, "spectrum": 24, "joint": 40}
OBJECTS = 900


def _workspace(root, aligned: bool = False) -> Workspace:
    """A workspace holding one synthetic run; ``aligned`` marks it as a shared space (cosine mismatch)."""
    ws = Workspace.init(root)
    path = write_synthetic(ws, SyntheticSpec(OBJECTS, DIMS, seed=3, outlier_fraction=0.03)).outputs["embeddings"]
    if aligned:
        with h5py.File(path, "r+") as f:
            f.attrs["aligned"] = True
    return ws


def _systems(ws: Workspace, **cfg) -> pd.DataFrame:
    detect(ws, load("detect", ws, cli=FAST | cfg))
    return pd.read_parquet(ws.folder("scores") / "systems.parquet").set_index("object_id").sort_index()


def _manifest(ws: Workspace) -> dict:
    return detect_manifests(ws)[-1]


def test_fit_sample_is_every_usable_row_up_to_the_cap_then_the_smallest_keys():
    keep = np.ones(50, bool)
    keep[[3, 17]] = False
    keys = sample_keys(50, seed=5)
    assert np.array_equal(fit_sample(keep, keys, 48), np.flatnonzero(keep))
    small = fit_sample(keep, keys, 10)
    assert small.shape == (10,) and np.all(np.diff(small) > 0) and keep[small].all()
    assert set(small) < set(fit_sample(keep, keys, 20))  # samples are nested: the same objects stay in
    assert np.array_equal(small, fit_sample(keep, sample_keys(50, seed=5), 10))
    assert not np.array_equal(small, fit_sample(keep, sample_keys(50, seed=6), 10))


def test_row_ranges_and_gather_read_what_a_whole_load_holds(tmp_path):
    ws = _workspace(tmp_path / "ws")
    with EmbeddingReader(ws.folder("embeddings") / "synthetic.h5") as reader:
        whole = reader.load("joint")
        rows = np.sort(np.random.default_rng(0).choice(OBJECTS, 77, replace=False))
        for chunk in (1, 64, 10_000):
            assert np.array_equal(gather(reader, "joint", rows, chunk), whole[rows])
        assert np.array_equal(reader.read("image", 890, 2000), reader.load("image")[890:])
    assert list(row_chunks(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="chunk_rows"):
        list(row_chunks(10, 0))


def _two_passes(reader, modality, keys, max_objects, chunk_rows):
    """The reference of usable_sample: the usable mask in one pass, then the sample's gather in another."""
    keep = np.asarray(reader.valid(modality), dtype=bool).copy()
    for start, stop in row_chunks(keep.shape[0], chunk_rows):
        keep[start:stop] &= finite_rows(reader.read(modality, start, stop))
    rows = fit_sample(keep, keys, max_objects)
    return keep, rows, gather(reader, modality, rows, chunk_rows)


def test_one_pass_usable_rows_and_sample_equal_the_two_passes(tmp_path):
    ws = _workspace(tmp_path / "ws")
    path = ws.folder("embeddings") / "synthetic.h5"
    with h5py.File(path, "r+") as f:  # some invalid (imputed) rows and some non-finite ones
        f["valid/image"][[1, 2, 300]] = False
        vectors = f["vectors/image"]
        for row in (0, 5, 6, 400, 899):
            vectors[row, row % 24] = np.nan if row % 2 else np.inf
    keys = sample_keys(OBJECTS, seed=11)
    keys[[10, 20, 30]] = keys[40]  # tied keys are broken by row, as fit_sample does
    with EmbeddingReader(path) as reader:
        assert not reader.valid("image").all()
        for cap in (3, 100, 500, OBJECTS - 50, OBJECTS, 10 * OBJECTS):
            for chunk in (1, 7, 64, 333, 10_000):
                keep, rows, x = usable_sample(reader, "image", keys, cap, chunk)
                ref_keep, ref_rows, ref_x = _two_passes(reader, "image", keys, cap, chunk)
                assert np.array_equal(keep, ref_keep) and np.array_equal(rows, ref_rows), (cap, chunk)
                assert np.array_equal(x, ref_x) and x.dtype == np.float32
        assert not keep[[0, 1, 2, 5, 6, 300, 400, 899]].any() and keep.sum() == OBJECTS - 8


def test_below_the_cap_detect_scores_exactly_as_whole_array_fits(tmp_path):
    """fit_max_objects >= N: the models are those of the whole-array algorithm (detect before streaming)."""
    ws = _workspace(tmp_path / "ws")
    systems = _systems(ws, chunk_rows=100)
    cfg = load("detect", ws, cli=FAST).values
    pre_kw, flow_kw = cfg.flow_params()
    with EmbeddingReader(ws.folder("embeddings") / "synthetic.h5") as reader:
        ids = np.asarray(reader.object_ids, dtype=object)
        x, img, spec = reader.load("image"), reader.load("image"), reader.load("spectrum")
    order = np.argsort(ids)
    z = Preprocessor(**pre_kw).fit(x).transform(x)  # the flow and the baselines see the preprocessed rows
    expected = {
        "image/flow": -FlowDensity(**flow_kw).fit(z).score_samples(z),
        "image/iforest": IsolationForestDetector(seed=cfg.seed, n_estimators=cfg.iforest_trees).fit(z).score_samples(z),
        "image/knn": KNNDistanceDetector(k=cfg.knn_k).fit(z).score_samples(),
        "cross/mismatch": LearnedMismatch(alpha=cfg.mismatch_alpha, seed=cfg.seed).fit_score(img, spec),
    }
    for system, score in expected.items():
        got = systems[f"rank:synthetic/{system}"].to_numpy(dtype=np.int64)
        assert np.array_equal(got, rank_descending(score)[order]), system
    assert _manifest(ws)["counts"]["fit_rows:synthetic"] == {m: OBJECTS for m in DIMS}


@pytest.mark.parametrize("aligned", [False, True], ids=["ridge", "cosine"])
def test_same_seed_same_ranks_whatever_the_chunk_size(tmp_path, aligned):
    """Above the cap the models fit on a 200-row sample and score the rest in chunks of any size."""
    small = _systems(_workspace(tmp_path / "a", aligned), fit_max_objects=200, chunk_rows=37)
    ws = _workspace(tmp_path / "b", aligned)
    large = _systems(ws, fit_max_objects=200, chunk_rows=5000)
    ranks = [c for c in small.columns if c.startswith("rank:")]
    assert len(ranks) == 14 and small.index.equals(large.index)
    for column in ranks:
        assert small[column].equals(large[column]), column
    assert _manifest(ws)["counts"]["fit_rows:synthetic"] == {m: 200 for m in DIMS}
    flow = np.load(ws.folder("scores") / "models" / "synthetic" / "flow_joint.npz")
    assert int(flow["flow.fit.n_rows_fit"]) == 200 and int(flow["pre.n_rows_fit"]) == 200
    assert small["rank:synthetic/image/flow"].notna().all()  # every object is scored, not only the sample


def test_a_sampled_fit_finds_the_injected_outliers_about_as_well_as_a_full_fit(tmp_path):
    aurocs = {}
    for cap in (300, OBJECTS):
        ws = _workspace(tmp_path / str(cap))
        systems = _systems(ws, fit_max_objects=cap)
        with EmbeddingReader(ws.folder("embeddings") / "synthetic.h5") as reader:
            outlier = pd.Series(reader.columns()["is_anomaly"], index=reader.object_ids).sort_index().to_numpy()
        aurocs[cap] = {s: roc_auc_score(outlier, systems[f"score:synthetic/{s}"].to_numpy())
                       for s in ("joint/knn", "cross/mismatch")}
    for system, full in aurocs[OBJECTS].items():
        assert aurocs[300][system] > 0.85 and abs(aurocs[300][system] - full) < 0.03, (system, aurocs)


def test_out_of_fold_with_a_sample_scores_every_object_whatever_the_chunk_size(tmp_path):
    """Sample rows by the fold flows that never saw them, the other rows by the flow fitted on the whole sample."""
    cfg = {"fit_max_objects": 200, "out_of_fold": 2, "baselines": False}
    small = _systems(_workspace(tmp_path / "a"), chunk_rows=37, **cfg)
    large = _systems(_workspace(tmp_path / "b"), chunk_rows=5000, **cfg)
    for modality in DIMS:
        column = f"rank:synthetic/{modality}/flow"
        assert small[column].notna().all() and small[column].equals(large[column]), column


def test_the_baselines_score_the_rows_as_the_flow_sees_them(tmp_path):
    """The k-NN distance and the IsolationForest of a row are those of its preprocessed vector
    against the preprocessed fit sample (the saved preprocessing), computed here by hand."""
    ws = _workspace(tmp_path / "ws")
    systems = _systems(ws, fit_max_objects=300, chunk_rows=128)
    cfg = load("detect", ws, cli=FAST).values
    with np.load(ws.folder("scores") / "models" / "synthetic" / "flow_image.npz") as saved:
        pre = Preprocessor.from_state_dict({k[4:]: saved[k] for k in saved.files if k.startswith("pre.")})
    with EmbeddingReader(ws.folder("embeddings") / "synthetic.h5") as reader:
        ids = np.asarray(reader.object_ids, dtype=object)
        keep, sample, x = usable_sample(reader, "image", sample_keys(reader.n_objects, cfg.seed), 300, 128)
        whole = reader.load("image")
    z = pre.transform(x)
    outside = np.setdiff1d(np.flatnonzero(keep), sample)[:20]

    def by_hand(q, leave_out=None):
        d = np.sqrt(((z.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1))
        return np.sort(np.delete(d, [] if leave_out is None else [leave_out]))[: cfg.knn_k].mean()

    knn = systems["score:synthetic/image/knn"]
    for i in (0, 7, 299):  # sample rows: without themselves
        assert knn[ids[sample[i]]] == pytest.approx(by_hand(z[i], leave_out=i), rel=1e-4)
    for row, q in zip(outside, pre.apply(whole[outside]), strict=True):  # other rows: through the scoring map
        assert knn[ids[row]] == pytest.approx(by_hand(q), rel=1e-4)
    forest = IsolationForestDetector(seed=cfg.seed, n_estimators=cfg.iforest_trees).fit(z)
    np.testing.assert_allclose(systems.loc[ids[outside], "score:synthetic/image/iforest"],
                               forest.score_samples(pre.apply(whole[outside])), rtol=1e-12)


def test_the_flow_and_the_baselines_share_one_preprocessing_per_chunk(tmp_path, monkeypatch):
    calls = []
    apply = Preprocessor.apply
    monkeypatch.setattr(Preprocessor, "apply", lambda self, X: calls.append(X.shape[0]) or apply(self, X))
    ws = _workspace(tmp_path / "ws")
    _systems(ws, fit_max_objects=300, chunk_rows=128)
    with_baselines = list(calls)
    calls.clear()
    _systems(ws, fit_max_objects=300, chunk_rows=128, baselines=False)
    assert with_baselines == calls and sum(calls) == len(DIMS) * (OBJECTS - 300)  # each other row once per modality
