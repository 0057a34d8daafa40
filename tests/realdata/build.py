"""Packs real public spectra and images, shipped inside PyPI wheels, into the dataset's layout.

Nothing here is simulated. The inputs are files that installed packages carry:

* spectra: the four DESI Early Data Release extracts (first five fibres of a tile
  and of a healpix coadd, both as coadd and per-exposure files) in specutils'
  test data;
* images: the Hubble Deep Field colour JPEG in scikit-image's ``skimage.data``.

The builder only selects and repacks: it splices each DESI spectrum's B/R/Z arms
(dropping the overlap pixels of the bluer arm, never interpolating), turns DESI's
ivar into the dataset's ``error`` (inf where ivar is 0, as DESI marks unusable
pixels), and cuts square stamps around the brightest HDF sources. The importer
does all resampling. Sources, licences and the band mapping: docs/realdata.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

#: (distribution, path inside it) of every file the fixture reads.
DESI_FILES = {
    "tile169_coadd": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/coadd-5-169-thru20210419.fits"),
    "tile169_spectra": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/spectra-5-169-thru20210419.fits"),
    "hpx26065_coadd": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/coadd-sv3-dark-26065.fits"),
    "hpx26065_spectra": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/spectra-sv3-dark-26065.fits"),
}
HDF_IMAGE = ("scikit-image", "skimage/data/hubble_deep_field.jpg")

STAMP = 64  #: stamp side in HDF pixels (the importer resamples to its image_size)
IMAGE_ONLY = 20  #: extra HDF stamps without a spectrum (the dataset's missing-spectrum case)
TEST_EVERY = 4  #: every 4th object goes to the test split

SPECTRUM = pa.struct([("flux", pa.list_(pa.float32())), ("wavelength", pa.list_(pa.float32())), ("error", pa.list_(pa.float32()))])
IMAGE = pa.list_(pa.list_(pa.float32()))
SCHEMA = pa.schema([
    ("object_id", pa.string()),
    ("targetid", pa.int64()),
    ("redshift", pa.float32()),
    ("RGB_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("VIS_image", IMAGE),
    ("NISP_Y_image", IMAGE),
    ("NISP_J_image", IMAGE),
    ("NISP_H_image", IMAGE),
    ("spectrum", SPECTRUM),
])


class MissingSource(RuntimeError):
    """A package that carries fixture data is not installed (it is in the ``dev`` extra)."""


def source_file(distribution: str, inner: str) -> Path:
    """Path of a data file inside an installed distribution, without importing the package."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise MissingSource(f"{distribution} is not installed; it ships {inner} (pip install -e '.[dev]')") from None
    path = Path(dist.locate_file(inner))
    if not path.is_file():
        raise MissingSource(f"{distribution} {dist.version} does not contain {inner}")
    return path


@dataclass(frozen=True)
class Spectrum:
    object_id: str
    targetid: int
    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray


def desi_spectra() -> list[Spectrum]:
    """Every fibre of the four DESI files, arms spliced in wavelength order."""
    from astropy.io import fits

    out = []
    for key, (dist, inner) in DESI_FILES.items():
        with fits.open(source_file(dist, inner)) as hdus:
            targetids = np.asarray(hdus["FIBERMAP"].data["TARGETID"], dtype=np.int64)
            arms = [(hdus[f"{a}_WAVELENGTH"].data, hdus[f"{a}_FLUX"].data, hdus[f"{a}_IVAR"].data) for a in "BRZ"]
            # keep each arm up to where the next one starts: a selection, not a resampling
            keep = [w < arms[k + 1][0][0] if k + 1 < len(arms) else np.ones(w.size, bool) for k, (w, _, _) in enumerate(arms)]
            wave = np.concatenate([w[m] for (w, _, _), m in zip(arms, keep)])
            for row, tid in enumerate(targetids):
                flux = np.concatenate([f[row][m] for (_, f, _), m in zip(arms, keep)])
                ivar = np.concatenate([iv[row][m] for (_, _, iv), m in zip(arms, keep)])
                with np.errstate(divide="ignore"):
                    error = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
                out.append(Spectrum(f"{key}_{row}", int(tid), wave.astype(np.float32), flux.astype(np.float32),
                                    error.astype(np.float32)))
    return out


def hdf_stamps(n: int, size: int = STAMP) -> list[np.ndarray]:
    """``n`` RGB stamps centred on the brightest separated sources of the Hubble Deep Field."""
    from scipy import ndimage

    rgb = np.asarray(Image.open(source_file(*HDF_IMAGE)).convert("RGB"))
    light = ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), 2.0)
    half = size // 2
    peaks = (light == ndimage.maximum_filter(light, size=half)) & (light > np.percentile(light, 90))
    peaks[:half, :] = peaks[-half:, :] = peaks[:, :half] = peaks[:, -half:] = False
    ys, xs = np.nonzero(peaks)
    stamps: list[np.ndarray] = []
    taken: list[tuple[int, int]] = []
    for k in np.argsort(-light[ys, xs], kind="stable"):
        y, x = int(ys[k]), int(xs[k])
        if any(abs(y - ty) < half and abs(x - tx) < half for ty, tx in taken):
            continue
        taken.append((y, x))
        stamps.append(rgb[y - half:y + half, x - half:x + half])
        if len(stamps) == n:
            return stamps
    raise MissingSource(f"the HDF image has only {len(stamps)} separated sources; {n} needed")


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _row(object_id: str, targetid: int | None, stamp: np.ndarray, spectrum: Spectrum | None) -> dict:
    channels = stamp.astype(np.float32)
    return {
        "object_id": object_id,
        "targetid": targetid,
        "redshift": None,  # these DESI extracts carry no redshift table
        "RGB_image": {"bytes": _png(stamp), "path": None},
        # VIS (broad optical) <- the stamp's mean light; NISP Y/J/H <- its B/G/R channels, bluest to reddest
        "VIS_image": channels.mean(axis=2).tolist(),
        "NISP_Y_image": channels[..., 2].tolist(),
        "NISP_J_image": channels[..., 1].tolist(),
        "NISP_H_image": channels[..., 0].tolist(),
        "spectrum": None if spectrum is None else {
            "flux": spectrum.flux.tolist(), "wavelength": spectrum.wavelength.tolist(), "error": spectrum.error.tolist()},
    }


def build_rows() -> list[dict]:
    """All fixture rows: one per DESI fibre, then image-only objects, each with its own HDF stamp."""
    spectra = desi_spectra()
    stamps = hdf_stamps(len(spectra) + IMAGE_ONLY)
    rows = [_row(s.object_id, s.targetid, stamps[k], s) for k, s in enumerate(spectra)]
    rows += [_row(f"hdf_{k}", None, stamps[len(spectra) + k], None) for k in range(IMAGE_ONLY)]
    return rows


def write_dataset(folder: Path) -> dict[str, list[str]]:
    """Write ``train.parquet`` and ``test.parquet`` into ``folder``; returns the object ids per split."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = build_rows()
    splits = {"train": [r for k, r in enumerate(rows) if k % TEST_EVERY], "test": rows[::TEST_EVERY]}
    for split, part in splits.items():
        pq.write_table(pa.Table.from_pylist(part, schema=SCHEMA), folder / f"{split}.parquet", row_group_size=8)
    return {split: [r["object_id"] for r in part] for split, part in splits.items()}


def usable_spectra() -> set[str]:
    """Ids of the DESI fibres with at least one pixel of positive ivar (sky and unassigned fibres have none)."""
    return {s.object_id for s in desi_spectra() if np.isfinite(s.error).any()}
