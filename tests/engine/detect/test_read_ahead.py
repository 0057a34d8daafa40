"""The scoring loop's read-ahead thread and kept heap: the same chunks in order, errors naming the file, no leaked thread."""

import resource
import threading

import h5py
import numpy as np
import pytest

from fmb_engine.detect.stream import Scorers, compact_rows, masked_chunks, row_chunks, streamed_scores
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.embed.synthetic import SyntheticSpec
from fmb_engine.embed.synthetic_file import write_synthetic
from fmb_engine.errors import DataError
from fmb_engine.heap import _glibc, retained_heap
from fmb_engine.workspace import Workspace

OBJECTS = 700
DIMS = {"image": 12, "spectrum": 12, "joint": 20}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    ws = Workspace.init(tmp_path_factory.mktemp("read_ahead"))
    return write_synthetic(ws, SyntheticSpec(OBJECTS, DIMS, seed=2)).outputs["embeddings"]


def _readers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fmb-read-")}


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    sparse = np.zeros(OBJECTS, bool)
    sparse[[5, 6, 400]] = True  # most chunks hold no masked row and are skipped
    holes = rng.random(OBJECTS) > 0.1
    holes[:100] = True  # a whole chunk is read straight into its buffer, no compaction
    return {"every row": np.ones(OBJECTS, bool), "holes": holes, "sparse": sparse, "none": np.zeros(OBJECTS, bool)}


def test_compact_rows_equals_boolean_indexing():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    alternate = np.arange(10) % 2 == 0
    edges = np.zeros(10, bool)
    edges[[0, 9]] = True
    for todo in (np.ones(10, bool), np.zeros(10, bool), alternate, ~alternate, edges, ~edges):
        out = np.full((int(todo.sum()), 3), np.nan, np.float32)
        assert compact_rows(x, todo, out) is out
        assert np.array_equal(out, x[todo])


@pytest.mark.parametrize("chunk_rows", [1, 100, 128, 10_000])
def test_read_ahead_yields_each_chunks_masked_rows_in_order(path, chunk_rows):
    modalities = ("image", "joint")
    with EmbeddingReader(path) as reader:
        whole = {m: reader.load(m) for m in modalities}
        for name, mask in _masks().items():
            expected = [(start, stop) for start, stop in row_chunks(OBJECTS, chunk_rows) if mask[start:stop].any()]
            got = []
            for start, stop, xs in masked_chunks(reader, modalities, mask, chunk_rows):
                todo = mask[start:stop]
                for m, x in zip(modalities, xs):
                    assert x.dtype == np.float32 and x.flags.c_contiguous, name
                    assert np.array_equal(x, whole[m][start:stop][todo]), (name, m, start)
                got.append((start, stop))
            assert got == expected, name
    assert not _readers()


def test_streamed_scores_put_each_rows_score_at_its_place(path):
    mask = _masks()["holes"]
    with EmbeddingReader(path) as reader:
        x = reader.load("image")
        spec = reader.load("spectrum")
        out = streamed_scores(reader, ("image", "spectrum"), mask,
                              Scorers({"sum": lambda a, b: a.sum(1) - b.sum(1), "first": lambda a, b: a[:, 0]}), 64)
    assert np.array_equal(out["sum"], (x.sum(1) - spec.sum(1))[mask])
    assert np.array_equal(out["first"], x[mask, 0].astype(np.float64))


def test_a_read_error_in_the_thread_is_raised_with_the_file_name_and_rows(path, monkeypatch):
    real = h5py.Dataset.read_direct

    def broken(self, dest, source_sel=None, dest_sel=None):
        if isinstance(source_sel, slice) and source_sel.start == 200:
            raise OSError("Can't synchronously read data (wrong B-tree signature)")
        return real(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", broken)
    seen = []
    with EmbeddingReader(path) as reader:
        with pytest.raises(DataError, match=r"synthetic\.h5: reading rows 200:300 of 'image' failed \(Can't synchronously"):
            for start, _, _ in masked_chunks(reader, ("image",), np.ones(OBJECTS, bool), 100):
                seen.append(start)
    assert seen == [0, 100]  # the chunks before the damaged one came through, in order
    assert not _readers()


def test_stopping_early_or_failing_in_the_loop_joins_the_thread(path):
    mask = np.ones(OBJECTS, bool)
    with EmbeddingReader(path) as reader:
        for _ in masked_chunks(reader, ("image",), mask, 10):
            break
        assert not _readers()
        calls = []

        def fails_third(x):
            calls.append(x.shape[0])
            if len(calls) == 3:
                raise ZeroDivisionError("scorer failed")
            return x[:, 0]

        with pytest.raises(ZeroDivisionError, match="scorer failed"):
            streamed_scores(reader, ("image",), mask, Scorers({"bad": fails_third}), 10)
        assert not _readers()
        chunks = masked_chunks(reader, ("image",), mask, 10)
        next(chunks)
        chunks.close()  # a generator dropped half-way (GeneratorExit)
        assert not _readers()


def test_read_into_fills_the_given_buffer_and_checks_it(path):
    with EmbeddingReader(path) as reader:
        buf = np.empty((50, DIMS["joint"]), np.float32)
        assert reader.read_into("joint", 600, buf) is buf
        assert np.array_equal(buf, reader.read("joint", 600, 650))
        assert reader.read("joint", OBJECTS + 5, OBJECTS + 9).shape == (0, DIMS["joint"])
        with pytest.raises(ValueError, match="C-contiguous float32 array of 20 columns"):
            reader.read_into("joint", 0, np.empty((5, DIMS["joint"]), np.float64))
        with pytest.raises(ValueError, match="rows 680:730 outside the 700 rows of 'joint'"):
            reader.read_into("joint", 680, buf)
        with pytest.raises(DataError, match="no modality 'radio'"):
            reader.read_into("radio", 0, buf)


@pytest.mark.skipif(_glibc() is None, reason="retained_heap only acts on glibc")
def test_retained_heap_reuses_freed_blocks_instead_of_faulting_them_in_again():
    def faults_of_a_loop() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            np.ones(4 * 1024**2 // 8)  # 4 MB: above glibc's mmap threshold, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with retained_heap() as kept:
        with retained_heap():  # nested: the outer block's settings stay
            pass
        faults_of_a_loop()  # the first block grows the heap
        kept_faults = faults_of_a_loop()
    assert kept
    assert kept_faults < 1024 // 4  # under a quarter of one block's 1,024 pages, for twenty blocks
    # (afterwards the blocks may or may not fault again: that depends on where the heap's free space lies)


@pytest.mark.parametrize("threads", [1, None])
def test_the_flow_scorer_gives_the_bits_of_map_then_flow_whatever_the_blas_threads(threads):
    from fmb_engine.detect.flows import FlowDensity
    from fmb_engine.detect.preprocess import Preprocessor
    from fmb_engine.detect.run import _scorers

    x = np.random.default_rng(0).standard_normal((3000, 96)).astype(np.float32)
    pre = Preprocessor(pca_components=12).fit(x[:1000])
    flow = FlowDensity(epochs=1, batch_size=256, device="cpu", threads=threads).fit(pre.transform(x[:1000]))
    assert np.array_equal(_scorers(pre, flow, {})(x)["flow"], -flow.score_samples(pre.apply(x)))
