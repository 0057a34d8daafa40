"""Survey digest scheme 2: every per-row dataset is covered, resume re-verifies, old files still read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fmb_engine.errors import DataError
from fmb_engine.survey import digest
from fmb_engine.survey.bands import wavelength_grid
from fmb_engine.survey.store import SurveyReader, SurveyWriter, partial_path
from tests.engine.survey.test_store import SIZE, chunk

N, STEP = 40, 16


def write(path, stop_after: int | None = None, seed: int = 0):
    """A 40-object store with RGB in chunks of 16; ``stop_after`` chunks leaves a partial file."""
    rng = np.random.default_rng(seed)
    w = SurveyWriter(path, image_size=SIZE, wavelength=wavelength_grid(), rgb=True, generator="test",
                     params={"n": N}, expected_objects=N)
    for k, start in enumerate(range(0, N, STEP)):
        cols, images, flux, ivar, mask = chunk(start, min(STEP, N - start), rng)
        rgb = rng.integers(0, 256, (len(images), SIZE, SIZE, 3), dtype=np.uint8)
        if start < w.resumed_from:
            continue  # the random stream stays in step with an uninterrupted run
        if k == stop_after:
            w.abort()
            return w
        w.append(cols, images, flux, ivar, mask, rgb=rgb)
    w.close()
    return w


def changed(value: np.ndarray) -> np.ndarray:
    """A different value of the same dtype (every byte of a row altered)."""
    value = np.atleast_1d(np.asarray(value))
    if value.dtype.kind == "S":
        return np.asarray(b"x" + value.tobytes()[:-1]).astype(value.dtype)
    if value.dtype.kind == "b":
        return ~value
    return (value.view(np.uint8) ^ 0x01).view(value.dtype)


def test_every_per_row_dataset_and_the_wavelength_grid_are_in_the_digest(tmp_path):
    path = write(tmp_path / "s.h5").path
    with SurveyReader(path) as r:
        assert r.digest_version == 2
        assert r.verify()["recomputed"]
        names = digest.row_dataset_names(r._file)
    assert {"images/rgb", "objects/has_bands", "objects/split", "objects/logM", "spectra/mask"} <= set(names)
    for name in [*names, "spectra/wavelength"]:
        copy = tmp_path / "copy.h5"
        copy.write_bytes(path.read_bytes())
        with h5py.File(copy, "r+") as f:
            row = 0 if name == "spectra/wavelength" else 20  # row 20 lies in chunk 1 (rows 16-31)
            ds = f[name]
            ds[row : row + 1] = changed(ds[row]).reshape(ds[row : row + 1].shape)
        with SurveyReader(copy) as r, pytest.raises(DataError) as info:
            r.verify()
        where = "chunk 0" if name == "spectra/wavelength" else f"chunk 1 (rows 16-31): {name} does not match"
        assert where in str(info.value) and str(copy) in str(info.value), name


def test_resume_drops_a_damaged_chunk_and_gives_the_uninterrupted_file(tmp_path):
    target = tmp_path / "s.h5"
    write(target, stop_after=2)
    with h5py.File(partial_path(target), "r+") as f:  # a torn write: rgb of chunk 1 damaged, as seen after kill -9
        f["images/rgb"][20] = changed(f["images/rgb"][20]).reshape(SIZE, SIZE, 3)
    resumed = write(target)
    assert resumed.resumed_from == STEP
    assert len(resumed.notes) == 1
    assert "chunk 1 (rows 16-31): images/rgb does not match" in resumed.notes[0]
    assert "resuming after the last good chunk (16 objects in 1 chunks)" in resumed.notes[0]
    fresh = write(tmp_path / "fresh.h5")
    with SurveyReader(target) as a, SurveyReader(fresh.path) as b:
        assert a.digest == b.digest
        a.verify()
        assert np.array_equal(a.read_rows(range(N)).rgb, b.read_rows(range(N)).rgb)


def test_an_intact_partial_resumes_without_notes_and_an_unreadable_one_starts_over(tmp_path):
    target = tmp_path / "s.h5"
    write(target, stop_after=2)
    w = write(target)
    assert (w.resumed_from, w.notes) == (32, [])
    write(tmp_path / "t.h5", stop_after=1)
    partial_path(tmp_path / "t.h5").write_bytes(b"not hdf5 at all")
    w = write(tmp_path / "t.h5")
    assert w.resumed_from == 0 and "t.h5.partial cannot be opened" in w.notes[0] and "starting over" in w.notes[0]


def _as_scheme_1(path):
    """What an FMB from before digest scheme 2 wrote: no digest_version, no /digest table."""
    with h5py.File(path, "r+") as f:
        del f.attrs["digest_version"]
        del f[digest.GROUP]


def test_files_written_before_scheme_2_still_read_and_their_partials_start_over(tmp_path):
    path = write(tmp_path / "old.h5").path
    _as_scheme_1(path)
    with SurveyReader(path) as r:
        assert r.digest_version == 1 and r.n_objects == N
        report = r.verify()  # every row read through; the old digest cannot be recomputed
        assert report["recomputed"] is False and report["digest"] == r.digest
    target = tmp_path / "p.h5"
    write(target, stop_after=2)
    _as_scheme_1(partial_path(target))
    w = write(target)
    assert w.resumed_from == 0 and "older FMB" in w.notes[0]
