import h5py
import numpy as np
import pytest

from fmb_engine.errors import DataError
from fmb_engine.survey.bands import BANDS, wavelength_grid
from fmb_engine.survey.store import SurveyReader, SurveyWriter, partial_path

SIZE = 8


def chunk(start: int, n: int, rng: np.random.Generator):
    cols = {
        "object_id": np.array([f"obj-{i}" for i in range(start, start + n)]),
        "split": np.array(["train" if i % 3 else "test" for i in range(start, start + n)]),
        "redshift": rng.uniform(0, 1, n),
        "anomaly_class": np.array(["" if i % 5 else "merger" for i in range(start, start + n)]),
    }
    images = rng.standard_normal((n, len(BANDS), SIZE, SIZE)).astype(np.float32)
    flux = rng.standard_normal((n, wavelength_grid().size)).astype(np.float32)
    ivar = np.ones_like(flux)
    mask = rng.uniform(size=flux.shape) < 0.01
    return cols, images, flux, ivar, mask


def write_survey(path, n=50, step=16, fail_after=None, seed=0):
    rng = np.random.default_rng(seed)
    w = SurveyWriter(path, image_size=SIZE, wavelength=wavelength_grid(), rgb=False, generator="test",
                     params={"n": n}, expected_objects=n)
    for k, start in enumerate(range(0, n, step)):
        if start < w.resumed_from:
            chunk(start, min(step, n - start), rng)  # keep the rng in step
            continue
        if fail_after is not None and k == fail_after:
            w.abort()
            raise KeyboardInterrupt
        w.append(*chunk(start, min(step, n - start), rng))
    return w.close()


def test_round_trip_random_access_by_row_and_id(tmp_path):
    path = write_survey(tmp_path / "s.h5")
    with SurveyReader(path) as r:
        assert r.n_objects == 50 and r.bands == BANDS and r.splits() == {"test": 17, "train": 33}
        obj = r.get("obj-37")
        assert obj.index == 37 and obj.meta["object_id"] == "obj-37"
        assert np.array_equal(obj.images, r.get(37).images)
        assert obj.flux.shape == (7781,) and obj.mask.dtype == bool
        batch = r.read_rows([40, 3, 17])
        assert list(batch.object_ids) == ["obj-40", "obj-3", "obj-17"]
        assert np.array_equal(batch.images[1], r.get(3).images)
        with pytest.raises(DataError, match="no object with object_id 'nope'"):
            r.get("nope")


def test_streaming_batches_cover_a_split_once_in_bounded_batches(tmp_path):
    path = write_survey(tmp_path / "s.h5")
    with SurveyReader(path) as r:
        batches = list(r.iter_batches(batch_size=7, split="train"))
        assert max(len(b) for b in batches) <= 7
        rows = np.concatenate([b.indices for b in batches])
        assert np.array_equal(rows, r.rows_of_split("train"))
        ranged = np.concatenate([b.indices for b in r.iter_batches(batch_size=5, start=10, stop=22)])
        assert np.array_equal(ranged, np.arange(10, 22))


def test_half_written_file_is_detected_and_resume_gives_the_same_file(tmp_path):
    target = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        write_survey(target, fail_after=2)
    assert not target.exists() and partial_path(target).exists()
    with pytest.raises(DataError, match="interrupted write left s.h5.partial"):
        SurveyReader(target)
    with pytest.raises(DataError, match="incomplete survey file: writing was interrupted after 32 of 50"):
        SurveyReader(partial_path(target))
    resumed = write_survey(target)
    fresh = write_survey(tmp_path / "fresh.h5")
    with SurveyReader(resumed) as a, SurveyReader(fresh) as b:
        assert a.digest == b.digest
        assert np.array_equal(a.read_rows(range(50)).images, b.read_rows(range(50)).images)


def test_duplicate_ids_and_foreign_files_are_clear_errors(tmp_path):
    w = SurveyWriter(tmp_path / "d.h5", image_size=SIZE, wavelength=wavelength_grid(), rgb=False, generator="t", params={})
    rng = np.random.default_rng(0)
    w.append(*chunk(0, 3, rng))
    w.append(*chunk(0, 3, rng))
    with pytest.raises(DataError, match="object_id 'obj-0' occurs more than once"):
        w.close()
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(DataError, match="not an FMB survey file"):
        SurveyReader(tmp_path / "other.h5")


def test_shape_errors_name_the_dataset(tmp_path):
    w = SurveyWriter(tmp_path / "e.h5", image_size=SIZE, wavelength=wavelength_grid(), rgb=False, generator="t", params={})
    cols, images, flux, ivar, mask = chunk(0, 2, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"spectra/flux must be \(2, 7781\)"):
        w.append(cols, images, flux[:, :10], ivar, mask)
    w.abort()
