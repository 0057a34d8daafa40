"""Some modalities of an embedding file side by side, as a matrix read on demand.

Discovery's features need the chosen modalities concatenated (N, D_1 + D_2 + ...). At 10^6 objects x 3,072
values that matrix is 12 GB, and building it by loading each modality whole held two copies. :class:`EmbeddingRows`
answers the two reads :class:`~fmb_engine.discover.features.Features` makes — a sorted sample of rows and a
contiguous range of rows — straight from the file, so memory is one block, whatever N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fmb_engine.embed.store import EmbeddingReader


class EmbeddingRows:
    """The rows ``keep`` (file positions, increasing; default every row) of ``modalities`` of an open file.

    Indexing works as on an (len(keep), D) float32 array, for the two forms Features uses: a slice
    ``[start:stop]`` and an increasing integer array. A row with a non-finite value in any modality comes
    back as zeros and its file position is added to :attr:`not_finite`, so one pass finds them all;
    the caller then drops them (see :func:`fmb_engine.discover.run.embedding_features`).
    """

    def __init__(self, reader: EmbeddingReader, modalities: Sequence[str], keep: np.ndarray | None = None,
                 window: int = 65_536):
        self.reader = reader
        self.modalities = list(modalities)
        self.keep = np.arange(reader.n_objects, dtype=np.int64) if keep is None else np.asarray(keep, np.int64)
        self.shape = (int(self.keep.size), sum(reader.dims[m] for m in self.modalities))
        self.window = window  # file rows read at a time when ``keep`` has gaps: memory stays bounded
        self.not_finite: list[np.ndarray] = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("EmbeddingRows reads contiguous row ranges only")
            at = self.keep[start:stop]
            block = self._range(at)
        else:
            at = self.keep[np.asarray(index, dtype=np.int64)]
            block = self._join(lambda m: self.reader.take(m, at))
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            self.not_finite.append(at[bad])
            block[bad] = 0.0
        return block

    def _join(self, read: Callable[[str], np.ndarray]) -> np.ndarray:
        """The modalities side by side, each copied in as it is read: one modality's rows in flight."""
        block, column = None, 0
        for modality in self.modalities:
            part = read(modality)
            if block is None:
                block = np.empty((part.shape[0], self.shape[1]), dtype=np.float32)
            block[:, column:column + part.shape[1]] = part
            column += part.shape[1]
        return block

    def _range(self, at: np.ndarray) -> np.ndarray:
        """The file rows ``at`` (increasing, from one slice of ``keep``) read as contiguous ranges."""
        if at.size == 0:
            return np.zeros((0, self.shape[1]), np.float32)
        lo, hi = int(at[0]), int(at[-1]) + 1
        if hi - lo == at.size:  # no gap: one read per modality
            return self._join(lambda m: self.reader.read(m, lo, hi))
        pieces = []
        for first in range(lo, hi, self.window):
            last = min(first + self.window, hi)
            inside = at[np.searchsorted(at, first):np.searchsorted(at, last)] - first
            if inside.size:
                pieces.append(self._join(lambda m: self.reader.read(m, first, last)[inside]))
        return np.concatenate(pieces, axis=0)
