"""The survey store's content digest (scheme 2) and the checks that recompute it from the file.

Why a per-chunk table: a kill in the middle of an HDF5 write can damage rows that
were committed earlier (HDF5 is not crash-safe; a chunk shared by two appends is
rewritten), so neither the committed count nor the stored chain state proves the
rows are intact. Every append therefore records, in ``/digest``, where it ends, a
BLAKE2b hash of each per-row dataset's new rows (as stored), the chain state after
it and the writer's resume state. A resuming writer and ``fmb-engine data verify``
recompute the hashes from the data in the file; the first chunk that differs (or
cannot be read) is named, and a writer keeps the chunks before it.

Scheme 2: ``c_0 = H("fmb-survey digest 2" ‖ dataset names ‖ wavelength grid)``,
``c_k = H(c_{k-1} ‖ h_k,1 ‖ … ‖ h_k,D)`` with ``h_k,d = H(rows of chunk k in dataset d)``
over every per-row dataset (all /objects columns, has_bands, band images, RGB, flux,
ivar, mask) in name order. The file's ``digest`` attribute is the last ``c_k``.
Files without ``digest_version`` use scheme 1 (ids, images and spectra only, chunk
bounds not recorded): their digest keeps that meaning and cannot be recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

DIGEST_VERSION = 2
GROUP = "digest"
HASH_SIZE = 16
_TAG = b"fmb-survey digest 2"


def row_dataset_names(f: h5py.File) -> list[str]:
    """Every per-row dataset of a store (``group/name``), in the order the digest hashes them."""
    names = [f"{group}/{name}" for group in ("objects", "images", "spectra") for name in f[group]]
    return sorted(n for n in names if n != "spectra/wavelength")


def hash_rows(rows: np.ndarray) -> bytes:
    """Hash of rows exactly as stored (dtype and byte layout of the HDF5 dataset)."""
    return hashlib.blake2b(memoryview(np.ascontiguousarray(rows)).cast("B"), digest_size=HASH_SIZE).digest()


def initial_chain(names: list[str], wavelength: np.ndarray) -> bytes:
    h = hashlib.blake2b(_TAG, digest_size=HASH_SIZE)
    h.update("\n".join(names).encode())
    h.update(memoryview(np.ascontiguousarray(wavelength, dtype=np.float64)).cast("B"))
    return h.digest()


def next_chain(chain: bytes, hashes: np.ndarray) -> bytes:
    return hashlib.blake2b(chain + hashes.tobytes(), digest_size=HASH_SIZE).digest()


def create_table(f: h5py.File, names: list[str]) -> None:
    """The empty ``/digest`` table of a new store."""
    g = f.create_group(GROUP)
    g.attrs["datasets"] = names
    g.create_dataset("stop", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
    g.create_dataset("hashes", shape=(0, len(names), HASH_SIZE), maxshape=(None, len(names), HASH_SIZE),
                     dtype=np.uint8, chunks=(256, len(names), HASH_SIZE))
    g.create_dataset("chain", shape=(0, HASH_SIZE), maxshape=(None, HASH_SIZE), dtype=np.uint8, chunks=(4096, HASH_SIZE))
    g.create_dataset("resume_state", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))


def record_chunk(f: h5py.File, stop: int, hashes: np.ndarray, chain: bytes, resume_state: str) -> None:
    g = f[GROUP]
    k = g["stop"].shape[0]
    for name in ("stop", "hashes", "chain", "resume_state"):
        g[name].resize(k + 1, axis=0)
    g["stop"][k] = stop
    g["hashes"][k] = hashes
    g["chain"][k] = np.frombuffer(chain, dtype=np.uint8)
    g["resume_state"][k] = resume_state


def update_resume_state(f: h5py.File, resume_state: str) -> None:
    """A checkpoint without new rows: the last chunk's resume state moves on."""
    ds = f[GROUP]["resume_state"]
    if ds.shape[0]:
        ds[ds.shape[0] - 1] = resume_state


def truncate_table(f: h5py.File, chunks: int) -> None:
    g = f[GROUP]
    for name in ("stop", "hashes", "chain", "resume_state"):
        g[name].resize(chunks, axis=0)


@dataclass
class ChunkCheck:
    """What recomputing the digest found: the verified prefix and the first problem, if any."""

    chunks: int  # chunks verified from the start
    rows: int  # rows those chunks cover
    chain: bytes  # chain state after them
    resume_state: dict[str, Any] | None  # the writer's resume state at that point
    total_chunks: int
    problem: str | None = None  # e.g. "chunk 3 (rows 96-127): images/rgb differs"
    bad_datasets: list[str] = field(default_factory=list)


def _json(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, TypeError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def check_chunks(f: h5py.File, progress: Callable[[int], None] | None = None) -> ChunkCheck:
    """Recompute every recorded chunk's hashes from the data; stop at the first chunk that differs.

    Raises ``KeyError``/``OSError``/``ValueError`` when the table itself is unreadable.
    """
    g = f[GROUP]
    names = [str(n) for n in g.attrs["datasets"]]
    present = row_dataset_names(f)
    if names != present:
        raise ValueError(f"/{GROUP} lists datasets {names}, the file has {present}")
    stops = g["stop"][:]
    stored_hashes = g["hashes"][:]
    stored_chain = g["chain"][:]
    states = g["resume_state"]
    k_total = int(min(len(stops), len(stored_hashes), len(stored_chain), states.shape[0]))
    chain = initial_chain(names, f["spectra/wavelength"][:])
    check = ChunkCheck(0, 0, chain, _json(f.attrs.get("resume_state", "{}")) if k_total == 0 else None, k_total)
    datasets = [f[n] for n in names]
    start = 0
    for k in range(k_total):
        stop = int(stops[k])
        where = f"chunk {k} (rows {start}-{stop - 1})"
        bad: list[str] = []
        hashes = np.zeros((len(names), HASH_SIZE), dtype=np.uint8)
        if stop <= start:
            check.problem = f"{where}: recorded end {stop} is not after its start"
            return check
        for i, ds in enumerate(datasets):
            if ds.shape[0] < stop:
                bad.append(f"{names[i]} (has {ds.shape[0]} rows)")
                continue
            try:
                hashes[i] = np.frombuffer(hash_rows(ds[start:stop]), dtype=np.uint8)
            except (OSError, ValueError) as exc:
                bad.append(f"{names[i]} (unreadable: {' '.join(str(exc).split())[:120]})")
                continue
            if not np.array_equal(hashes[i], stored_hashes[k, i]):
                bad.append(names[i])
        chain = next_chain(chain, hashes)
        if not bad and chain != stored_chain[k].tobytes():
            bad.append("the recorded chain state")
        if bad:
            check.problem = f"{where}: {', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not match the recorded digest"
            check.bad_datasets = bad
            return check
        check.chunks, check.rows, check.chain = k + 1, stop, chain
        check.resume_state = _json(states[k])
        start = stop
        if progress is not None:
            progress(stop)
    return check
