"""Reading one embedding file in bounded memory: usable rows, the seeded fit sample, row chunks.

Why: a million objects x {768, 768, 1536} float32 is 12 GB, more than a node should hold
for detection. Every model of the detect stage is therefore *fitted* on a sample of at most
``detect.fit_max_objects`` usable rows and *applied* to the file ``detect.chunk_rows`` rows
at a time (docs/science.md, "Detection at scale"). Only per-object vectors (masks, scores)
and the sample live in memory.

The sample is reproducible and independent of the chunk size: every object gets a key from
``numpy.random.default_rng(seed)`` (one uniform number per row of the file, drawn once), and a
modality's sample is its usable rows with the smallest keys. Modalities thus share most of their
sample, and a run with at most ``fit_max_objects`` usable rows uses all of them (the sample is
then the whole data, exactly as before sampling existed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fmb_engine.detect.preprocess import finite_rows
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.heap import retained_heap


def row_chunks(n: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of at most ``chunk_rows`` rows covering ``0..n``."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n, chunk_rows):
        yield start, min(start + chunk_rows, n)


def usable_sample(reader: EmbeddingReader, modality: str, keys: np.ndarray, max_objects: int,
                  chunk_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(usable mask, fit-sample rows, their vectors)`` of ``modality`` in one pass over the file.

    The result is that of :func:`fit_sample` on the usable mask, then :func:`gather` of those rows
    (rows valid, not imputed, and finite; the sample is the ``max_objects`` usable rows with the
    smallest ``(key, row)``), without reading the file twice. While the chunks go by, a buffer of
    ``max_objects + chunk_rows`` vectors holds the best candidates so far: a chunk's usable rows
    that beat the worst kept key are written into it, and when it holds more than ``max_objects``
    the worst are dropped (their slots refilled from the end), so each vector is copied at most
    twice and memory stays bounded whatever the file size.
    """
    keep = np.asarray(reader.valid(modality), dtype=bool).copy()
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    cap = max_objects + chunk_rows
    vectors = np.empty((min(cap, keep.shape[0]), reader.dims[modality]), dtype=np.float32)
    rows = np.empty(vectors.shape[0], dtype=np.int64)
    filled = 0
    for start, stop in row_chunks(keep.shape[0], chunk_rows):
        x = reader.read(modality, start, stop)
        keep[start:stop] &= finite_rows(x)
        new = np.flatnonzero(keep[start:stop])
        if filled == max_objects:  # full: only rows with a smaller key than the worst kept can enter
            new = new[keys[start + new] < keys[rows[:filled]].max()]
        rows[filled : filled + new.shape[0]] = start + new
        vectors[filled : filled + new.shape[0]] = x[new]
        filled += new.shape[0]
        if filled > max_objects:
            order = np.lexsort((rows[:filled], keys[rows[:filled]]))  # by key, ties by row as fit_sample
            holes = np.sort(order[max_objects:])
            holes = holes[holes < max_objects]  # evicted slots inside the kept range ...
            tail = np.setdiff1d(np.arange(max_objects, filled), order[max_objects:], assume_unique=True)
            rows[holes], vectors[holes] = rows[tail], vectors[tail]  # ... refilled by kept rows beyond it
            filled = max_objects
    order = np.argsort(rows[:filled], kind="stable")
    return keep, rows[:filled][order], vectors[:filled][order]


def sample_keys(n: int, seed: int) -> np.ndarray:
    """One uniform key per object of the file; the fit samples are the smallest keys (see module docstring)."""
    return np.random.default_rng(seed).random(n)


def fit_sample(keep: np.ndarray, keys: np.ndarray, max_objects: int) -> np.ndarray:
    """Increasing row positions of the fit sample: every usable row, or the ``max_objects`` with the smallest keys."""
    rows = np.flatnonzero(keep)
    if rows.shape[0] <= max_objects:
        return rows
    chosen = np.argsort(keys[rows], kind="stable")[:max_objects]
    return np.sort(rows[chosen])


def gather(reader: EmbeddingReader, modality: str, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """The vectors of ``rows`` (increasing positions) as one float32 array, read chunk by chunk."""
    out = np.empty((rows.shape[0], reader.dims[modality]), dtype=np.float32)
    filled = 0
    for start, stop in row_chunks(reader.n_objects, chunk_rows):
        lo, hi = np.searchsorted(rows, (start, stop))
        if hi > lo:
            out[filled : filled + hi - lo] = reader.read(modality, start, stop)[rows[lo:hi] - start]
            filled += hi - lo
    return out


def compact_rows(x: np.ndarray, todo: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``x[todo]`` written into ``out`` (``todo.sum()`` rows), one slice copy per run of True rows.

    Why: with a few percent of rows masked out (the fit sample among 10^6 objects) the runs
    are long, and copying them is as fast as one ``memcpy`` of the chunk -- 3.5x less CPU
    than ``np.compress(..., out=)`` and 1.7x less than boolean indexing (bench/score_profile.py).
    """
    edges = np.flatnonzero(np.diff(todo, prepend=False, append=False))
    filled = 0
    for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        out[filled : filled + b - a] = x[a:b]
        filled += b - a
    return out


def masked_chunks(reader: EmbeddingReader, modalities: tuple[str, ...], rows_mask: np.ndarray, chunk_rows: int
                  ) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """``(start, stop, vectors)`` of each ``chunk_rows`` chunk holding a row of ``rows_mask``, in order:
    per modality the float32 vectors of the chunk's masked rows.

    Why a thread: a background thread reads (and compacts) the next chunk while the caller
    works on this one. h5py releases the GIL inside ``H5Dread`` and numpy inside the copy, so
    on two cores the read of a 10^6-row file hides behind the scoring instead of adding to it.
    The chunks are read straight into two reused buffer sets (no allocation, no page faults
    per chunk, :meth:`EmbeddingReader.read_into`), so **the arrays yielded are valid only until
    the next chunk is requested**: a caller that keeps them must copy. Chunks without a masked
    row are not read. An error in the thread (a damaged file: :class:`DataError` naming it) is
    raised here, at the chunk it happened in; stopping early (an exception in the caller,
    ``break``) stops and joins the thread before this generator returns.
    """
    n = rows_mask.shape[0]
    spans = [(start, stop) for start, stop in row_chunks(n, chunk_rows) if rows_mask[start:stop].any()]
    if not spans:
        return
    rows = min(chunk_rows, n)
    raw = {m: np.empty((rows, reader.dims[m]), dtype=np.float32) for m in modalities}
    slots = [{m: np.empty((rows, reader.dims[m]), dtype=np.float32) for m in modalities} for _ in range(2)]
    free: queue.Queue[int | None] = queue.Queue()
    ready: queue.Queue[tuple[int, int, int, int] | BaseException | None] = queue.Queue()
    for i in range(len(slots)):
        free.put(i)
    stop_event = threading.Event()

    def fill() -> None:
        try:
            for start, stop in spans:
                slot = free.get()
                if slot is None or stop_event.is_set():
                    return
                todo = rows_mask[start:stop]
                k = int(np.count_nonzero(todo))
                for m in modalities:
                    if k == stop - start:
                        reader.read_into(m, start, slots[slot][m][:k])
                    else:
                        compact_rows(reader.read_into(m, start, raw[m][: stop - start]), todo, slots[slot][m][:k])
                ready.put((start, stop, slot, k))
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)

    thread = threading.Thread(target=fill, name=f"fmb-read-{reader.path.name}", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            start, stop, slot, k = item
            yield start, stop, [slots[slot][m][:k] for m in modalities]
            free.put(slot)
    finally:
        stop_event.set()
        free.put(None)  # wakes a thread waiting for a buffer
        thread.join()


@dataclass(frozen=True)
class Scorers:
    """Scorers of a chunk of rows by name, each returning one score per row.

    ``prepare`` maps the chunk's vectors (one array per modality) once to the one array every
    scorer is given: a modality's preprocessing, which its flow and baselines share, is then
    computed once per chunk. Without it each scorer gets the vectors themselves.
    """

    by_name: dict[str, Callable[..., np.ndarray]]
    prepare: Callable[..., np.ndarray] | None = None

    def __call__(self, *xs: np.ndarray) -> dict[str, np.ndarray]:
        args = xs if self.prepare is None else (self.prepare(*xs),)
        return {name: score(*args) for name, score in self.by_name.items()}


def streamed_scores(reader: EmbeddingReader, modalities: tuple[str, ...], rows_mask: np.ndarray,
                    scorers: Scorers, chunk_rows: int) -> dict[str, np.ndarray]:
    """Scores of the rows in ``rows_mask`` (in row order), computed chunk by chunk from the file.

    ``scorers`` (:class:`Scorers`) are given the chunk's vectors (one array per modality in
    ``modalities``, the masked rows only, read ahead by :func:`masked_chunks`). The loop runs
    under :func:`fmb_engine.heap.retained_heap`: the scorers' large temporaries reuse memory
    instead of page-faulting it in anew for every batch.
    """
    rows = np.flatnonzero(rows_mask)
    out = {name: np.empty(rows.shape[0], dtype=np.float64) for name in scorers.by_name}
    with retained_heap():
        for start, stop, xs in masked_chunks(reader, modalities, rows_mask, chunk_rows):
            pos = np.searchsorted(rows, start + np.flatnonzero(rows_mask[start:stop]))
            for name, scores in scorers(*xs).items():
                out[name][pos] = scores
    return out
