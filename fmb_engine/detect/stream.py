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

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fmb_engine.detect.preprocess import finite_rows
from fmb_engine.embed.store import EmbeddingReader


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

    ``scorers`` are given the chunk's vectors (one array per modality in ``modalities``, the
    masked rows only). Chunks without a masked row are not read.
    """
    rows = np.flatnonzero(rows_mask)
    out = {name: np.empty(rows.shape[0], dtype=np.float64) for name in scorers.by_name}
    for start, stop in row_chunks(rows_mask.shape[0], chunk_rows):
        todo = rows_mask[start:stop]
        if not todo.any():
            continue
        xs = [reader.read(m, start, stop)[todo] for m in modalities]
        pos = np.searchsorted(rows, start + np.flatnonzero(todo))
        for name, scores in scorers(*xs).items():
            out[name][pos] = scores
    return out
